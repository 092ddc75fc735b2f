"""Time to generate a synthetic capture preset (default: the demo preset that `make demo` makes).

.venv/bin/python benchmarks/synth.py [--preset demo] [--jobs N] [--keep DIR] [--out benchmarks/out/synth.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from data_tools.synth import PRESETS, SynthConfig, render_processes, synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--jobs", type=int, default=0, help="SynthConfig.jobs (0: one process per core)")
    parser.add_argument("--keep", type=Path, default=None, help="write the capture here and keep it")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/synth.json"))
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = synthesize(SynthConfig(out=args.keep or Path(tmp) / "capture", preset=args.preset, jobs=args.jobs))
        seconds = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
    n_views = len(preset.sequences) * preset.frames * 16
    row = {
        "preset": args.preset,
        "seconds": seconds,
        "views": n_views,
        "ms_per_view": 1000 * seconds / n_views,
        "height": preset.height,
        "size_mb": size_mb,
        "jobs": render_processes(args.jobs),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }
    print(f"{'preset':8} {'jobs':>4} {'views':>6} {'height':>6} {'seconds':>8} {'ms/view':>8} {'MB':>6}")
    print(
        f"{args.preset:8} {row['jobs']:>4} {n_views:>6} {preset.height:>6} {seconds:>8.1f} "
        f"{row['ms_per_view']:>8.1f} {size_mb:>6.1f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
