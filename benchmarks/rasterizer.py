"""Rasterizer speed and memory: forward and forward+backward per backend, N x image size.

    .venv/bin/python benchmarks/rasterizer.py [--out benchmarks/out/rasterizer.json] [--sizes 128 256 512]

The scene is head-like: N Gaussians on an ellipsoidal shell of about 0.2 units (a head) seen from 1 unit,
filling the view, sized to cover the surface, mostly opaque. Each case runs in a fresh process so the
peak resident memory it reports (CPU) belongs to that case alone; on CUDA it reports the allocator's peak.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def head_scene(n: int, size: int, device: str) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = d * torch.tensor([0.08, 0.11, 0.09])  # (N, 3) on an ellipsoid ~0.2 tall
    area = 4 * math.pi * 0.09**2
    s = math.sqrt(area / n)  # spacing that covers the surface
    scales = torch.tensor([s, s, s * 0.1]).expand(n, 3) * torch.exp(torch.randn(n, 3, generator=g) * 0.2)
    quats = torch.randn(n, 4, generator=g)
    opacities = 0.6 + 0.4 * torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    from npga.cameras import look_at

    viewmats = torch.tensor(look_at([0.0, 0.0, 1.0], [0, 0, 0]), dtype=torch.float32)[None]
    f = size * 4.0  # the head fills about 90% of the image
    Ks = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])[None]
    return tuple(t.to(device) for t in (means, quats, scales, opacities, colors, viewmats, Ks))


def run_case(n: int, size: int, backend: str, repeats: int) -> dict:
    from npga.render import rasterize

    device = "cuda" if backend == "gsplat" else "cpu"
    scene = head_scene(n, size, device)
    leaves = [t.clone().requires_grad_() for t in scene[:5]]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fwd, full = [], []
    for i in range(repeats + 1):  # the first run warms up
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            rasterize(*leaves, *scene[5:], size, size, backend=backend)
        sync()
        t1 = time.perf_counter()
        img, alpha, _ = rasterize(*leaves, *scene[5:], size, size, backend=backend)
        (img.sum() + alpha.sum()).backward()
        sync()
        t2 = time.perf_counter()
        if i:
            fwd.append(t1 - t0)
            full.append(t2 - t1)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return {"backend": backend, "n": n, "size": size, "forward_s": min(fwd), "forward_backward_s": min(full),
            "peak_mb": peak_mb}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/rasterizer.json"))
    parser.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", nargs=3, help=argparse.SUPPRESS)  # internal: n size backend
    args = parser.parse_args()
    if args.case:
        n, size, backend = int(args.case[0]), int(args.case[1]), args.case[2]
        print(json.dumps(run_case(n, size, backend, args.repeats)))
        return
    backends = ["torch"] + (["gsplat"] if torch.cuda.is_available() else [])
    rows = []
    print(f"{'backend':8} {'N':>7} {'size':>5} {'fwd s':>8} {'fwd+bwd s':>10} {'peak MB':>8}")
    for backend in backends:
        for n in args.n:
            for size in args.sizes:
                cmd = [sys.executable, __file__, "--case", str(n), str(size), backend, "--repeats", str(args.repeats)]
                out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
                if out.returncode != 0:
                    row = {"backend": backend, "n": n, "size": size, "error": out.stderr.strip().splitlines()[-1]}
                    print(f"{backend:8} {n:>7} {size:>5} failed: {row['error']}")
                else:
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    print(f"{backend:8} {n:>7} {size:>5} {row['forward_s']:>8.3f} {row['forward_backward_s']:>10.3f} "
                          f"{row['peak_mb']:>8.0f}")  # fmt: skip
                rows.append(row)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": meta, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
