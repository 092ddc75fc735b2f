"""How well a distilled forward field matches the synthetic head's exact forward displacement.

Only the synthetic head knows its forward field exactly, so this measures the distillation itself: the
error of G(x, z) against the true displacement at canonical surface points x, with codes z from every
tracked frame of the capture (held-out sequences included: new expressions).

.venv/bin/python benchmarks/distill_error.py --run runs/demo [--points 16384]
    [--out benchmarks/out/distill_error.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from npga.commands.distill import tracked_codes
from npga.config import load_config
from npga.deform import load_distilled
from npga.deform.sampling import sample_surface
from npga.headmodel import load_head_model
from npga.runs import RunLayout
from npga.train import TrainConfig


def field_error(predicted: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """Median and 95th percentile of the error |predicted - true| of displacements (N, 3), absolute and
    relative to the largest true displacement."""
    err = (predicted - true).norm(dim=-1)
    largest = float(true.norm(dim=-1).max())
    median, p95 = float(err.median()), float(err.quantile(0.95))
    return {
        "largest_displacement": largest,
        "median_error": median,
        "p95_error": p95,
        "median_relative": median / largest,
        "p95_relative": p95 / largest,
    }


def print_row(row: dict, extra: dict[str, str] | None = None) -> None:
    """One table row: the `field_error` columns after `row["codes"]`, then `extra` {column title: key} (rounded)."""
    extra = extra or {}
    titles = ["codes", "largest", "median", "p95", "median %", "p95 %", *extra]
    cells = [
        f"{row['codes']:>6}",
        f"{row['largest_displacement']:>9.2e}",
        f"{row['median_error']:>9.2e}",
        f"{row['p95_error']:>9.2e}",
        f"{100 * row['median_relative']:>9.2f}",
        f"{100 * row['p95_relative']:>9.2f}",
        *(f"{row[key]:>{max(len(t), 9)}.0f}" for t, key in extra.items()),
    ]
    widths = [6, 9, 9, 9, 9, 9, *(max(len(t), 9) for t in extra)]
    print(" ".join(f"{t:>{w}}" for t, w in zip(titles, widths, strict=True)))
    print(" ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("runs/demo"))
    parser.add_argument("--points", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/distill_error.json"))
    args = parser.parse_args()
    run = RunLayout(args.run)
    cfg = load_config(TrainConfig, run.config)
    head = load_head_model(cfg.capture)
    g = load_distilled(run.distill)
    codes = tracked_codes(cfg.capture)
    gen = torch.Generator().manual_seed(0)
    x, _ = sample_surface(head.canonical_mesh(96), args.points, gen)
    z = codes[torch.randint(len(codes), (args.points,), generator=gen)]
    true = head.forward_displacement(x, z)  # (N, 3) exact
    with torch.no_grad():
        row = {"run": str(args.run), "points": args.points, "codes": len(codes), **field_error(g(x, z), true)}
    print_row(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
