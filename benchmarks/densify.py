"""Densification strategies compared on one preset: gsplat's DefaultStrategy (capped) vs 3DGS-MCMC.

Both rows train with the same preset, seed, schedule and distilled field; MCMC adds gsplat's MCMC
regularisers (opacity and scale, 0.01 each). Scored on the held-out sequence and cameras.

.venv/bin/python benchmarks/densify.py [--capture data/demo] [--config configs/demo.yaml] [--every 2]
    [--out benchmarks/out/densify]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from ablation import train_and_score

from npga.config import load_config
from npga.runs import RunLayout
from npga.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--every", type=int, default=2, help="score every n-th frame")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/densify"))
    args = parser.parse_args()
    base = dataclasses.replace(load_config(TrainConfig, args.config), capture=args.capture)
    mcmc = dataclasses.replace(
        base,
        densify=dataclasses.replace(base.densify, kind="mcmc"),
        loss=dataclasses.replace(base.loss, opacity_reg=0.01, scale_reg=0.01),
    )
    results, shared = [], None
    for name, cfg in (("default", base), ("mcmc", mcmc)):
        run = args.out / name
        results.append(train_and_score(name, dataclasses.replace(cfg, out=run), args.every, shared))
        shared = shared or RunLayout(run)
    print(f"\n{'strategy':<10} {'seq PSNR':>9} {'seq SSIM':>9} {'cam PSNR':>9} {'Gaussians':>10} {'train s':>8}")
    for r in results:
        s, c = r["heldout_sequences"], r["heldout_cameras"]
        print(
            f"{r['row']:<10} {s['psnr']:>9.2f} {s['ssim']:>9.4f} {c['psnr']:>9.2f} {r['n_gaussians']:>10} "
            f"{r['train_seconds']:>8.0f}"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"capture": str(args.capture), "config": str(args.config), "every": args.every, "rows": results}
    (args.out / "densify.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'densify.json'}")


if __name__ == "__main__":
    main()
