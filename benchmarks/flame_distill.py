"""Distillation on a FLAME head: the distilled forward field against FLAME's exact skinning.

FLAME is explicit, so its forward displacement is known exactly (npga/headmodel/flame.py); this distills a
field from the capture's tracked codes with the default `DistillConfig` (what `npga train` does) and measures
G(x, z) against it at canonical surface points, each under a tracked code. It also times the fixed-point
`backward` that distillation calls.

.venv/bin/python benchmarks/flame_distill.py --capture VHAP_EXPORT [--points 16384]
    [--out benchmarks/out/flame_distill.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from npga.commands.distill import tracked_codes
from npga.deform.distill import DistillConfig, distill
from npga.deform.sampling import sample_surface
from npga.headmodel import FlameHead, load_head_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, required=True, help="a FLAME-tracked capture (after npga prepare)")
    parser.add_argument("--points", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/flame_distill.json"))
    args = parser.parse_args()
    head = load_head_model(args.capture)
    if not isinstance(head, FlameHead):
        raise SystemExit(f"{args.capture}: the head model is not FLAME")
    codes = tracked_codes(args.capture)
    gen = torch.Generator().manual_seed(0)
    x, _ = sample_surface(head.canonical_mesh(), args.points, gen)
    z = codes[torch.randint(len(codes), (args.points,), generator=gen)]
    true = head.forward_displacement(x.double(), z.double()).float()  # (N, 3) exact
    start = time.perf_counter()
    head.backward(x + true, z)
    backward_s = time.perf_counter() - start
    g, report = distill(head, codes, DistillConfig())
    with torch.no_grad():
        err = (g(x, z) - true).norm(dim=-1)
    largest = float(true.norm(dim=-1).max())
    row = {
        "capture": str(args.capture),
        "vertices": len(head.canonical_mesh().vertices),
        "points": args.points,
        "codes": len(codes),
        "largest_displacement": largest,
        "median_error": float(err.median()),
        "p95_error": float(err.quantile(0.95)),
        "median_relative": float(err.median()) / largest,
        "p95_relative": float(err.quantile(0.95)) / largest,
        "cycle_residual_median": report["cycle_residual"]["median"],
        "distill_seconds": report["seconds"],
        "backward_points_per_second": args.points / backward_s,
    }
    print(f"{'verts':>6} {'codes':>6} {'largest':>9} {'median':>9} {'p95':>9} {'median %':>9} {'p95 %':>7} "
          f"{'distill s':>9} {'backward pts/s':>14}")  # fmt: skip
    print(f"{row['vertices']:>6} {len(codes):>6} {largest:>9.2e} {row['median_error']:>9.2e} {row['p95_error']:>9.2e} "
          f"{100 * row['median_relative']:>9.2f} {100 * row['p95_relative']:>7.2f} {row['distill_seconds']:>9.0f} "
          f"{row['backward_points_per_second']:>14.0f}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
