"""`npga train` on the synthetic tiny capture: it learns, it resumes bit for bit, it refuses bad input early."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.utils._python_dispatch import TorchDispatchMode

import npga.render
from npga import cli
from npga.avatar import deform
from npga.avatar.densify import DensifyConfig
from npga.avatar.file import load_avatar
from npga.config import load_config
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking, pose_errors
from npga.metrics import psnr
from npga.runs import RunLayout
from npga.train import BatchSource, JsonlLog, TrainConfig, Trainer, build_trainer, with_steps
from npga.train.refine import RefineConfig, TrackingCorrections, make_refine_optimizer, refine_learning_rates

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def tiny_config(capture: Path, out: Path, **overrides) -> TrainConfig:
    """The tiny preset on the CPU: the resume test compares bit for bit (CUDA sums in no fixed order)."""
    overrides = {"device": "cpu", **overrides}
    return dataclasses.replace(load_config(TrainConfig, TINY), capture=capture, out=out, **overrides)


def _views_psnr(trainer: Trainer) -> float:
    """Mean PSNR over every training camera of two fixed frames (independent of the batch sampler)."""
    vals = []
    with torch.no_grad():
        for seq in trainer.split.train_sequences:
            for t in (0, trainer.cache.n_frames(seq) - 1):
                b = trainer.make_batch(seq, t, trainer.train_serials)
                rgb, _, _ = trainer.rasterize(deform(trainer.params, trainer.nets, b.z, b.head_pose), b)
                vals.append(psnr(rgb.clamp(0, 1), b.rgb).mean().item())
    return float(np.mean(vals))


class _CurvesProbe:
    """Records, at one step, whether the curves PNG is on disk (it should follow the run; it is drawn in a
    background thread, so this waits for it a while)."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, None

    def after_step(self, trainer, out) -> None:
        if out["step"] == self.at:
            png, deadline = trainer.cfg.out / "logs" / "training_curves.png", time.monotonic() + 60
            while not png.is_file() and time.monotonic() < deadline:
                time.sleep(0.1)
            self.seen = png.is_file()

    def close(self, trainer) -> None:
        pass


def test_tiny_training_raises_psnr_and_lowers_loss(tiny_capture, tmp_path):
    trainer = build_trainer(tiny_config(tiny_capture, tmp_path / "run"))
    probe = _CurvesProbe(at=150)  # after the validation at step 100, long before the end (300)
    trainer.hooks.append(probe)
    before = _views_psnr(trainer)
    trainer.fit()
    assert probe.seen
    after = _views_psnr(trainer)
    records = [json.loads(line) for line in RunLayout(tmp_path / "run").log.read_text().splitlines()]
    assert after > before + 6.0, (before, after)
    assert np.mean([r["loss"] for r in records[-5:]]) < 0.5 * np.mean([r["loss"] for r in records[:2]])
    assert {"loss_l1", "loss_ssim", "loss_laplacian_features", "time_rasterize", "it_s"} <= set(records[-1])
    assert "val_psnr" in records[-1] and "val_psnr_heldout_seq" in records[-1]
    assert len(trainer.params["means"]) > len(records) and records[-1]["n_gaussians"] > records[0]["n_gaussians"]
    assert (tmp_path / "run" / "logs" / "training_curves.png").stat().st_size > 0
    assert [p.name for p in RunLayout(tmp_path / "run").list_checkpoints()] == ["step_0000200.pt", "step_0000300.pt"]


class _Interrupt:
    """Raises KeyboardInterrupt (what Ctrl-C does) after a given step."""

    def __init__(self, at: int) -> None:
        self.at = at

    def after_step(self, trainer, out) -> None:
        if out["step"] == self.at:
            raise KeyboardInterrupt

    def close(self, trainer) -> None:
        pass


@pytest.mark.parametrize("refine_tracking", [False, True], ids=["tracking as given", "refined tracking"])
def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tiny_capture, tmp_path, refine_tracking):
    # Densification at steps 20 and 40, graph rebuilds and tracking refinement (from step 10) fall on both sides of
    # the interruption at 30.
    preset = load_config(TrainConfig, TINY)
    kw = dict(
        steps=50,
        checkpoint_every=1000,
        graph_every=15,
        densify=dataclasses.replace(preset.densify, refine_start=20, refine_every=20, refine_stop=45),
        refine_tracking=refine_tracking,
        refine=dataclasses.replace(preset.refine, start=10, lr_final=0.5),
    )
    full = build_trainer(tiny_config(tiny_capture, tmp_path / "full", **kw), hooks=[])
    full.fit()

    cfg = tiny_config(tiny_capture, tmp_path / "split", **kw)
    first = build_trainer(cfg, hooks=[_Interrupt(30)])
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert [p.name for p in RunLayout(cfg.out).list_checkpoints()] == ["step_0000030.pt"]
    second = build_trainer(dataclasses.replace(cfg, resume=True), hooks=[])
    assert second.step == 30
    second.fit()

    assert len(full.params["means"]) > 3000 and full.params.keys() == second.params.keys()
    for k in full.params:
        assert torch.equal(full.params[k], second.params[k]), k
    for a, b in zip(full.nets.parameters(), second.nets.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(
        full.optimizers["features"].state_dict()["state"][0]["exp_avg_sq"],
        second.optimizers["features"].state_dict()["state"][0]["exp_avg_sq"],
    )
    if refine_tracking:
        assert full.corrections.rotation.abs().max() > 0  # the corrections moved
        for a, b in zip(full.corrections.state_dict().values(), second.corrections.state_dict().values(), strict=True):
            assert torch.equal(a, b)
        moments = [o.refine_optimizer.state_dict()["state"][1]["exp_avg_sq"] for o in (full, second)]
        assert torch.equal(*moments)
        # the last step's rates have decayed by lr_final, from start (10) to the last step (49)
        base = [g["lr"] for g in make_refine_optimizer(full.corrections, full.cfg.refine).param_groups]
        decayed = [g["lr"] for g in full.refine_optimizer.param_groups]
        assert np.allclose(decayed, np.array(base) * 0.5, rtol=1e-9)


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_an_existing_one(tiny_capture, tmp_path):
    cfg = tiny_config(tiny_capture, tmp_path / "run", steps=5, checkpoint_every=1000)
    build_trainer(cfg, hooks=[]).fit()
    with pytest.raises(ValueError, match="already holds a trained run"):
        build_trainer(cfg, hooks=[])
    with pytest.raises(ValueError, match="steps: 5 -> 9"):
        build_trainer(dataclasses.replace(cfg, resume=True, steps=9), hooks=[])
    resumed = build_trainer(dataclasses.replace(cfg, resume=True, steps=9, override_config=True), hooks=[])
    assert resumed.step == 5
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        build_trainer(dataclasses.replace(cfg, out=tmp_path / "empty", resume=True), hooks=[])


def test_resuming_a_finished_run_leaves_it_as_it_is_and_fewer_steps_are_refused(tiny_capture, tmp_path, capsys):
    """What every rerun of `make demo` does: `--resume` of a finished run rewrites nothing (the avatar keeps its
    PSNR), and `--steps` below the checkpoint's step is an error, not a run trained "back"."""
    run = tmp_path / "run"
    args = ["train", "--config", str(TINY), "--capture", str(tiny_capture), "--out", str(run), "--device", "cpu"]
    args += ["--steps", "3", "--checkpoint-every", "1000", "--val-every", "0"]
    cli.main(args)
    files = {
        p: (p.read_bytes(), p.stat().st_mtime_ns) for p in [RunLayout(run).avatar, *RunLayout(run).list_checkpoints()]
    }
    assert np.isfinite(load_avatar(RunLayout(run).avatar).provenance["psnr"])
    capsys.readouterr()
    cli.main([*args, "--resume"])
    assert "already trained to step 3" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == files
    with pytest.raises(SystemExit, match=r"--steps 2 is below the step of .*step_0000003.pt \(3\)"):
        cli.main([*args[:-4], "--steps", "2", "--resume", "--override-config", *args[-2:]])
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == files


def test_refit_tracking_fits_the_training_frames_after_the_steps_once(tiny_capture, tmp_path, capsys):
    """`npga train --refit-tracking`: after the last step the training sequences play their refitted tracking,
    the capture's beside it, and a resumed finished run neither trains nor refits again."""
    run = RunLayout(tmp_path / "run")
    args = ["train", "--config", str(TINY), "--capture", str(tiny_capture), "--out", str(run.root), "--device", "cpu"]
    args += ["--steps", "3", "--checkpoint-every", "1000", "--val-every", "0", "--refit-tracking"]
    cli.main(args)
    avatar = load_avatar(run.avatar)
    assert avatar.provenance["tracking_refit"] == {"step": 3, "cameras": list(avatar.split.train_serials)}
    for seq in avatar.split.train_sequences:
        m = avatar.motions[seq]
        assert m.refined and not torch.equal(m.head_pose, m.tracked_head_pose)
        captured = Tracking.load(ParticipantLayout(tiny_capture).tracking(seq))
        np.testing.assert_allclose(m.tracked_head_pose.double().numpy(), captured.head_poses, atol=1e-6)
        assert (run.refit(3) / f"{seq}.npz").is_file()
    for seq in avatar.split.heldout_sequences:
        assert not avatar.motions[seq].refined
    before = (run.avatar.read_bytes(), run.avatar.stat().st_mtime_ns)
    capsys.readouterr()
    cli.main([*args, "--resume"])
    assert "already trained to step 3; training tracking refitted" in capsys.readouterr().out
    assert (run.avatar.read_bytes(), run.avatar.stat().st_mtime_ns) == before


def test_a_resumed_run_takes_the_changed_config_s_learning_rates(tiny_capture, tmp_path):
    """--override-config with new rates: the loaded Adam states keep their moments but not the checkpoint's rates."""
    cfg = tiny_config(tiny_capture, tmp_path / "run", steps=3, checkpoint_every=1000)
    first = build_trainer(cfg, hooks=[])
    first.fit()
    rates = dataclasses.replace(cfg.lr, colors=0.123, detail=0.0456)
    resumed = build_trainer(dataclasses.replace(cfg, resume=True, steps=5, override_config=True, lr=rates), hooks=[])
    assert resumed.optimizers["colors"].param_groups[0]["lr"] == 0.123
    assert resumed.optimizers["scales"].param_groups[0]["lr"] == cfg.lr.scales
    assert resumed.net_optimizer.param_groups[0]["lr"] == 0.0456
    moments = resumed.optimizers["colors"].state_dict()["state"][0]["exp_avg_sq"]
    assert torch.equal(moments, first.optimizers["colors"].state_dict()["state"][0]["exp_avg_sq"])


def test_blendshapes_clamp_to_the_training_codes_and_keep_that_range_in_the_avatar_file(tiny_capture, tmp_path):
    cfg = tiny_config(
        tiny_capture,
        tmp_path / "run",
        steps=2,
        checkpoint_every=1000,
        detail=dataclasses.replace(load_config(TrainConfig, TINY).detail, blendshapes=2),
    )
    trainer = build_trainer(cfg, hooks=[])
    layout = ParticipantLayout(tiny_capture)
    codes = np.concatenate([Tracking.load(layout.tracking(s)).expression for s in trainer.split.train_sequences])
    assert np.array_equal(trainer.nets.detail.code_low.numpy(), codes.min(0))
    assert np.array_equal(trainer.nets.detail.code_high.numpy(), codes.max(0))
    trainer.fit()
    saved = load_avatar(RunLayout(cfg.out).avatar).nets.detail
    assert torch.equal(saved.code_low, trainer.nets.detail.code_low)
    assert torch.equal(saved.code_high, trainer.nets.detail.code_high)


def test_the_detail_network_sees_noisy_codes_and_the_coarse_field_the_tracked_ones(tiny_capture, tmp_path):
    """`detail_code_noise`: each step the detail network gets the batch's code plus fresh noise of that standard
    deviation; the coarse field, which is the head model's, keeps the tracked code."""
    sigma = 0.2
    trainer = build_trainer(tiny_config(tiny_capture, tmp_path / "run", detail_code_noise=sigma), hooks=[])
    seen = {"detail": [], "coarse": []}
    for name in seen:
        net = getattr(trainer.nets, name)
        net.register_forward_hook(lambda m, args, out, name=name: seen[name].append(args[-1].detach().clone()))
    tracked = []
    for _ in range(40):
        batch = trainer.sample_batch()
        tracked.append(batch.z)
        trainer.train_step(batch)
    tracked, detail, coarse = torch.stack(tracked), torch.stack(seen["detail"]), torch.stack(seen["coarse"])
    assert torch.equal(coarse, tracked)
    noise = detail - tracked  # (40, D)
    n = noise.numel()  # bounds at four standard errors of the sample's std and mean
    assert (
        abs(noise.std().item() - sigma) < 4 * sigma / (2 * n) ** 0.5 and abs(noise.mean().item()) < 4 * sigma / n**0.5
    )
    assert noise[1:].sub(noise[:-1]).abs().min() > 0  # fresh each step


def test_densification_keeps_every_row_paired(tiny_capture, tmp_path):
    """Tag every Gaussian with its id in its feature, its colour and its Adam moments just before the step
    that densifies, then check row by row: each row's entries and moments carry the same id, and its
    geometry is its tagged parent's (a clone: the same; a split child: nearby, 1.6 times smaller)."""
    # Without the detail MLP the features only meet the Laplacian, so the large tags below stay put.
    cfg = tiny_config(
        tiny_capture,
        tmp_path / "run",
        steps=12,
        use_detail=False,
        densify=dataclasses.replace(
            load_config(TrainConfig, TINY).densify, refine_start=4, refine_every=5, grow_grad2d=0.0
        ),
    )
    trainer = build_trainer(cfg, hooks=[])
    for _ in range(5):
        trainer.train_step(trainer.sample_batch())  # steps 0..4; step index 5 densifies (after 4, every 5)
    p, opt = trainer.params, trainer.optimizers
    n0 = len(p["means"])
    tag = torch.arange(1, n0 + 1, dtype=torch.float32)  # ids from 1: a zero moment marks a new row
    with torch.no_grad():
        p["features"][:, 0] = tag
        p["colors"][:, 0] = 1000.0 + tag  # saturated: no gradient moves it noticeably
        opt["features"].state[p["features"]]["exp_avg"][:, 0] = 1e3 * tag
        opt["features"].state[p["features"]]["exp_avg_sq"][:, 0] = (1e3 * tag) ** 2
        opt["colors"].state[p["colors"]]["exp_avg"][:, 0] = 1e3 * tag
        opt["colors"].state[p["colors"]]["exp_avg_sq"][:, 0] = (1e3 * tag) ** 2  # Adam's step stays ~lr
    before = {k: v.detach().clone() for k, v in p.items()}
    trainer.train_step(trainer.sample_batch())
    p, opt = trainer.params, trainer.optimizers
    n = len(p["means"])
    assert n > n0 and all(len(v) == n for v in p.values())
    parent = p["features"][:, 0].detach()
    assert (parent - parent.round()).abs().max() < 0.05
    parent = parent.round().long()
    assert ((parent >= 1) & (parent <= n0)).all()
    assert torch.equal((p["colors"][:, 0].detach() - 1000.0).round().long(), parent)
    par = parent - 1  # row of the parent before the step
    # Adam moments: a kept row carries its own (one step older), a new row starts at zero
    m_f = opt["features"].state[p["features"]]["exp_avg"][:, 0]
    v_f = opt["features"].state[p["features"]]["exp_avg_sq"][:, 0]
    m_c = opt["colors"].state[p["colors"]]["exp_avg"][:, 0]
    v_c = opt["colors"].state[p["colors"]]["exp_avg_sq"][:, 0]
    new = m_f == 0
    assert new.sum() > 0 and (~new).sum() > 0
    assert torch.equal((m_f[~new] / 900).round().long(), parent[~new])
    assert torch.equal((v_f[~new] / 0.999).sqrt().div(1e3).round().long(), parent[~new])
    assert torch.equal((m_c[~new] / 900).round().long(), parent[~new])
    assert torch.equal((v_c[~new] / 0.999).sqrt().div(1e3).round().long(), parent[~new])
    assert (v_f[new] == 0).all() and (m_c[new] == 0).all() and (v_c[new] == 0).all()
    for key, state in ((k, opt[k].state[v]) for k, v in p.items()):
        assert state["exp_avg"].shape == p[key].shape and state["exp_avg_sq"].shape == p[key].shape, key
    # geometry follows the tag: same orientation, same or 1.6x smaller size, within reach of the parent
    q = torch.nn.functional.normalize(p["quats"].detach(), dim=-1)
    q0 = torch.nn.functional.normalize(before["quats"][par], dim=-1)
    assert (q * q0).sum(-1).abs().min() > 0.99
    dlog = p["scales"].detach() - before["scales"][par]  # (N, 3)
    same, split = (dlog.abs() < 0.02).all(-1), ((dlog + np.log(1.6)).abs() < 0.02).all(-1)
    assert (same | split).all() and split.any()
    reach = 6 * before["scales"][par].exp().max(-1).values + 2e-3  # a split child: 6 sigma; one step of Adam
    moved = (p["means"].detach() - before["means"][par]).norm(dim=-1)
    assert (moved < reach).all(), (moved / reach).max()
    assert trainer.neighbors.shape == (n, cfg.knn)


def _copy_capture(src: Path, dst: Path) -> Path:
    """A copy without the frame cache: edits to the copy's tracking must meet a fresh `prepare`."""
    return Path(shutil.copytree(src, dst, ignore=shutil.ignore_patterns("cache")))


def test_bad_input_fails_before_any_training(tiny_capture, tmp_path):
    no_tracking = _copy_capture(tiny_capture, tmp_path / "no_tracking")
    (no_tracking / "sequences" / "FREE" / "tracking" / "nphm_tracking.npz").unlink()
    with pytest.raises(FileNotFoundError, match="FREE has no tracking"):
        build_trainer(tiny_config(no_tracking, tmp_path / "r1"))
    assert not (tmp_path / "r1").exists()

    wrong_dim = _copy_capture(tiny_capture, tmp_path / "wrong_dim")
    path = wrong_dim / "sequences" / "EXP-1-jaw" / "tracking" / "nphm_tracking.npz"
    tr = Tracking.load(path)
    dataclasses.replace(tr, expression=np.concatenate([tr.expression, tr.expression], 1)).save(path)
    with pytest.raises(ValueError, match="EXP-1-jaw has 20-d expression codes, but the head model has 10"):
        build_trainer(tiny_config(wrong_dim, tmp_path / "r2"))
    assert not (tmp_path / "r2").exists()

    serials = tuple(json.loads((tiny_capture / "calibration" / "camera_params.json").read_text())["world_2_cam"])
    with pytest.raises(ValueError, match="no training cameras"):
        build_trainer(tiny_config(tiny_capture, tmp_path / "r3", heldout_serials=serials))
    with pytest.raises(ValueError, match="no training sequences"):
        build_trainer(tiny_config(tiny_capture, tmp_path / "r4", heldout_sequences=("EXP-1-jaw", "FREE")))
    assert not (tmp_path / "r3").exists() and not (tmp_path / "r4").exists()
    assert not list((tmp_path).glob("r*/checkpoints"))


def test_sigterm_saves_a_checkpoint_that_resumes(tiny_capture, tmp_path):
    """`kill` (or a scheduler's time limit) stops `npga train` like Ctrl-C: checkpoint, then exit."""
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "npga.cli",
        "train",
        "--config",
        str(TINY),
        "--capture",
        str(tiny_capture),
        "--out",
        str(run),
        "--steps",
        "100000",
        "--log-every",
        "5",
        "--val-every",
        "0",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA context for a CPU run, also on a GPU machine
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    log = RunLayout(run).log
    deadline = time.monotonic() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    (checkpoint,) = RunLayout(run).list_checkpoints()
    step = int(checkpoint.stem.split("_")[1])
    assert step >= 10
    resumed = build_trainer(
        tiny_config(tiny_capture, run, steps=100000, log_every=5, val_every=0, resume=True), hooks=[]
    )
    assert resumed.step == step


@pytest.mark.parametrize("preset", ["tiny", "demo", "nersemble"])
def test_every_preset_trains(preset, tiny_capture, tmp_path):
    """Each preset loads and trains a few steps (on the tiny capture, with the tiny preset's quick distillation)."""
    cfg = load_config(TrainConfig, TINY.parent / f"{preset}.yaml")
    tiny = load_config(TrainConfig, TINY)
    cfg = dataclasses.replace(
        cfg,
        capture=tiny_capture,
        out=tmp_path / preset,
        steps=3,
        distill=tiny.distill,
        init=dataclasses.replace(cfg.init, mesh_resolution=32),
    )
    trainer = build_trainer(cfg, hooks=[])
    out = [trainer.train_step(trainer.sample_batch()) for _ in range(cfg.steps)]
    assert all(np.isfinite(o["loss"]) for o in out)
    assert (trainer.nets.cnn is not None) == cfg.cnn.enabled
    if cfg.cnn.enabled:  # its zero-initialised last layer has moved: the CNN is trained
        assert trainer.nets.cnn.net[-1].weight.abs().sum() > 0


def test_a_longer_run_densifies_in_the_same_stages_of_training():
    """with_steps scales the densification window and interval and the refinement's start with the step count;
    nothing else changes."""

    def refinements(c: TrainConfig) -> list[float]:  # when the strategies refine, as fractions of the run
        d = c.densify
        return [s / c.steps for s in range(d.refine_start + 1, d.refine_stop) if s % d.refine_every == 0]

    densify = DensifyConfig(refine_start=120, refine_every=60, refine_stop=480)
    cfg = TrainConfig(steps=600, densify=densify, refine=RefineConfig(start=90))
    longer = with_steps(cfg, 1000)
    assert (longer.steps, longer.densify.refine_start, longer.densify.refine_every, longer.densify.refine_stop) == (
        1000,
        200,
        100,
        800,
    )
    assert longer.refine.start == 150
    assert dataclasses.replace(longer, steps=600, densify=cfg.densify, refine=cfg.refine) == cfg
    assert refinements(longer) == refinements(cfg) == [0.3, 0.4, 0.5, 0.6, 0.7]
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        with_steps(cfg, 0)


# ---- the step never waits for the device; logs read a window at once; batches; plots off the loop ---------


class _ReadEveryStep:
    """The old way of logging: every value of every step read on the host at once."""

    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def after_step(self, trainer, out) -> None:
        self.steps.append({k: float(v) for k, v in out.items()})

    def close(self, trainer) -> None:
        pass


@pytest.mark.slow
def test_the_log_holds_what_reading_every_step_gives(tiny_capture, tmp_path):
    cfg = tiny_config(tiny_capture, tmp_path / "run", steps=12, log_every=5, val_every=6, checkpoint_every=1000)
    trainer = build_trainer(cfg)  # the default hooks: validation, JSONL log, checkpoints
    probe = _ReadEveryStep()
    trainer.hooks.insert(1, probe)  # sees the validation's values, before the log reads its window
    trainer.fit()
    records = [json.loads(line) for line in RunLayout(cfg.out).log.read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10, 12]
    for rec, window in zip(records, (probe.steps[0:5], probe.steps[5:10], probe.steps[10:12]), strict=True):
        keys = {k for w in window for k in w} - {"step", "n_gaussians"}
        expected = {k: float(np.mean([w[k] for w in window if k in w])) for k in keys}
        assert {k: rec[k] for k in keys} == expected and set(rec) == keys | {"step", "n_gaussians", "it_s"}
        assert rec["n_gaussians"] == window[-1]["n_gaussians"]
    assert {"loss_l1", "loss_laplacian_dynamics", "psnr", "val_psnr", "val_psnr_heldout_seq"} <= set(records[1])
    assert "val_psnr" not in records[0] and "val_psnr" in records[2]  # validations at steps 6 and 12


class _HostReads(TorchDispatchMode):
    """Records where tensor values reach the host: item(), float(), int(), bool() (all of them end in
    `_local_scalar_dense`), and tolist(), numpy(), cpu() (patched, since on a CPU they skip the dispatcher)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.callers: list[str] = []
        for name in ("tolist", "numpy", "cpu"):
            monkeypatch.setattr(torch.Tensor, name, self._recording(getattr(torch.Tensor, name)))

    def _record(self) -> None:
        stack = traceback.extract_stack()[:-2]  # the caller's frames, this probe's left out
        frames = [f for f in stack if "/torch/" not in f.filename or "/torch/optim/" in f.filename]
        self.callers.append(f"{frames[-1].filename}:{frames[-1].lineno}")

    def _recording(self, method):
        def wrapper(tensor, *args, **kwargs):
            self._record()
            return method(tensor, *args, **kwargs)

        return wrapper

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self._record()
        return func(*args, **(kwargs or {}))


def test_a_training_step_reads_nothing_back_from_the_device(tiny_capture, tmp_path, monkeypatch):
    """Steps that neither densify nor log: nothing of the trainer, the losses, the deformation or the hooks
    reads a tensor on the host. Reads inside the CPU reference rasterizer (gsplat replaces it on CUDA) and
    Adam's step counters (CPU tensors on every device) are not synchronisations on a GPU."""
    cfg = tiny_config(tiny_capture, tmp_path / "run", log_every=5, val_every=5)
    trainer = build_trainer(cfg)
    trainer.train_step(trainer.sample_batch())  # step 1: Adam's state exists from here on
    with _HostReads(monkeypatch) as reads:
        for _ in range(3):  # steps 2, 3, 4
            out = trainer.train_step(trainer.sample_batch())
            for hook in trainer.hooks:
                hook.after_step(trainer, out)
        float(out["loss"])  # the probe sees a read (the old way of logging)
    allowed = (str(Path(npga.render.__file__).parent), "/torch/optim/")
    assert [c for c in reads.callers if not any(a in c for a in allowed)] == [f"{__file__}:{_line_of_read()}"]
    assert isinstance(out["loss"], torch.Tensor) and isinstance(out["loss_ssim"], torch.Tensor)


def _line_of_read() -> int:
    source = Path(__file__).read_text().splitlines()
    return 1 + next(i for i, line in enumerate(source) if line.strip().startswith('float(out["loss"])'))


def test_batches_kept_on_the_device_and_read_from_the_cache_are_the_cached_frames(tiny_capture, tmp_path):
    trainer = build_trainer(tiny_config(tiny_capture, tmp_path / "run", frames_on_device_gb=1.0), hooks=[])
    kept = trainer.batches
    read = BatchSource(
        trainer.cache,
        trainer.motions,
        trainer.background,
        trainer.split.train_sequences,
        trainer.train_serials,
        budget_bytes=0,
    )
    assert set(kept.resident) == set(trainer.split.train_sequences) and not read.resident
    seq = trainer.split.train_sequences[0]
    tracking = trainer.cache.tracking(seq)
    for t, serials in ((0, trainer.train_serials[:2]), (3, trainer.train_serials[::-4])):
        rgb, alpha = trainer.cache.frames(seq, t, serials)  # numpy float32, the reference
        expected = rgb * alpha + (1 - alpha) * np.float32(1.0)  # composited on the white background
        for b in kept.batch(seq, t, serials), read.batch(seq, t, serials):
            assert torch.equal(b.rgb, torch.from_numpy(expected)) and torch.equal(b.alpha, torch.from_numpy(alpha))
            assert torch.equal(b.z, torch.from_numpy(tracking.expression[t]).float())
            assert torch.equal(b.head_pose, torch.from_numpy(tracking.head_to_world(t)).float())
            w2c = np.stack([trainer.cache.cameras[s].world_2_cam for s in serials])
            assert torch.equal(b.viewmats, torch.from_numpy(w2c).float())
    held = trainer.split.heldout_serials[0]  # not kept: read from the cache
    assert torch.equal(kept.batch(seq, 1, [held]).alpha, torch.from_numpy(trainer.cache.frames(seq, 1, [held])[1]))


def slow_plot(log_path, out_png, title=""):
    """A redraw that takes a second and leaves a file naming the process that drew it."""
    time.sleep(1.0)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    (Path(out_png).parent / f"drawn_by_{os.getpid()}_{time.monotonic_ns()}").touch()


def test_curves_are_drawn_while_training_goes_on(tmp_path):
    trainer = SimpleNamespace(cfg=SimpleNamespace(steps=100, out=tmp_path), run=RunLayout(tmp_path))
    log = JsonlLog(tmp_path / "train.jsonl", every=1, plot=slow_plot)
    start = time.monotonic()
    for step in range(1, 4):  # three validations in a row: one redraw runs, the others are not queued
        log.after_step(trainer, {"step": step, "n_gaussians": 1, "loss": torch.tensor(0.5), "val_psnr": 30.0})
    assert time.monotonic() - start < 0.5
    log.close(trainer)  # waits for the redraw, then draws the final curves
    drawn = sorted(trainer.run.curves.parent.glob("drawn_by_*"))
    assert len(drawn) == 2 and time.monotonic() - start >= 2.0
    pids = {int(f.name.split("_")[2]) for f in drawn}
    assert os.getpid() in pids and len(pids) == 2  # the redraw during training ran in another process
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_refinement_removes_most_of_a_known_pose_error_and_pins_the_gauge(tiny_capture, tmp_path):
    capture = tmp_path / "capture"
    shutil.copytree(tiny_capture, capture, ignore=shutil.ignore_patterns("cache"))
    layout, rng = ParticipantLayout(capture), np.random.default_rng(0)
    truth = {}
    for seq in sorted(p.name for p in (capture / "sequences").iterdir()):
        tr = truth[seq] = Tracking.load(layout.tracking(seq))
        turn = Rotation.from_rotvec(rng.normal(0.0, np.radians(1.0), (tr.n_frames, 3))).as_matrix()  # ~1.6 deg
        shift = rng.normal(0.0, 0.002, (tr.n_frames, 3))  # ~3.5e-3 head units, about a pixel at 48 px
        dataclasses.replace(tr, rotation=turn @ tr.rotation, translation=tr.translation + shift).save(
            layout.tracking(seq)
        )
    preset = load_config(TrainConfig, TINY)
    refine = dataclasses.replace(
        preset.refine, lr_rotation=1e-3, lr_translation=2e-4, rotation_error=math.radians(1.0), translation_error=0.002
    )
    trainer = build_trainer(tiny_config(capture, tmp_path / "run", refine_tracking=True, refine=refine), hooks=[])
    trainer.fit()
    c = trainer.corrections
    for p in (c.rotation, c.translation, c.expression):
        assert p.mean(0).abs().max() < 1e-6  # the gauge stays pinned: no correction shared by every frame
    avatar = load_avatar(RunLayout(trainer.cfg.out).avatar)
    for seq in trainer.split.train_sequences:
        m = avatar.motions[seq]
        assert m.refined
        tracked_rot, tracked_pos = pose_errors(truth[seq].head_poses, m.tracked_head_pose.double().numpy())
        refined_rot, refined_pos = pose_errors(truth[seq].head_poses, m.head_pose.double().numpy())
        assert refined_rot.mean() < 0.5 * tracked_rot.mean(), (refined_rot.mean(), tracked_rot.mean())
        assert refined_pos.mean() < 0.5 * tracked_pos.mean(), (refined_pos.mean(), tracked_pos.mean())
    for seq in trainer.split.heldout_sequences:
        assert not avatar.motions[seq].refined  # no training frame of it: played as tracked


def test_refinement_learning_rates_decay_exponentially_from_the_start_to_the_last_step():
    cfg = RefineConfig(
        start=100, lr_rotation=1e-3, lr_translation=2e-4, lr_scale=0.0, lr_expression=1e-2, lr_final=0.01
    )
    corrections = TrackingCorrections({"A": 3}, 4, torch.zeros(3))
    base = np.array([1e-3, 2e-4, 1e-2])  # the optimiser's groups: the scale is frozen, so it has none
    assert len(make_refine_optimizer(corrections, cfg).param_groups) == 3
    for step, factor in ((0, 1.0), (100, 1.0), (150, 0.1), (200, 0.01)):  # a run of 201 steps: 100 from start to last
        assert np.allclose(refine_learning_rates(corrections, cfg, step, 201), base * factor, rtol=1e-9), step


def test_the_mouth_network_s_rate_decays_to_its_final_factor_and_no_other_network_s_does(tiny_capture, tmp_path):
    mouth = dataclasses.replace(TrainConfig().detail.mouth, enabled=True)
    cfg = tiny_config(tiny_capture, tmp_path / "run", steps=201)
    cfg = dataclasses.replace(
        cfg,
        detail=dataclasses.replace(cfg.detail, mouth=mouth),
        lr=dataclasses.replace(cfg.lr, detail=2e-3, mouth=1e-2, mouth_final=0.01),
    )
    trainer = build_trainer(cfg, hooks=[])
    mouth_ids = {id(p) for p in trainer.nets.detail.mouth.parameters()}
    for step, factor in ((0, 1.0), (100, 0.1), (200, 0.01)):
        trainer.step = step
        trainer._set_learning_rates()
        rates = {id(p): g["lr"] for g in trainer.net_optimizer.param_groups for p in g["params"]}
        assert np.allclose([rates[i] for i in mouth_ids], 1e-2 * factor, rtol=1e-9, atol=0), step
        assert {r for i, r in rates.items() if i not in mouth_ids} == {2e-3}, step
