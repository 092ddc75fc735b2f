"""Training iterations per second of a preset, with the time of each part of a step.

Builds the preset's trainer (distilling once into the output folder), warms up, then times `--steps` steps
that include densifications (`--densify-every`), and reports the mean seconds per step of deform,
rasterize, loss, backward, optimiser and densify (incl. kNN graph rebuilds) as measured inside
`Trainer.train_step`.

.venv/bin/python benchmarks/train_speed.py [--capture data/demo] [--config configs/demo.yaml] [--steps 100]
    [--out benchmarks/out/train_speed.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from npga.config import load_config
from npga.train import TrainConfig, build_trainer

PARTS = ("deform", "rasterize", "loss", "backward", "optimizer", "densify")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--densify-every", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/train_speed.json"))
    args = parser.parse_args()
    base = load_config(TrainConfig, args.config)
    run = args.out.parent / "train_speed_run"
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # keeps the distilled field for the next time
    densify = dataclasses.replace(
        base.densify, refine_start=args.warmup, refine_every=args.densify_every, refine_stop=args.warmup + args.steps
    )
    cfg = dataclasses.replace(base, capture=args.capture, out=run, steps=args.warmup + args.steps, densify=densify)
    trainer = build_trainer(cfg, hooks=[])
    for _ in range(args.warmup):
        trainer.train_step(trainer.sample_batch())
    n0 = len(trainer.params["means"])
    records = []
    t0 = time.perf_counter()
    for _ in range(args.steps):
        records.append(trainer.train_step(trainer.sample_batch()))
    seconds = time.perf_counter() - t0
    parts = {p: float(np.mean([r[f"time_{p}"] for r in records])) for p in PARTS}
    row = {
        "config": str(args.config),
        "capture": str(args.capture),
        "image": f"{trainer.cache.width}x{trainer.cache.height}",
        "cameras_per_step": cfg.cameras_per_step,
        "steps": args.steps,
        "it_s": args.steps / seconds,
        "gaussians_start": n0,
        "gaussians_end": len(trainer.params["means"]),
        "seconds_per_step": parts,
        "device": str(trainer.device),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }
    total = sum(parts.values())
    print(
        f"{cfg.steps - args.warmup} steps at {row['image']}, {n0} -> {row['gaussians_end']} Gaussians on "
        f"{row['device']}: {row['it_s']:.2f} it/s"
    )
    print(f"{'part':<10} {'ms/step':>8} {'share':>6}")
    for p, s in parts.items():
        print(f"{p:<10} {1000 * s:>8.1f} {100 * s / total:>5.1f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
