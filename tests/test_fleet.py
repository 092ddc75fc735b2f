"""`npga fleet` on tiny synthetic participants: the report holds each run's own numbers, a broken participant fails
alone, a rerun starts nothing that is done, a preempted local job is requeued and ends where an uninterrupted one
ends, and the Slurm options become the job array's sbatch options (Slurm itself is not on these machines)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import pickle
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from npga import cli
from npga.avatar.file import load_avatar
from npga.commands.fleet import ParticipantJob
from npga.data.cache import FrameCache
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.fleet import executors
from npga.fleet.plan import FleetLayout
from npga.fleet.report import to_markdown
from npga.io.lock import FolderInUse, folder_lock
from npga.io.plots import read_log
from npga.runs import RunLayout

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture
def preset(tmp_path: Path) -> Path:
    """The tiny preset on the CPU (bit-for-bit comparable runs), logging every 5 steps, a short distillation."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg |= {"device": "cpu", "log_every": 5, "val_every": 0}
    cfg["distill"]["steps"] = 50
    path = tmp_path / "tiny_cpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _participant(tiny_capture: Path, tiny_cache: FrameCache | None, folder: Path) -> Path:
    """A copy of the tiny capture, with a copy of its frame cache where the prepare stage looks for it (copies
    keep the sources' times: the cache stays valid, and that stage has nothing to decode)."""
    shutil.copytree(tiny_capture, folder, ignore=shutil.ignore_patterns("cache"))
    if tiny_cache is not None:
        shutil.copytree(tiny_cache.root, folder / "cache" / f"{tiny_cache.width}x{tiny_cache.height}")
    return folder


def _status(fleet: Path, pid: str) -> dict:
    return json.loads(FleetLayout(fleet).status(pid).read_text())


def _report(fleet: Path) -> dict[str, dict[str, str]]:
    """`npga fleet report`'s CSV rows by participant, in the CSV's order."""
    cli.main(["fleet", "report", str(fleet)])
    with open(FleetLayout(fleet).report_csv) as f:
        return {row["participant"]: row for row in csv.DictReader(f)}


def _assert_scores_are_the_run_s(row: dict[str, str], run: RunLayout) -> None:
    """The row's scores are those `npga eval` wrote into the participant's run folder, split by split."""
    metrics = json.loads((run.eval / "metrics.json").read_text())
    for split in ("heldout_cameras", "heldout_sequences"):
        for m in ("psnr", "ssim", "lpips"):
            assert row[f"{split}_{m}"] == ("" if metrics[split][m] is None else str(metrics[split][m])), (split, m)


@pytest.mark.slow
def test_debug_fleet_reports_each_run_and_a_broken_participant_fails_alone(
    tiny_capture, tiny_cache, preset, tmp_path, capsys
):
    _participant(tiny_capture, tiny_cache, tmp_path / "data" / "good")
    bad = _participant(tiny_capture, None, tmp_path / "data" / "bad")
    tracking = ParticipantLayout(bad).tracking("FREE")
    codes = Tracking.load(tracking)
    wrong = np.concatenate([codes.expression, codes.expression[:, :1]], axis=1)  # one dimension too many
    dataclasses.replace(codes, expression=wrong).save(tracking)  # prepare takes it; training refuses it
    table = tmp_path / "participants.csv"
    table.write_text("participant,capture\ngood,data/good\nbad,data/bad\n")  # relative to the CSV's folder
    fleet = tmp_path / "fleet"
    plan = ["fleet", "plan", "--out", str(fleet), "--participants", str(table), "--preset", str(preset)]
    cli.main([*plan, "--steps", "8", "--eval-every", "2"])
    cli.main([*plan, "--steps", "8", "--eval-every", "2"])  # planning again changes nothing
    with pytest.raises(SystemExit, match="good is planned with another training config"):
        cli.main([*plan, "--steps", "9", "--eval-every", "2"])
    with pytest.raises(SystemExit, match="eval_every=2"):
        cli.main([*plan, "--steps", "8"])

    with pytest.raises(SystemExit) as exit_:
        cli.main(["fleet", "run", str(fleet), "--executor", "debug"])
    message = str(exit_.value)
    assert "1 of 2 participants did not finish: bad failed (train: " in message

    good_run, layout = RunLayout(fleet / "participants" / "good" / "run"), FleetLayout(fleet)
    metrics = json.loads((good_run.eval / "metrics.json").read_text())
    capsys.readouterr()
    rows = _report(fleet)
    markdown = capsys.readouterr().out
    assert list(rows) == ["good", "bad"]
    row = rows["good"]
    assert row["state"] == "done" and row["error"] == ""
    _assert_scores_are_the_run_s(row, good_run)
    avatar = load_avatar(good_run.avatar)
    assert int(row["steps"]) == avatar.step == 8 and int(row["gaussians"]) == len(avatar.params["means"])
    assert 0 < float(row["hours"]) < 1
    assert row["submission"] == "skipped: good is not a NeRSemble benchmark participant"

    error = f"train: {bad}: sequence FREE has {wrong.shape[1]}-d expression codes, but the head model has"
    assert rows["bad"]["state"] == "failed" and rows["bad"]["stage"] == "train"
    assert rows["bad"]["error"].startswith(error) and "\n" not in rows["bad"]["error"]
    assert rows["bad"]["steps"] == "" and not RunLayout(layout.run("bad")).list_checkpoints()
    assert all(rows["bad"][c] == "" for c in rows["bad"] if c.endswith(("_psnr", "_ssim", "_lpips")))
    assert f"- bad: {error}" in markdown and layout.report_md.read_text() in markdown
    mean_row = next(line for line in markdown.splitlines() if line.startswith("| mean ± sd"))
    assert f"{metrics['heldout_cameras']['psnr']:.2f}" in mean_row  # one participant scored: its own numbers

    # A second run starts no stage that is done: none of the participant that is done, and of the failed one only
    # the stage that failed.
    before = layout.status("good").read_text(), [p.stat().st_mtime_ns for p in good_run.list_checkpoints()]
    with pytest.raises(SystemExit, match="bad failed"):
        cli.main(["fleet", "run", str(fleet), "--executor", "debug"])
    assert (layout.status("good").read_text(), [p.stat().st_mtime_ns for p in good_run.list_checkpoints()]) == before
    stages = _status(fleet, "bad")["stages"]
    assert (stages["prepare"]["runs"], stages["train"]["runs"], set(stages)) == (1, 2, {"prepare", "train"})


@pytest.mark.slow
def test_a_preempted_local_job_is_requeued_and_ends_where_an_uninterrupted_one_ends(
    tiny_capture, tiny_cache, preset, tmp_path, capsys
):
    """Two identical participants run side by side as local jobs; one gets submitit's preemption signal (what
    Slurm sends before a time limit or a preemption) in the middle of training."""
    captures = [_participant(tiny_capture, tiny_cache, tmp_path / "data" / p) for p in ("whole", "preempted")]
    fleet = tmp_path / "fleet"
    plan = ["fleet", "plan", "--out", str(fleet), "--captures", *map(str, captures), "--preset", str(preset)]
    cli.main([*plan, "--steps", "20", "--no-submit", "--eval-every", "4"])  # densifies at steps 9, 12 and 15
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "npga.cli", "fleet", "run", str(fleet), "--executor", "local", "--max-parallel", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = RunLayout(fleet / "participants" / "preempted" / "run").log
    deadline = time.monotonic() + 300
    while not (log.is_file() and any(r["step"] >= 10 for r in read_log(log))) and time.monotonic() < deadline:
        time.sleep(0.1)  # after the densification at step 9, before those at 12 and 15
    os.kill(_status(fleet, "preempted")["pid"], signal.SIGUSR2)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out

    starts = _status(fleet, "preempted")["stages"]["train"]["from_steps"]
    assert len(starts) == 2 and starts[0] == 0 and 10 <= starts[1] < 20, starts  # stopped, requeued, resumed
    assert _status(fleet, "whole")["stages"]["train"]["from_steps"] == [0]
    runs = {p: RunLayout(fleet / "participants" / p / "run") for p in ("whole", "preempted")}
    whole, preempted = (torch.load(run.checkpoint(20), weights_only=True) for run in runs.values())
    at_stop = torch.load(runs["preempted"].checkpoint(starts[1]), weights_only=True)["params"]["means"]
    initial = read_log(runs["whole"].log)[0]["n_gaussians"]  # step 5, before the first densification
    assert initial < len(at_stop) < len(whole["params"]["means"])  # densified before the stop and after the resume
    for key in ("params", "nets"):
        assert whole[key].keys() == preempted[key].keys()
        for k in whole[key]:
            assert torch.equal(whole[key][k], preempted[key][k]), (key, k)
    moments = [c["optimizers"]["means"]["state"][0]["exp_avg_sq"] for c in (whole, preempted)]
    assert torch.equal(*moments)

    rows = _report(fleet)
    assert list(rows) == ["whole", "preempted"]
    for p, run in runs.items():
        assert rows[p]["state"] == "done" and int(rows[p]["steps"]) == 20
        _assert_scores_are_the_run_s(rows[p], run)

    jobs = sorted((fleet / "jobs").iterdir())
    capsys.readouterr()
    cli.main(cmd[3:])
    assert "all 2 participants are done; nothing to run" in capsys.readouterr().out
    assert sorted((fleet / "jobs").iterdir()) == jobs  # no job was started


def test_slurm_options_become_the_job_array_s_sbatch_options(tmp_path, monkeypatch):
    """A stand-in `sbatch` keeps the script submitit writes; the pickles are what each array task runs."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/script.sh\necho "Submitted batch job 4242"\n')
    for tool in bin_.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{os.environ['PATH']}")
    for name in ("443", "p2"):
        (tmp_path / "data" / name).mkdir(parents=True)
    fleet = tmp_path / "fleet"
    cli.main(
        [
            "fleet",
            "plan",
            "--out",
            str(fleet),
            "--captures",
            str(tmp_path / "data" / "443"),
            str(tmp_path / "data" / "p2"),
        ]
    )
    cli.main(
        ["fleet", "run", str(fleet), "--executor", "slurm", "--partition", "gpu", "--timeout-min", "240"]
        + ["--max-parallel", "1", "--cpus-per-task", "6", "--mem-gb", "32", "--account", "lab", "--qos", "high"]
        + ["--constraint", "h100", "--setup", "module load cuda", "--sbatch", "mail-type=FAIL", "--name", "avatars"]
        + ["--max-requeues", "2"]
    )
    script = (tmp_path / "script.sh").read_text().splitlines()
    expected = {
        "partition": "gpu",
        "time": "240",
        "gpus-per-node": "1",
        "cpus-per-task": "6",
        "mem": "32G",
        "account": "lab",
        "qos": "high",
        "constraint": "h100",
        "array": "0-1%1",  # both participants, one at a time
        "signal": "USR2@90",  # the preemption signal, 90 s ahead: training stops at a checkpoint
        "mail-type": "FAIL",
        "job-name": "avatars",
    }
    for key, value in expected.items():
        assert f"#SBATCH --{key}={value}" in script, key
    assert script.index("module load cuda") < next(i for i, line in enumerate(script) if line.startswith("srun"))
    tasks = [pickle.loads((fleet / "jobs" / f"4242_{i}_submitted.pkl").read_bytes()) for i in (0, 1)]
    assert [(type(t.function), t.args) for t in tasks] == [
        (ParticipantJob, (str(fleet.absolute()), "443")),
        (ParticipantJob, (str(fleet.absolute()), "p2")),
    ]
    assert [t._timeout_countdown for t in tasks] == [2, 2]  # the time limits submitit requeues a task after
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        cli.main(["fleet", "run", str(fleet), "--executor", "slurm", "--sbatch", "mail-type"])
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SystemExit, match="srun.*login node"):
        cli.main(["fleet", "run", str(fleet), "--executor", "slurm"])


def test_a_second_job_for_a_participant_ends_without_touching_it(tmp_path):
    """A rerun of `fleet run` while the first job of a participant is still queued or running."""
    (tmp_path / "data" / "p1").mkdir(parents=True)
    fleet = tmp_path / "fleet"
    cli.main(["fleet", "plan", "--out", str(fleet), "--captures", str(tmp_path / "data" / "p1")])
    layout = FleetLayout(fleet)
    with folder_lock(layout.participant("p1"), "fleet participant"):  # the first job
        with pytest.raises(FolderInUse, match=f"{os.getpid()}"):
            ParticipantJob()(str(fleet), "p1")
    assert not layout.status("p1").exists() and not layout.run("p1").exists()


class _FakeJob:
    def __init__(self, polls: int) -> None:
        self.polls = polls

    def done(self) -> bool:
        self.polls -= 1
        return self.polls < 0


def test_local_jobs_wait_for_a_free_slot_and_each_holds_a_gpu_of_its_own(monkeypatch):
    monkeypatch.setattr(executors, "POLL_S", 0.0)
    running: dict[str, tuple[_FakeJob, int | None]] = {}
    seen = []

    def submit(pid: str, gpu: int | None) -> _FakeJob:
        live = [g for j, g in running.values() if j.polls >= 0]  # jobs run_local has not seen end
        seen.append((pid, gpu, len(live)))
        assert gpu is None or gpu not in live
        running[pid] = (_FakeJob(polls=len(pid)), gpu)
        return running[pid][0]

    jobs = executors.run_local(submit, ["a", "bb", "ccc", "dddd", "e"], max_parallel=3, gpus=(4, 7))
    assert list(jobs) == ["a", "bb", "ccc", "dddd", "e"]
    assert all(gpu in (4, 7) and live < 2 for _, gpu, live in seen)  # never more jobs than GPUs
    seen.clear()
    running.clear()
    executors.run_local(submit, ["a", "bb", "ccc", "dddd"], max_parallel=3, gpus=())
    assert all(gpu is None and live < 3 for _, gpu, live in seen)
    assert executors.local_parameters(executors.JobOptions("local"), 7) == {
        "timeout_min": 24 * 60,
        "gpus_per_node": 1,
        "visible_gpus": [7],  # submitit's local executor sets CUDA_VISIBLE_DEVICES=7 for the job
    }


def test_the_markdown_table_ends_with_mean_and_sample_sd_and_lists_failures():
    columns = ["participant", "state", "stage", "steps", "gaussians", "hours", "heldout_cameras_psnr", "error"]
    rows = [
        {
            "participant": "a",
            "state": "done",
            "steps": 10,
            "gaussians": 100,
            "hours": 0.5,
            "heldout_cameras_psnr": 30.0,
        },
        {
            "participant": "b",
            "state": "done",
            "steps": 10,
            "gaussians": 300,
            "hours": 1.5,
            "heldout_cameras_psnr": 33.5,
        },
        {"participant": "c", "state": "failed", "stage": "train", "hours": 0.25, "error": "train: out of | memory"},
    ]
    lines = to_markdown(columns, rows).splitlines()
    assert lines[0] == "| participant | state | stage | steps | gaussians | hours | heldout_cameras_psnr |"
    psnr = [30.0, 33.5]
    hours = [0.5, 1.5, 0.25]
    mean_row = (
        f"| mean ± sd |  |  | 10 ± 0 | 200 ± 141 | {statistics.mean(hours):.2f} ± {statistics.stdev(hours):.2f} | "
    )
    assert lines[5] == mean_row + f"{statistics.mean(psnr):.2f} ± {statistics.stdev(psnr):.2f} |"
    assert math.isclose(statistics.stdev(psnr), 2.4748737, rel_tol=1e-6)
    assert lines[-1] == "- c: train: out of | memory"
