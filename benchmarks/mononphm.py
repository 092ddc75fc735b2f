"""MonoNPHM as the head model: evaluation speed, marching cubes and distillation, on each device asked for.

The networks have the official dimensions (scripts/configs/mononphm.yaml) and random weights: the speed of an
MLP does not depend on its weights. The geometry MLPs' output biases are shifted so that the SDF crosses zero
inside the bounds (marching cubes then finds a surface, a random blob). Rows:
- `sdf+backward`: canonical SDF of N points plus the backward deformation of N points (one code each), no grad;
- `sdf grad`: SDF and its gradient by autograd (what normals and a tracker need);
- `mesh R`: `canonical_mesh(R)`: R^3 SDF values slab by slab, marching cubes, normals of the vertices;
- `distill`: `npga.deform.distill` with MonoNPHM as the head model (the demo preset's settings unless --steps).

.venv/bin/python benchmarks/mononphm.py [--devices cpu cuda] [--points 1000000] [--resolutions 128 256]
    [--out benchmarks/out/mononphm.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from npga.config import from_dict
from npga.deform.distill import DistillConfig, distill
from npga.headmodel.mononphm import ExpressionNetwork, IdentityNetwork, MonoNPHM, MonoNPHMDims


def random_head(seed: int = 0) -> MonoNPHM:
    """Official dimensions, random weights and codes, anchors on an ellipsoid, SDF shifted to cross zero."""
    torch.manual_seed(seed)
    dims = MonoNPHMDims()
    identity, expression = IdentityNetwork(dims), ExpressionNetwork(dims)
    template = torch.nn.functional.normalize(torch.randn(dims.n_anchors, 3), dim=-1) * torch.tensor([0.4, 0.5, 0.5])
    z_geo, z_app = 0.05 * torch.randn(dims.code_dim), 0.05 * torch.randn(dims.code_dim)
    head = MonoNPHM(identity, expression, template, z_geo, z_app)
    lo, hi = head.bounds
    with torch.no_grad():
        probe = head.sdf(lo + (hi - lo) * torch.rand(4096, 3))
        for member in identity.deepSDFensemble.layers:
            member.layers[-1].bias -= probe.median()
    return head


def timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_memory_gb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def bench_device(head: MonoNPHM, device: str, args: argparse.Namespace) -> list[dict]:
    """The rows of one device (module docstring)."""
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    gen = torch.Generator().manual_seed(0)
    lo, hi = head.bounds
    x = (lo + (hi - lo) * torch.rand(args.points, 3, generator=gen)).to(device)  # (N, 3)
    z = torch.randn(args.points, head.expression_dim, generator=gen).to(device)  # (N, D)
    head.sdf(x[:1000])  # moves the networks, warms up kernels
    rows: list[dict] = []

    def add(what: str, seconds: float, **extra: object) -> None:
        rows.append(
            {
                "device": device,
                "name": name,
                "what": what,
                "seconds": seconds,
                "peak_memory_gb": peak_memory_gb(device),
                **extra,
            }
        )
        print(f"{device:<5} {what:<24} {seconds:>9.2f} s  peak {rows[-1]['peak_memory_gb']:.2f} GB", flush=True)

    if "eval" not in args.skip:
        with torch.no_grad():
            add(f"sdf+backward {args.points}", timed(lambda: (head.sdf(x), head.backward(x, z)), device))
        add(f"sdf grad {args.points}", timed(lambda: head.normals(x), device))
    if "mesh" not in args.skip:
        for res in args.resolutions:
            start = time.perf_counter()
            mesh = head.canonical_mesh(res, device=device)
            add(f"mesh {res}", time.perf_counter() - start, vertices=len(mesh.vertices))
    if "distill" not in args.skip:
        preset = yaml.safe_load(args.config.read_text()) or {}
        cfg = from_dict(DistillConfig, preset.get("distill", {}), str(args.config))
        if args.steps is not None:
            cfg = dataclasses.replace(cfg, steps=args.steps)
        codes = 0.5 * torch.randn(200, head.expression_dim, generator=gen)
        _, report = distill(head, codes, cfg, device=device)
        add(
            f"distill {cfg.rounds}x{cfg.steps}",
            report["seconds"],
            pool_size=cfg.pool_size,
            mesh_resolution=cfg.mesh_resolution,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="distillation steps per round (default: the preset's)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["eval", "mesh", "distill"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/mononphm.json"))
    args = parser.parse_args()
    head = random_head()
    rows = [row for device in args.devices for row in bench_device(head, device, args)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"points": args.points, "config": str(args.config), "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
