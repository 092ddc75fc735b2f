"""Rasterizer speed and memory: forward and forward+backward per backend, N x image size.

    .venv/bin/python benchmarks/rasterizer.py [--out benchmarks/out/rasterizer.json] [--n 1000 10000] [--sizes 128]

The scene is a head avatar seen from 1 unit: N Gaussians on an ellipsoidal shell about 0.2 units tall, focal
length 2x the image width (the head spans ~40% of it), scales exp(U(-6, -4)), opacities U(0.3, 1), RGB.
Each case runs in a fresh process, so the peak resident memory it reports (CPU: growth of the process's
maximum RSS over the case) is its own; on CUDA it reports the allocator's peak. Times are the best of
--repeats runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def head_scene(n: int, size: int, device: str) -> tuple[torch.Tensor, ...]:
    """means, quats, scales, opacities, colors (leaves) and viewmats, Ks of one camera, float32."""
    from npga.cameras import look_at

    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    means = directions * torch.tensor([0.08, 0.10, 0.09])  # (N, 3)
    scales = torch.exp(torch.empty(n, 3).uniform_(-6.0, -4.0, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.empty(n).uniform_(0.3, 1.0, generator=g)
    colors = torch.rand(n, 3, generator=g)
    viewmats = torch.tensor(look_at([0.0, 0.0, 1.0], [0, 0, 0]), dtype=torch.float32)[None]
    f = 2.0 * size
    Ks = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])[None]
    return tuple(t.to(device) for t in (means, quats, scales, opacities, colors, viewmats, Ks))


def run_case(n: int, size: int, backend: str, repeats: int) -> dict:
    """Time and peak memory of one (backend, N, size) case, in this process."""
    from npga.render import rasterize

    device = "cuda" if backend == "gsplat" else "cpu"
    scene = head_scene(n, size, device)
    leaves = [t.clone().requires_grad_() for t in scene[:5]]
    cameras = scene[5:]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    forward, full = [], []
    for _ in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            rasterize(*leaves, *cameras, size, size, backend=backend)
        sync()
        t1 = time.perf_counter()
        img, alpha, _ = rasterize(*leaves, *cameras, size, size, backend=backend)
        (img.sum() + alpha.sum()).backward()
        sync()
        forward.append(t1 - t0)
        full.append(time.perf_counter() - t1)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024  # KiB on Linux
    return {
        "backend": backend,
        "device": device,
        "n": n,
        "size": size,
        "forward_s": min(forward[1:]),
        "forward_backward_s": min(full[1:]),
        "peak_mb": peak_mb,
    }


def machine() -> dict:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
    }


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
    print(f"{'backend':8} {'N':>7} {'size':>5} {'fwd s':>8} {'fwd+bwd s':>10} {'peak MB':>8}", flush=True)
    for backend in backends:
        for n in args.n:
            for size in args.sizes:
                cmd = [sys.executable, __file__, "--case", str(n), str(size), backend, "--repeats", str(args.repeats)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    lines = out.stderr.strip().splitlines() or ["(no output)"]
                    row = {"backend": backend, "n": n, "size": size, "error": lines[-1]}
                    print(f"{backend:8} {n:>7} {size:>5} failed: {row['error']}", flush=True)
                else:
                    row = json.loads(out.stdout.strip().splitlines()[-1])
                    print(
                        f"{backend:8} {n:>7} {size:>5} {row['forward_s']:>8.3f} {row['forward_backward_s']:>10.3f} "
                        f"{row['peak_mb']:>8.0f}",
                        flush=True,
                    )
                rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
