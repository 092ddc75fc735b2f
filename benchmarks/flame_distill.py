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
from distill_error import field_error, print_row  # the sibling script: one way to score a field

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
        error = field_error(g(x, z), true)
    row = {
        "capture": str(args.capture),
        "vertices": len(head.canonical_mesh().vertices),
        "points": args.points,
        "codes": len(codes),
        **error,
        "cycle_residual_median": report["cycle_residual"]["median"],
        "distill_seconds": report["seconds"],
        "backward_points_per_second": args.points / backward_s,
    }
    print_row(
        row, {"vertices": "vertices", "distill s": "distill_seconds", "backward pts/s": "backward_points_per_second"}
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
