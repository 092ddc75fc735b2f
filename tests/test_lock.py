"""One writer per run folder and per frame cache: a second process is refused with the holder's pid, and the
lock goes with its holder however the holder ends (kill -9 included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from npga import cli
from npga.io.lock import FolderInUse, folder_lock

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
HOLD = """import sys, time
from npga.io.lock import folder_lock
with folder_lock(sys.argv[1], "run"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds a folder's lock; yields (start(folder) -> the process). Killed at the end."""
    procs = []

    def start(folder: Path) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_second_holder_is_refused_with_the_first_ones_pid_until_it_dies(tmp_path, holder):
    run = tmp_path / "run"
    first = holder(run)
    with pytest.raises(FolderInUse, match=rf"{run}: this run is in use by another npga process \(pid {first.pid}\)"):
        with folder_lock(run, "run"):
            pass
    first.send_signal(signal.SIGKILL)  # no clean-up code runs: the operating system drops the lock
    first.wait()
    with folder_lock(run, "run") as lock:
        assert lock.read_text().strip() == str(os.getpid())
    with folder_lock(run, "run"):  # released at the end of the block
        pass


def test_a_refused_block_in_a_new_folder_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="bad input"), folder_lock(tmp_path / "new" / "run", "run"):
        raise ValueError("bad input")
    assert not (tmp_path / "new" / "run").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(ValueError), folder_lock(kept, "run"):
        raise ValueError("bad input")
    assert kept.is_dir()


def test_npga_train_on_a_run_in_use_fails_in_one_line_naming_the_holder(tiny_capture, tmp_path, holder):
    run = tmp_path / "run"
    first = holder(run)
    args = ["train", "--config", str(TINY), "--capture", str(tiny_capture), "--out", str(run), "--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert str(e.value) == (
        f"npga train: error: {run}: this run is in use by another npga process (pid {first.pid}); "
        "wait for it to end or choose another folder"
    )
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # the refused run wrote nothing


def test_npga_prepare_on_a_cache_in_use_fails_naming_the_holder(tiny_capture, tmp_path, holder):
    cache = tmp_path / "cache"
    first = holder(cache)
    args = ["prepare", "--capture", str(tiny_capture), "--out", str(cache)]
    with pytest.raises(
        SystemExit, match=rf"npga prepare: error: {cache}: this frame cache is in use .*pid {first.pid}"
    ):
        cli.main(args)
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]


def test_npga_distill_into_a_run_in_use_is_refused(tiny_capture, tmp_path, holder):
    run = tmp_path / "run"
    first = holder(run)
    with pytest.raises(SystemExit, match=rf"npga distill: error: {run}: this run is in use .*pid {first.pid}"):
        cli.main(["distill", "--capture", str(tiny_capture), "--out", str(run), "--device", "cpu"])
    assert sorted(p.name for p in run.iterdir()) == [".lock"]
