"""Paper-scale speed: render FPS and the training step of an avatar grown to 250k Gaussians.

Builds the nersemble preset's avatar (32-d latents, detail MLP 128 x 3, screen-space CNN, the distilled field's
architecture) on a capture, grows it to `--gaussians` by copying its Gaussians with a little jitter (a grown
avatar's size, not a trained one's looks: speed depends on the numbers, not the values), and measures, as
medians over `--reps` repetitions after `--warmup`, with the device synchronised around each timed part:

- render: deform + rasterize at the capture's size and at twice it, with and without the CNN; deform and
  rasterize alone;
- training step for 1, 2 and 4 cameras per step: batch loading, deform, rasterize, loss, backward, optimiser,
  densify (gsplat strategy bookkeeping and graph), the whole step, and peak memory;
- one densification at paper scale and one kNN graph rebuild.

Prints a table and writes JSON. Without `--capture` it makes a synthetic one in the output folder (`full`
preset, 802 px tall, 2 frames per sequence; `tiny` with `--small`). `--small` is the CPU check CI runs: the
tiny capture, a few thousand Gaussians, two repetitions.

.venv/bin/python benchmarks/gpu.py [--device auto] [--capture DIR] [--gaussians 250000] [--small]
    [--out benchmarks/out/gpu.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from npga.avatar import deform, knn_graph, render_gaussians
from npga.config import load_config, resolve_device
from npga.train import TrainConfig, Trainer, build_trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PARTS = ("deform", "rasterize", "loss", "backward", "optimizer", "densify")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int) -> float:
    """Median wall time of `fn` in milliseconds, the device synchronised before and after each call."""
    times = []
    for i in range(warmup + reps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory since the last reset (CUDA), or the process's peak resident set (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def grown(params: dict[str, torch.Tensor], n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`n` Gaussians drawn from `params` with replacement, positions jittered by a tenth of their size."""
    idx = torch.randint(len(params["means"]), (n,), generator=generator)
    out = {k: v.detach().cpu()[idx].clone() for k, v in params.items()}
    sigma = out["scales"].exp().mean(-1, keepdim=True)  # (n, 1)
    out["means"] += 0.1 * sigma * torch.randn(n, 3, generator=generator)
    return out


def render_case(trainer: Trainer, scale: int, cnn: bool, device: torch.device, reps: int, warmup: int) -> dict:
    """Render one camera of a training frame at `scale` times the capture's size: FPS and the parts."""
    seq = trainer.split.train_sequences[0]
    b = trainer.make_batch(seq, 0, trainer.train_serials[:1])
    Ks = b.Ks.clone()
    Ks[:, :2] *= scale
    width, height = scale * trainer.cache.width, scale * trainer.cache.height
    nets = trainer.nets
    net = nets.cnn if cnn else None
    with torch.no_grad():
        posed = lambda: deform(trainer.params, nets, b.z, b.head_pose)  # noqa: E731
        drawn = lambda g: render_gaussians(g, b.viewmats, Ks, width, height, trainer.background, net)  # noqa: E731
        g = posed()
        frame = median_ms(lambda: drawn(posed()), device, reps, warmup)
        raster = median_ms(lambda: drawn(g), device, reps, warmup)
        deform_ms = median_ms(posed, device, reps, warmup)
    return {"size": f"{width}x{height}", "cnn": cnn, "fps": 1000 / frame, "frame_ms": frame,
            "deform_ms": deform_ms, "rasterize_ms": raster}  # fmt: skip


def step_case(trainer: Trainer, cameras: int, device: torch.device, reps: int, warmup: int) -> dict:
    """Training steps with `cameras` cameras each, at steps that do not densify: the parts and the whole."""
    n = min(cameras, len(trainer.train_serials))
    serials = trainer.train_serials[:n]
    seqs = trainer.split.train_sequences
    rows: list[dict[str, float]] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(warmup + reps):
        synchronize(device)
        start = time.perf_counter()
        seq = seqs[i % len(seqs)]
        batch = trainer.make_batch(seq, i % trainer.cache.n_frames(seq), serials)
        synchronize(device)
        loaded = time.perf_counter()
        out = trainer.train_step(batch)
        synchronize(device)
        end = time.perf_counter()
        if i >= warmup:
            parts = {p: 1000 * float(out[f"time_{p}"]) for p in PARTS}
            rows.append({"load": 1000 * (loaded - start), **parts, "step": 1000 * (end - start),
                         "parts_sum": 1000 * (loaded - start) + sum(parts.values())})  # fmt: skip
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        "cameras": n,
        "gaussians": len(trainer.params["means"]),
        "step_ms": med["step"],
        "parts_ms": {k: med[k] for k in ("load", *PARTS)},
        "parts_sum_ms": med["parts_sum"],
        "unaccounted_ms": med["step"] - med["parts_sum"],
        "peak_memory_mb": peak_memory_mb(device),
    }


def densify_case(trainer: Trainer, device: torch.device) -> dict:
    """One training step at a step that densifies (after a few that gather statistics), and its densify part."""
    d = trainer.cfg.densify
    trainer.step = (max(trainer.step, d.refine_start) // d.refine_every + 1) * d.refine_every - 2
    for _ in range(2):
        trainer.train_step(trainer.sample_batch())
    before = len(trainer.params["means"])
    synchronize(device)
    out = trainer.train_step(trainer.sample_batch())  # the step index divisible by refine_every
    synchronize(device)
    return {"step": trainer.step - 1, "gaussians_before": before, "gaussians_after": len(trainer.params["means"]),
            "densify_ms": 1000 * float(out["time_densify"])}  # fmt: skip


def synthesize_capture(out: Path, small: bool) -> Path:
    from data_tools.synth import SynthConfig, synthesize

    capture = out / ("capture_tiny" if small else "capture_full")
    if not (capture / "calibration").is_dir():
        shutil.rmtree(capture, ignore_errors=True)
        synthesize(SynthConfig(out=capture, preset="tiny" if small else "full", frames=None if small else 2))
    return capture


def build(args: argparse.Namespace, run: Path) -> Trainer:
    base = load_config(TrainConfig, CONFIGS / "nersemble.yaml")
    quick = load_config(TrainConfig, CONFIGS / "tiny.yaml").distill  # the field's size matters, not its fit
    distill = dataclasses.replace(quick, field=base.distill.field)
    cfg = dataclasses.replace(base, capture=args.capture, out=run, device=args.device, distill=distill,
                              height=None if args.small else base.height,
                              init=dataclasses.replace(base.init, mesh_resolution=32 if args.small else 96),
                              densify=dataclasses.replace(base.densify, max_gaussians=args.gaussians * 2))  # fmt: skip
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return build_trainer(cfg, hooks=[])


def table(result: dict) -> str:
    lines = [f"device {result['device']}, {result['gaussians']} Gaussians", "",
             f"{'render':<26} {'FPS':>7} {'frame ms':>10} {'deform ms':>10} {'raster ms':>10}"]  # fmt: skip
    for r in result["render"]:
        name = f"{r['size']} {'with' if r['cnn'] else 'no'} CNN"
        times = " ".join(f"{r[k]:>10.2f}" for k in ("frame_ms", "deform_ms", "rasterize_ms"))
        lines.append(f"{name:<26} {r['fps']:>7.1f} {times}")
    lines += ["", f"{'train step (ms)':<16} {'cams':>4} {'step':>7} " + " ".join(f"{p:>9}" for p in ("load", *PARTS))
              + f" {'other':>7} {'peak MB':>8}"]  # fmt: skip
    for r in result["train_step"]:
        parts = " ".join(f"{r['parts_ms'][p]:>9.2f}" for p in ("load", *PARTS))
        lines.append(f"{'':<16} {r['cameras']:>4} {r['step_ms']:>7.2f} {parts} {r['unaccounted_ms']:>7.2f} "
                     f"{r['peak_memory_mb']:>8.0f}")  # fmt: skip
    d = result["densify"]
    lines += ["", f"densify at step {d['step']}: {d['densify_ms']:.1f} ms ({d['gaussians_before']} -> "
              f"{d['gaussians_after']} Gaussians); kNN graph rebuild: {result['graph_ms']:.1f} ms"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--capture", type=Path, default=None)
    parser.add_argument("--gaussians", type=int, default=250_000)
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--small", action="store_true", help="CPU check: tiny capture, 3,000 Gaussians, 2 reps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu.json"))
    args = parser.parse_args()
    if args.small:
        args.gaussians, args.reps, args.warmup = min(args.gaussians, 3000), min(args.reps, 2), min(args.warmup, 1)
    work = args.out.parent / "gpu_work"
    args.capture = args.capture or synthesize_capture(work, args.small)
    device = torch.device(resolve_device(args.device))
    trainer = build(args, work / "run")
    gen = torch.Generator().manual_seed(0)
    trainer.replace_gaussians(grown(trainer.params, args.gaussians, gen))
    trainer.sync_timers = lambda: synchronize(device)
    reps, warmup = args.reps, args.warmup
    render = [render_case(trainer, s, cnn, device, reps, warmup) for s in (1, 2) for cnn in (False, True)]
    steps = [step_case(trainer, c, device, reps, warmup) for c in (1, 2, 4)]
    graph = median_ms(lambda: knn_graph(trainer.params["means"], trainer.cfg.knn), device, max(reps // 5, 1), 1)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "capture": str(args.capture),
        "image": f"{trainer.cache.width}x{trainer.cache.height}",
        "gaussians": args.gaussians,
        "reps": reps,
        "warmup": warmup,
        "render": render,
        "train_step": steps,
        "graph_ms": graph,
        "densify": densify_case(trainer, device),
    }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
