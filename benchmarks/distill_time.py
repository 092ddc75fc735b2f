"""Distillation time on each available device, with the same settings and seed (the CPU, and CUDA when present).

`npga train` distills on its training device; this measures what that buys. The cycle residual is reported
too, so a faster device that fits worse would show.

.venv/bin/python benchmarks/distill_time.py [--capture data/demo] [--config configs/demo.yaml]
    [--out benchmarks/out/distill_time.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from npga.commands.distill import tracked_codes
from npga.config import load_config
from npga.deform.distill import distill
from npga.headmodel import load_head_model
from npga.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/distill_time.json"))
    args = parser.parse_args()
    cfg = load_config(TrainConfig, args.config).distill
    head = load_head_model(args.capture)
    codes = tracked_codes(args.capture)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        _, report = distill(head, codes, cfg, device=device)
        rows.append(
            {
                "device": device,
                "name": torch.cuda.get_device_name() if device == "cuda" else "cpu",
                "threads": torch.get_num_threads(),
                "seconds": report["seconds"],
                "cycle_residual_median": report["cycle_residual"]["median"],
                "median_relative": report["median_relative"],
            }
        )
    print(f"{'device':<8} {'seconds':>8} {'residual':>10} {'% of largest':>13}")
    for r in rows:
        print(
            f"{r['device']:<8} {r['seconds']:>8.1f} {r['cycle_residual_median']:>10.2e} "
            f"{100 * r['median_relative']:>13.2f}"
        )
    if len(rows) == 2:
        print(f"cuda is {rows[0]['seconds'] / rows[1]['seconds']:.1f}x faster than the cpu")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"capture": str(args.capture), "config": str(args.config), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
