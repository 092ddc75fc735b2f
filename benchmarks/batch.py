"""Frames per step (`--frames-per-step K`): time per step and images per second for K = 1, 2, 4 on one device,
and the quality at equal images seen (K = 4 for a quarter of the steps against K = 1).

Speed: for each K a trainer of the preset, `--warmup` steps, then `--speed-steps` steps timed around
`train_step` with its batch loading (synchronised on CUDA); densification gathers its statistics but never
refines, so every K times the same Gaussians. Quality: one run per row, each seeing `--steps` frames on the
preset's schedule stretched to them (`with_steps`; K = 4: `--steps` / 4 steps on the same schedule, with and
without `--lr-batch-scaling sqrt`), scored by `npga eval` on the held-out cameras and the held-out sequence. The
runs share the first one's distilled field (or `--field`'s).

Started by torchrun, the ranks time the speed part together (each K a multiple of the ranks; rank 0 prints and
writes the JSON) and the quality part is left out:

.venv/bin/python benchmarks/batch.py [--capture data/demo] [--config configs/demo.yaml] [--steps 600]
    [--every 4] [--device auto] [--field DISTILL.pt] [--out benchmarks/out/batch.json]
torchrun --nproc-per-node 2 benchmarks/batch.py --device cpu --out benchmarks/out/batch_ranks2.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import torch

from npga.commands.common import RuntimeOptions
from npga.commands.eval import Config as EvalConfig
from npga.commands.eval import main as run_eval
from npga.config import load_config
from npga.runs import RunLayout
from npga.train import ProgressBar, TrainConfig, build_trainer, with_steps
from npga.train.distributed import World, main_first, process_group

SPEED_K = (1, 2, 4)
QUALITY = (("K=1", 1, "none"), ("K=4", 4, "none"), ("K=4, lr x sqrt(4)", 4, "sqrt"))


def fresh_run(out: Path, field: Path | None) -> Path:
    """An empty run folder, holding a copy of `field` (a distilled field) when given."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if field is not None:
        shutil.copy(field, RunLayout(out).distill)
    return out


def speed(
    base: TrainConfig, k: int, args: argparse.Namespace, field: Path | None, world: World | None
) -> tuple[dict, Path]:
    """Seconds per step and images per second at `k` frames per step (on all of `world`'s ranks together)."""
    steps = args.warmup + args.speed_steps
    out = args.out.parent / "batch_runs" / f"speed_k{k}"
    with main_first(world):
        if world is None or world.is_main:
            fresh_run(out, field)
    cfg = dataclasses.replace(
        base,
        out=out,
        frames_per_step=k,
        steps=steps * k,  # the config's steps are frames: `steps` steps of k frames
        val_every=0,
        densify=dataclasses.replace(base.densify, refine_start=10**9, refine_stop=10**9 + 1),  # gathers, never refines
    )
    trainer = build_trainer(cfg, hooks=[], world=world)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        trainer.train_step(trainer.sample_step())
    sync()
    t0 = time.perf_counter()
    for _ in range(args.speed_steps):
        trainer.train_step(trainer.sample_step())
    sync()
    seconds = (time.perf_counter() - t0) / args.speed_steps
    images = k * min(cfg.cameras_per_step, len(trainer.train_serials))
    row = {
        "frames_per_step": k,
        "ranks": 1 if world is None else world.size,
        "seconds_per_step": seconds,
        "images_per_second": images / seconds,
        "gaussians": len(trainer.params["means"]),
        "device": str(trainer.device),
    }
    return row, RunLayout(out).distill


def quality(base: TrainConfig, name: str, k: int, scaling: str, args: argparse.Namespace, field: Path) -> dict:
    """One run seeing `args.steps` frames at `k` per step, scored on the held-out views."""
    slug = name.replace("=", "").replace(", ", "_").replace(" ", "").replace("(", "").replace(")", "")
    out = fresh_run(args.out.parent / "batch_runs" / slug, field)
    cfg = dataclasses.replace(with_steps(base, args.steps), out=out, frames_per_step=k, lr_batch_scaling=scaling)
    print(f"== {name}")
    t0 = time.perf_counter()
    trainer = build_trainer(cfg)
    trainer.hooks.insert(0, ProgressBar(0, trainer.cfg.total_steps))
    trainer.fit()
    seconds = time.perf_counter() - t0
    runtime = RuntimeOptions(device=cfg.device, precision="float32")
    metrics = run_eval(
        EvalConfig(out, split=("heldout_sequences", "heldout_cameras"), every=args.every, runtime=runtime)
    )
    return {
        "row": name,
        "frames_per_step": k,
        "lr_batch_scaling": scaling,
        "frames_seen": trainer.cfg.steps * k,
        "steps": trainer.cfg.steps,
        "train_seconds": seconds,
        "n_gaussians": len(trainer.params["means"]),
        **{
            split: {m: metrics[split][m] for m in ("psnr", "ssim")}
            for split in ("heldout_cameras", "heldout_sequences")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=600, help="frames each quality run sees")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--speed-steps", type=int, default=20)
    parser.add_argument("--every", type=int, default=4, help="score every n-th frame")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--field", type=Path, help="a distilled field of this capture and preset (skips distilling)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/batch.json"))
    args = parser.parse_args()
    base = dataclasses.replace(load_config(TrainConfig, args.config), capture=args.capture, device=args.device)
    with process_group(args.device) as world:
        ranks = 1 if world is None else world.size
        field = args.field
        speeds = []
        for k in [k for k in SPEED_K if k % ranks == 0]:
            row, field = speed(base, k, args, field, world)
            speeds.append(row)
            if world is None or world.is_main:
                print(f"K={k}: {1000 * row['seconds_per_step']:.0f} ms/step, {row['images_per_second']:.2f} images/s")
        if world is not None and not world.is_main:
            return
    rows = [] if args.skip_quality or world is not None else [quality(base, *q, args, field) for q in QUALITY]

    first = speeds[0]
    print(f"\nspeed ({first['device']}, {ranks} rank(s), {first['gaussians']} Gaussians, not densified)")
    print(f"{'K':>3} {'ms/step':>9} {'images/s':>9} {'vs K=' + str(first['frames_per_step']):>7}")
    for r in speeds:
        gain = r["images_per_second"] / first["images_per_second"]
        ms, images = 1000 * r["seconds_per_step"], r["images_per_second"]
        print(f"{r['frames_per_step']:>3} {ms:>9.1f} {images:>9.2f} {gain:>6.2f}x")
    if rows:
        print(f"\nquality at {args.steps} frames seen (PSNR / SSIM, every {args.every}th frame)")
        print(f"{'row':<20} {'steps':>6} {'train s':>8} {'Gaussians':>9} {'held-out cams':>15} {'held-out seq':>15}")
        for r in rows:
            cams, seq = r["heldout_cameras"], r["heldout_sequences"]
            print(
                f"{r['row']:<20} {r['steps']:>6} {r['train_seconds']:>8.0f} {r['n_gaussians']:>9} "
                f"{cams['psnr']:>7.2f} / {cams['ssim']:.3f} {seq['psnr']:>7.2f} / {seq['ssim']:.3f}"
            )
    result = {
        "config": str(args.config),
        "capture": str(args.capture),
        "threads": torch.get_num_threads(),
        "ranks": ranks,
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "speed": speeds,
        "quality": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\n{args.out}")


if __name__ == "__main__":
    main()
