"""Several frames per step (`--frames-per-step K`) and several processes training one avatar (torchrun, gloo).

A step of K frames follows the mean of their gradients and adds each frame's screen-space gradients to the
densification statistics as if it were rendered alone; one frame per step is the step written out below (the
trainer before batches, bit for bit); two ranks of one frame each take exactly the steps of one process with two
frames, and end identical; a run stopped by SIGTERM on one rank resumes on one process and ends where the
uninterrupted run ends; ranks that hold different avatars stop with an error naming them.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from npga.avatar import deform, knn_graph
from npga.config import load_config, save_config
from npga.losses import compute_losses, total_loss
from npga.runs import RunLayout
from npga.train import TrainConfig, Trainer, build_trainer
from npga.train.config import per_step
from tests.helpers.ranks import GaussianCounts, one_thread, train_on_ranks

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def config(capture: Path, out: Path, **overrides) -> TrainConfig:
    """The tiny preset, densifying (steps 4, 6, 8 of 15 at two frames per step) and refining the tracking (from
    step 2), with noisy detail codes: every part of a step that draws numbers or reads gradients."""
    tiny = load_config(TrainConfig, TINY)
    kw = dict(
        capture=capture,
        out=out,
        device="cpu",
        steps=30,
        log_every=3,
        val_every=0,
        checkpoint_every=1000,
        graph_every=5,
        detail_code_noise=0.05,
        refine_tracking=True,
        refine=dataclasses.replace(tiny.refine, start=4),
        densify=dataclasses.replace(tiny.densify, refine_start=4, refine_every=4, refine_stop=20),
    )
    return dataclasses.replace(tiny, **(kw | overrides))


def with_mouth_phase(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with the mouth network and 8 mouth-phase steps after its joint ones (4 steps of two frames)."""
    mouth = dataclasses.replace(cfg.detail.mouth, enabled=True)
    return dataclasses.replace(cfg, detail=dataclasses.replace(cfg.detail, mouth=mouth), mouth_steps=8)


@pytest.fixture(scope="module")
def distilled(tiny_capture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny capture's distilled field, made once: each run starts from a copy (distilling is not tested here)."""
    out = tmp_path_factory.mktemp("distilled") / "run"
    build_trainer(config(tiny_capture, out), hooks=[])
    return RunLayout(out).distill


def fresh_run(out: Path, distilled: Path) -> Path:
    out.mkdir(parents=True)
    (out / distilled.name).write_bytes(distilled.read_bytes())
    return out


def assert_same_state(a: dict, b: dict, exact: bool = True) -> None:
    """Two trainers' states: Gaussians, networks, Adam's moments, tracking corrections, densification statistics.
    Not exact: equal to float32 rounding (rtol 1e-5, atol 1e-7)."""

    def same(x: torch.Tensor, y: torch.Tensor, where: str) -> None:
        if exact:
            assert x.shape == y.shape and torch.equal(x, y), where
        else:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7, msg=where)

    assert a["step"] == b["step"]
    for k in a["params"]:
        same(a["params"][k], b["params"][k], f"params/{k}")
    for k in a["nets"]:
        same(a["nets"][k], b["nets"][k], f"nets/{k}")
    for k, opt in a["optimizers"].items():
        for m in ("exp_avg", "exp_avg_sq"):
            same(opt["state"][0][m], b["optimizers"][k]["state"][0][m], f"optimizers/{k}/{m}")
    for i, s in a["net_optimizer"]["state"].items():
        same(s["exp_avg_sq"], b["net_optimizer"]["state"][i]["exp_avg_sq"], f"net_optimizer/{i}")
    for k in a["corrections"]:
        same(a["corrections"][k], b["corrections"][k], f"corrections/{k}")
    for k in ("grad2d", "count"):
        same(a["strategy_state"][k], b["strategy_state"][k], f"strategy_state/{k}")


# ---- one process -----------------------------------------------------------------------------------------


def reference_step(trainer: Trainer, batch) -> None:
    """One step as the trainer took it before steps of several frames: render, losses, backward, Adam, densify."""
    g = deform(trainer.params, trainer.nets, batch.z, batch.head_pose)
    rgb, alpha, meta = trainer.rasterize(g, batch)
    trainer.strategy.step_pre_backward(trainer.params, trainer.optimizers, trainer.strategy_state, trainer.step, meta)
    terms = compute_losses(rgb, alpha, batch.rgb, batch.alpha, g, trainer.neighbors, trainer.cfg.loss)
    total_loss(terms, trainer.cfg.loss).backward()
    frac = trainer.step / (trainer.cfg.steps - 1)
    trainer.optimizers["means"].param_groups[0]["lr"] = trainer.cfg.lr.means * trainer.cfg.lr.means_final**frac
    for opt in trainer.optimizer_list():
        opt.step()
        opt.zero_grad(set_to_none=True)
    trainer.strategy.step_post_backward(trainer.params, trainer.optimizers, trainer.strategy_state, trainer.step, meta)
    trainer.step += 1
    trainer.neighbors = knn_graph(trainer.params["means"], trainer.cfg.knn)


def test_one_frame_per_step_is_the_step_without_batches_bit_for_bit(tiny_capture, distilled, tmp_path):
    """Two cameras per step (a Gaussian seen twice in a step adds to its statistics twice, in order), densifying at
    step 4, the statistics of steps 5 and 6 kept; the reference rebuilds the graph every step, as the trainer does
    with graph_every=1."""
    tiny = load_config(TrainConfig, TINY)
    kw = dict(
        steps=7,
        densify=dataclasses.replace(tiny.densify, refine_start=2, refine_every=4, refine_stop=20),
        cameras_per_step=2,
        graph_every=1,
        detail_code_noise=0.0,
        refine_tracking=False,
        max_nonfinite_steps=0,
    )
    trained = build_trainer(config(tiny_capture, fresh_run(tmp_path / "trained", distilled), **kw), hooks=[])
    n = len(trained.params["means"])
    for _ in range(7):
        trained.train_step(trained.sample_step())
    assert len(trained.params["means"]) > n  # densified
    by_hand = build_trainer(config(tiny_capture, fresh_run(tmp_path / "by_hand", distilled), **kw), hooks=[])
    for _ in range(7):  # after the other: splitting draws from torch's generator, which build_trainer seeds
        reference_step(by_hand, by_hand.sample_batch())
    state, expected = trained.state_dict(), by_hand.state_dict()
    expected["corrections"] = state["corrections"] = {}
    assert_same_state(state, expected)


def test_a_step_of_two_frames_follows_the_mean_of_their_gradients(tiny_capture, distilled, tmp_path):
    """K = 2: the gradients before Adam are the mean of each frame's alone, and the densification statistics the
    sum of what each frame adds alone (gsplat's scale: as if each were rendered by itself)."""
    cfg = config(tiny_capture, fresh_run(tmp_path / "run", distilled), refine_tracking=False, detail_code_noise=0)
    trainer = build_trainer(cfg, hooks=[])
    first, second = trainer.sample_batch(), trainer.sample_batch()
    assert (first.sequence, first.t) != (second.sequence, second.t)
    start = copy.deepcopy(trainer.state_dict())
    seen: dict[str, dict[str, torch.Tensor]] = {}
    check = trainer.guard.check

    def step(name: str, batches) -> None:
        trainer.load_state_dict(copy.deepcopy(start))

        def record(terms, groups, metas):  # the gradients the optimisers are about to apply
            seen[name] = {f"{k}/{i}": p.grad.clone() for k, ps in groups.items() for i, p in enumerate(ps)}
            return check(terms, groups, metas)

        trainer.guard.check = record
        trainer.train_step(batches)
        seen[name] |= {k: trainer.strategy_state[k] for k in ("grad2d", "count")}

    step("first", [first])
    step("second", [second])
    step("both", [first, second])
    assert seen["both"].keys() == seen["first"].keys()
    for k, both in seen["both"].items():
        alone = seen["first"][k] + seen["second"][k]
        if k in ("grad2d", "count"):
            torch.testing.assert_close(both, alone, rtol=1e-5, atol=0, msg=k)
        else:  # (the two frames' gradients may cancel: an absolute tolerance at the tensor's scale)
            torch.testing.assert_close(both, alone / 2, rtol=1e-4, atol=1e-6 * float(alone.abs().max()), msg=k)
    assert seen["both"]["count"].sum() > 0 and seen["both"]["grad2d"].sum() > 0


def test_frames_per_step_follow_the_schedule_and_scale_the_learning_rates():
    cfg = TrainConfig(steps=3000, frames_per_step=4)
    batched = per_step(cfg)
    d = cfg.densify
    assert (batched.steps, batched.densify.refine_start, batched.densify.refine_every) == (
        750,
        d.refine_start // 4,
        d.refine_every // 4,
    )
    assert batched.lr == cfg.lr and batched.refine.start == cfg.refine.start // 4
    rooted = per_step(
        dataclasses.replace(cfg, lr_batch_scaling="sqrt", lr=dataclasses.replace(cfg.lr, mouth_final=0.3))
    )
    assert rooted.lr.means == 2 * cfg.lr.means and rooted.lr.cnn == 2 * cfg.lr.cnn
    assert (rooted.lr.means_final, rooted.lr.mouth_final) == (cfg.lr.means_final, 0.3)
    assert rooted.lr.mouth == 2 * cfg.lr.mouth and rooted.refine.lr_final == cfg.refine.lr_final
    assert rooted.refine.lr_expression == 2 * cfg.refine.lr_expression
    assert per_step(dataclasses.replace(cfg, frames_per_step=1)) == dataclasses.replace(cfg, frames_per_step=1)


# ---- several processes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_process_of_two_frames(tiny_capture, distilled, tmp_path_factory) -> tuple[dict, list[int]]:
    """The run that two ranks of one frame each must equal: one process, two frames per step, uninterrupted; on
    one thread, as each rank (a sum split over two threads rounds differently)."""
    out = fresh_run(tmp_path_factory.mktemp("k2") / "run", distilled)
    counts = GaussianCounts()
    with one_thread():
        trainer = build_trainer(with_mouth_phase(config(tiny_capture, out, frames_per_step=2)), hooks=[counts])
        trainer.fit()
    return trainer.state_dict(), counts.counts


def test_two_ranks_of_one_frame_take_the_steps_of_one_process_of_two(
    tiny_capture, distilled, one_process_of_two_frames, tmp_path
):
    """Bit for bit on the CPU (a sum of two numbers is the same in either order), the mouth phase included;
    Gaussian counts after every step; and the two ranks end identical."""
    cfg = with_mouth_phase(config(tiny_capture, fresh_run(tmp_path / "run", distilled), frames_per_step=2))
    train_on_ranks(cfg, 2, tmp_path / "ranks")
    ranks = [torch.load(tmp_path / "ranks" / f"rank{r}.pt", weights_only=False) for r in range(2)]
    expected, counts = one_process_of_two_frames
    assert len(counts) == 19 and counts[-1] > counts[0]  # 15 joint steps (densified) and 4 of the mouth phase
    for rank in ranks:
        assert rank["counts"] == counts
        assert_same_state(rank["state"], expected)
    assert_same_state(ranks[1]["state"], ranks[0]["state"])
    assert [p.name for p in RunLayout(cfg.out).list_checkpoints()] == ["step_0000019.pt"]  # rank 0 wrote it


def test_ranks_holding_different_avatars_stop_with_an_error_naming_them(tiny_capture, distilled, tmp_path):
    cfg = config(tiny_capture, fresh_run(tmp_path / "run", distilled), frames_per_step=2)
    train_on_ranks(cfg, 2, tmp_path / "ranks", nudge=1e-4)
    errors = [(tmp_path / "ranks" / f"rank{r}.error").read_text() for r in range(2)]
    assert errors[0] == errors[1]
    assert "different avatars at step 3" in errors[0] and "rank 0:" in errors[0] and "rank 1:" in errors[0]


def children(pid: int) -> list[int]:
    """The processes `pid` started (torchrun's ranks)."""
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigterm_to_one_rank_stops_all_and_the_run_resumes_on_one_process(
    tiny_capture, distilled, one_process_of_two_frames, tmp_path
):
    cfg = with_mouth_phase(config(tiny_capture, fresh_run(tmp_path / "run", distilled), frames_per_step=2, log_every=1))
    save_config(cfg, tmp_path / "preset.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [str(TORCHRUN), "--nproc-per-node", "2", "-m", "npga.cli", "train", "--config", str(tmp_path / "preset.yaml")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log, deadline = RunLayout(cfg.out).log, time.monotonic() + 180
        while not (log.is_file() and log.read_text().count("\n") >= 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        rank1 = next(p for p in children(proc.pid) if b"RANK=1" in Path(f"/proc/{p}/environ").read_bytes().split(b"\0"))
        os.kill(rank1, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:  # ranks left waiting for each other would outlive torchrun (it starts each in a session of its own)
        if proc.poll() is None:
            for pid in children(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "interrupted" in err, err
    (checkpoint,) = RunLayout(cfg.out).list_checkpoints()
    stopped = int(checkpoint.stem.split("_")[1])
    assert 2 <= stopped < 15, err

    with one_thread():
        resumed = build_trainer(dataclasses.replace(cfg, resume=True), hooks=[])
        assert resumed.step == stopped
        resumed.fit()
    assert_same_state(resumed.state_dict(), one_process_of_two_frames[0])
