"""What each part of NPGA buys: one training run per row, scored on the held-out sequence (new expressions).

Rows add one part at a time: static canonical Gaussians (head pose only); + the distilled coarse field;
+ the detail MLP; + per-Gaussian latent features; + the Laplacian regularisers (the full CPU model);
+ the screen-space CNN. Every row trains with the same preset, seed and schedule; the distilled field is
computed once and shared.

.venv/bin/python benchmarks/ablation.py [--capture data/demo] [--config configs/demo.yaml] [--steps N]
    [--every 2] [--out benchmarks/out/ablation]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

from npga.commands.eval import Config as EvalConfig
from npga.commands.eval import main as run_eval
from npga.config import load_config
from npga.runs import RunLayout
from npga.train import ProgressBar, TrainConfig, build_trainer


def rows(base: TrainConfig) -> dict[str, TrainConfig]:
    """The ablation's configs, each the previous one plus one part."""
    no_laplacian = dataclasses.replace(base.loss, laplacian_features=0.0, laplacian_dynamics=0.0)
    no_latent = dataclasses.replace(base.init, latent_dim=0)
    static = dataclasses.replace(base, use_coarse=False, use_detail=False, init=no_latent, loss=no_laplacian,
                                 cnn=dataclasses.replace(base.cnn, enabled=False))  # fmt: skip
    coarse = dataclasses.replace(static, use_coarse=True)
    detail = dataclasses.replace(coarse, use_detail=True)
    latent = dataclasses.replace(detail, init=base.init if base.init.latent_dim else dataclasses.replace(
        base.init, latent_dim=16))  # fmt: skip
    laplacian = dataclasses.replace(latent, loss=base.loss)
    cnn = dataclasses.replace(laplacian, cnn=dataclasses.replace(base.cnn, enabled=True))
    return {
        "static": static,
        "+ coarse field": coarse,
        "+ detail MLP": detail,
        "+ latent features": latent,
        "+ Laplacian": laplacian,
        "+ CNN": cnn,
    }


def train_and_score(name: str, cfg: TrainConfig, every: int, shared_field: RunLayout | None = None) -> dict:
    """Train `cfg` into a fresh `cfg.out` (reusing a distilled field when given), then score its held-out
    sequence and cameras; returns the table row."""
    run = RunLayout(cfg.out)
    shutil.rmtree(run.root, ignore_errors=True)
    if cfg.use_coarse and shared_field is not None:
        run.root.mkdir(parents=True)
        shutil.copy(shared_field.distill, run.distill)
        shutil.copy(shared_field.distill_report, run.distill_report)
    print(f"== {name}")
    t0 = time.perf_counter()
    trainer = build_trainer(cfg)
    trainer.hooks.insert(0, ProgressBar(0, cfg.steps))
    trainer.fit()
    seconds = time.perf_counter() - t0
    metrics = run_eval(EvalConfig(run.root, split=("heldout_sequences", "heldout_cameras"), every=every))
    seq, cams = metrics["heldout_sequences"], metrics["heldout_cameras"]
    return {
        "row": name, "run": str(run.root), "steps": cfg.steps, "train_seconds": seconds,
        "n_gaussians": len(trainer.params["means"]),
        "heldout_sequences": {k: seq[k] for k in ("psnr", "ssim", "lpips", "n_frames")},
        "heldout_cameras": {k: cams[k] for k in ("psnr", "ssim", "lpips", "n_frames")},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    parser.add_argument("--every", type=int, default=2, help="score every n-th frame")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/ablation"))
    args = parser.parse_args()
    base = dataclasses.replace(load_config(TrainConfig, args.config), capture=args.capture)
    if args.steps is not None:
        base = dataclasses.replace(base, steps=args.steps)

    results = []
    shared_field = None
    for i, (name, cfg) in enumerate(rows(base).items()):
        run = args.out / f"{i}_{name.strip('+ ').replace(' ', '_')}"
        results.append(train_and_score(name, dataclasses.replace(cfg, out=run), args.every, shared_field))
        if cfg.use_coarse and shared_field is None:
            shared_field = RunLayout(run)

    heads = ("seq PSNR", "seq SSIM", "cam PSNR", "cam SSIM")
    print(f"\n{'row':<20} " + " ".join(f"{h:>9}" for h in heads) + f" {'Gaussians':>10} {'train s':>8}")
    for r in results:
        s, c = r["heldout_sequences"], r["heldout_cameras"]
        print(f"{r['row']:<20} {s['psnr']:>9.2f} {s['ssim']:>9.4f} {c['psnr']:>9.2f} {c['ssim']:>9.4f} "
              f"{r['n_gaussians']:>10} {r['train_seconds']:>8.0f}")  # fmt: skip
    gain = results[-2]["heldout_sequences"]["psnr"] - results[0]["heldout_sequences"]["psnr"]
    print(f"full CPU model (+ Laplacian) vs static on the held-out sequence: {gain:+.2f} dB")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"capture": str(args.capture), "config": str(args.config), "every": args.every, "rows": results}
    (args.out / "ablation.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'ablation.json'}")


if __name__ == "__main__":
    main()
