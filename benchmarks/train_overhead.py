"""What share of a training run's wall time its steps take: the same run with `npga train`'s hooks and without.

Builds the preset's trainer (distilling into the output folder once), then trains it twice from the same
start: once as `npga train` does (progress bar, JSONL log and curves, validation, periodic checkpoints) and
once with no hooks at all (steps and the final checkpoint only). The share of the steps is the second
wall time over the first; on a GPU every host-side stall of the hooks shows up as the difference.

.venv/bin/python benchmarks/train_overhead.py [--config configs/demo.yaml] [--capture data/demo] [--device auto]
    [--steps N] [--out benchmarks/out/train_overhead.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from npga.config import load_config, resolve_device
from npga.train import ProgressBar, TrainConfig, build_trainer


def timed_fit(cfg: TrainConfig, hooks: bool) -> tuple[float, float, int]:
    """Build and train one run: (build seconds, fit seconds, Gaussians at the end)."""
    start = time.perf_counter()
    trainer = build_trainer(cfg, hooks=None if hooks else [])
    if hooks:
        trainer.hooks.insert(0, ProgressBar(trainer.step, cfg.total_steps))
    built = time.perf_counter()
    trainer.fit()
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return built - start, time.perf_counter() - built, len(trainer.params["means"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/train_overhead.json"))
    args = parser.parse_args()
    work = args.out.parent / "train_overhead_work"
    shutil.rmtree(work, ignore_errors=True)
    cfg = load_config(TrainConfig, args.config)
    cfg = dataclasses.replace(
        cfg, capture=args.capture, device=args.device, out=work / "hooks", steps=args.steps or cfg.steps
    )
    build_hooks, fit_hooks, n_hooks = timed_fit(cfg, hooks=True)
    (work / "bare").mkdir(parents=True)
    shutil.copy(work / "hooks" / "distill.pt", work / "bare" / "distill.pt")  # distilled once, as a resumed run
    _, fit_bare, n_bare = timed_fit(dataclasses.replace(cfg, out=work / "bare"), hooks=False)
    device = torch.device(resolve_device(args.device))
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": str(args.config),
        "capture": str(args.capture),
        "steps": cfg.steps,
        "build_s": build_hooks,
        "fit_with_hooks_s": fit_hooks,
        "fit_steps_only_s": fit_bare,
        "steps_share": fit_bare / fit_hooks,
        "gaussians": {"with_hooks": n_hooks, "steps_only": n_bare},
    }
    print(
        f"{result['device']}: {cfg.steps} steps of {args.config}: build (distill, cache) {build_hooks:.1f} s, "
        f"training {fit_hooks:.1f} s with the hooks, {fit_bare:.1f} s without: the steps are "
        f"{100 * result['steps_share']:.0f}% of the training's wall time"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
