"""Paper-scale speed: render FPS and the training step of an avatar grown to 250k Gaussians.

Builds the nersemble preset's avatar (32-d latents, detail MLP 128 x 3, screen-space CNN, the distilled field's
architecture) on a capture, grows it to `--gaussians` by copying its Gaussians with a little jitter (a grown
avatar's size, not a trained one's looks: speed depends on the numbers, not the values), and measures, as
medians over `--reps` repetitions after `--warmup`, with the device synchronised around each timed part:

- render: deform + rasterize at the capture's size and at twice it, with and without the CNN, with the
  networks in each precision (`npga.avatar.precision`: float32, tf32 on CUDA, bfloat16) and the picture's
  PSNR against float32; deform and rasterize alone; a still expression (the networks' output kept, only the
  head pose and the rasterizer per frame: the viewer's path while the camera or head moves);
- `express` (the networks and the glue between them) under torch.compile (CUDA; `--no-compile` skips):
  compile time, deform and frame time, PSNR against the eager float32 picture;
- training step for 1, 2 and 4 cameras per step: batch loading, deform, rasterize, loss, backward, optimiser,
  densify (gsplat strategy bookkeeping and graph), the whole step, and peak memory; for 2 cameras also with
  TF32 matrix products, the detail MLP compiled, and both (CUDA, unless `--no-compile`);
- one densification at paper scale and one kNN graph rebuild; the 2-camera step at `--gaussians-small`;
- a profile of a few 2-camera steps and renders (torch.profiler's table, next to the JSON as .profile.txt).

Prints a table and writes JSON. Without `--capture` it makes a synthetic one in the output folder (`full`
preset, 802 px tall, 2 frames per sequence; `tiny` with `--small`). `--small` is the CPU check CI runs: the
tiny capture, a few thousand Gaussians, two repetitions.

.venv/bin/python benchmarks/gpu.py [--device auto] [--capture DIR] [--gaussians 250000] [--small]
    [--no-compile] [--out benchmarks/out/gpu.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import shutil
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from npga.avatar import Gaussians, express, knn_graph, pose, render_gaussians
from npga.avatar.precision import Resolved, network_precision
from npga.config import load_config, resolve_device
from npga.metrics import psnr
from npga.train import TrainConfig, Trainer, build_trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PARTS = ("deform", "rasterize", "loss", "backward", "optimizer", "densify")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int) -> float:
    """Median wall time of `fn` in milliseconds, the device synchronised before and after each call."""
    times = []
    for i in range(warmup + reps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i >= warmup:
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated device memory since the last reset (CUDA), or the process's peak resident set (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def grown(params: dict[str, torch.Tensor], n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`n` Gaussians drawn from `params` with replacement, positions jittered by a tenth of their size."""
    idx = torch.randint(len(params["means"]), (n,), generator=generator)
    out = {k: v.detach().cpu()[idx].clone() for k, v in params.items()}
    sigma = out["scales"].exp().mean(-1, keepdim=True)  # (n, 1)
    out["means"] += 0.1 * sigma * torch.randn(n, 3, generator=generator)
    return out


def precisions(device: torch.device) -> tuple[Resolved, ...]:
    return ("float32", "tf32", "bfloat16") if device.type == "cuda" else ("float32", "bfloat16")


def render_case(
    trainer: Trainer,
    scale: int,
    cnn: bool,
    precision: Resolved,
    device: torch.device,
    reps: int,
    warmup: int,
    express_fn: Callable[..., Gaussians] = express,
) -> tuple[dict, torch.Tensor]:
    """Render one camera of a training frame at `scale` times the capture's size: FPS, the parts, and the
    picture (for the PSNR against float32). `express_fn`: `express` or a compiled version of it."""
    seq = trainer.split.train_sequences[0]
    b = trainer.make_batch(seq, 0, trainer.train_serials[:1])
    Ks = b.Ks.clone()
    Ks[:, :2] *= scale
    width, height = scale * trainer.cache.width, scale * trainer.cache.height
    net = trainer.nets.cnn if cnn else None

    def head() -> Any:
        with network_precision(precision, device):
            return express_fn(trainer.params, trainer.nets, b.z)

    with torch.no_grad():
        posed = lambda: pose(head(), b.head_pose)
        drawn = lambda g: render_gaussians(g, b.viewmats, Ks, width, height, trainer.background, net)[0]
        g_head = head()
        g = pose(g_head, b.head_pose)
        frame = median_ms(lambda: drawn(posed()), device, reps, warmup)
        still = median_ms(lambda: drawn(pose(g_head, b.head_pose)), device, reps, warmup)
        raster = median_ms(lambda: drawn(g), device, reps, warmup)
        deform_ms = median_ms(posed, device, reps, warmup)
        image = drawn(g)[0].clamp(0, 1)
    row = {
        "size": f"{width}x{height}",
        "cnn": cnn,
        "precision": precision,
        "fps": 1000 / frame,
        "frame_ms": frame,
        "deform_ms": deform_ms,
        "rasterize_ms": raster,
        "still_fps": 1000 / still,
        "still_ms": still,
    }
    return row, image


def render_cases(trainer: Trainer, device: torch.device, reps: int, warmup: int) -> list[dict]:
    """Every size, CNN and precision; each picture's PSNR against the float32 one of the same size and CNN."""
    rows, reference = [], {}
    for precision in precisions(device):
        for scale in (1, 2):
            for cnn in (False, True):
                row, image = render_case(trainer, scale, cnn, precision, device, reps, warmup)
                key = (scale, cnn)
                reference.setdefault(key, image)
                row["psnr_vs_float32"] = None if precision == "float32" else float(psnr(image, reference[key]))
                rows.append(row)
    return rows


COMPILE_MODES = (("default", "float32"), ("default", "bfloat16"), ("reduce-overhead", "bfloat16"))
"""torch.compile's fusion alone, and with CUDA graphs (reduce-overhead), for the render path's `express`."""


def compiled_cases(trainer: Trainer, device: torch.device, reps: int, warmup: int) -> list[dict]:
    """`express` (networks and the glue between them) under torch.compile at the capture's size without CNN:
    compile time (the first calls), deform and frame time beside the eager ones in the same precision, PSNR
    against eager float32. A mode that fails is recorded and the next one runs."""
    eager = {p: render_case(trainer, 1, False, p, device, reps, warmup) for p in ("float32", "bfloat16")}
    rows = []
    for mode, precision in COMPILE_MODES:
        try:
            torch._dynamo.reset()
            compiled = torch.compile(express, mode=mode)
            start = time.perf_counter()
            render_case(trainer, 1, False, precision, device, 2, 1, compiled)  # compiles (and records the graph)
            compile_s = time.perf_counter() - start
            row, image = render_case(trainer, 1, False, precision, device, reps, warmup, compiled)
            row |= {
                "mode": mode,
                "compile_s": compile_s,
                "psnr_vs_float32": float(psnr(image, eager["float32"][1])),
                "eager_deform_ms": eager[precision][0]["deform_ms"],
                "eager_frame_ms": eager[precision][0]["frame_ms"],
            }
        except Exception as e:  # the benchmark reports what failed and goes on
            row = {"mode": mode, "precision": precision, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            traceback.print_exc()
        rows.append(row)
    return rows


STEP_VARIANTS = ("tf32", "compiled", "tf32+compiled")
"""Training-step variants measured with 2 cameras beside the step as it is (`eager`)."""


@contextlib.contextmanager
def step_variant(trainer: Trainer, variant: str) -> Iterator[None]:
    """The step as is (`eager`) or with any of (joined by '+'): TF32 matrix products, the detail MLP compiled."""
    parts = set(variant.split("+")) - {"eager"}
    detail, tf32 = trainer.nets.detail, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = "tf32" in parts or tf32
    if "compiled" in parts and detail is not None:
        trainer.nets.detail = torch.compile(detail)
    try:
        yield
    finally:
        trainer.nets.detail, torch.backends.cuda.matmul.allow_tf32 = detail, tf32


def timed_steps(
    trainer: Trainer, serials: tuple[str, ...], device: torch.device, reps: int, warmup: int
) -> list[dict[str, float]]:
    """Per step after `warmup`: batch loading, each part of `train_step`, their sum and the whole step (ms)."""
    seqs = trainer.split.train_sequences
    rows = []
    for i in range(warmup + reps):
        synchronize(device)
        start = time.perf_counter()
        seq = seqs[i % len(seqs)]
        batch = trainer.make_batch(seq, i % trainer.cache.n_frames(seq), serials)
        synchronize(device)
        loaded = time.perf_counter()
        out = trainer.train_step(batch)
        synchronize(device)
        end = time.perf_counter()
        if i >= warmup:
            parts = {p: 1000 * float(out[f"time_{p}"]) for p in PARTS}
            rows.append(
                {
                    "load": 1000 * (loaded - start),
                    **parts,
                    "step": 1000 * (end - start),
                    "parts_sum": 1000 * (loaded - start) + sum(parts.values()),
                }
            )
    return rows


def step_case(
    trainer: Trainer, cameras: int, device: torch.device, reps: int, warmup: int, variant: str = "eager"
) -> dict:
    """Training steps with `cameras` cameras each, at steps that do not densify: the parts and the whole."""
    n = min(cameras, len(trainer.train_serials))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    with step_variant(trainer, variant):
        rows = timed_steps(trainer, trainer.train_serials[:n], device, reps, warmup)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        "variant": variant,
        "wall_s": time.perf_counter() - started,
        "cameras": n,
        "gaussians": len(trainer.params["means"]),
        "step_ms": med["step"],
        "parts_ms": {k: med[k] for k in ("load", *PARTS)},
        "parts_sum_ms": med["parts_sum"],
        "unaccounted_ms": med["step"] - med["parts_sum"],
        "peak_memory_mb": peak_memory_mb(device),
    }


def profile_table(trainer: Trainer, device: torch.device, steps: int) -> str:
    """torch.profiler's table (by device time on CUDA, else CPU time) over `steps` 2-camera steps and renders."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    serials = trainer.train_serials[:2]
    b = trainer.make_batch(trainer.split.train_sequences[0], 0, serials[:1])
    tables = []
    for name, fn in (
        ("training step, 2 cameras", lambda: timed_steps(trainer, serials, device, 1, 0)),
        (
            "render (deform + rasterize), float32",
            lambda: render_gaussians(
                pose(express(trainer.params, trainer.nets, b.z), b.head_pose),
                b.viewmats,
                b.Ks,
                trainer.cache.width,
                trainer.cache.height,
                trainer.background,
            ),
        ),
    ):
        with torch.no_grad() if name.startswith("render") else contextlib.nullcontext():
            fn()
            synchronize(device)
            with profile(activities=activities) as prof:
                for _ in range(steps):
                    fn()
                synchronize(device)
        key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
        tables.append(f"## {name}, {steps} times\n\n{prof.key_averages().table(sort_by=key, row_limit=40)}")
    return "\n\n".join(tables)


def densify_case(trainer: Trainer, device: torch.device) -> dict:
    """One training step at a step that densifies (after a few that gather statistics), and its densify part."""
    d = trainer.cfg.densify
    trainer.step = (max(trainer.step, d.refine_start) // d.refine_every + 1) * d.refine_every - 2
    for _ in range(2):
        trainer.train_step(trainer.sample_batch())
    before = len(trainer.params["means"])
    synchronize(device)
    out = trainer.train_step(trainer.sample_batch())  # the step index divisible by refine_every
    synchronize(device)
    return {
        "step": trainer.step - 1,
        "gaussians_before": before,
        "gaussians_after": len(trainer.params["means"]),
        "densify_ms": 1000 * float(out["time_densify"]),
    }


def synthesize_capture(out: Path, small: bool) -> Path:
    from data_tools.synth import SynthConfig, synthesize

    capture = out / ("capture_tiny" if small else "capture_full")
    if not (capture / "calibration").is_dir():
        shutil.rmtree(capture, ignore_errors=True)
        synthesize(SynthConfig(out=capture, preset="tiny" if small else "full", frames=None if small else 2))
    return capture


def build(args: argparse.Namespace, run: Path) -> Trainer:
    base = load_config(TrainConfig, CONFIGS / "nersemble.yaml")
    quick = load_config(TrainConfig, CONFIGS / "tiny.yaml").distill  # the field's size matters, not its fit
    distill = dataclasses.replace(quick, field=base.distill.field)
    cfg = dataclasses.replace(
        base,
        capture=args.capture,
        out=run,
        device=args.device,
        distill=distill,
        height=None if args.small else base.height,
        init=dataclasses.replace(base.init, mesh_resolution=32 if args.small else 96),
        densify=dataclasses.replace(base.densify, max_gaussians=args.gaussians * 2),
    )
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return build_trainer(cfg, hooks=[])


def table(result: dict) -> str:
    lines = [
        f"device {result['device']}, {result['gaussians']} Gaussians, torch {result['torch']}",
        "",
        f"{'render':<22} {'precision':>9} {'FPS':>7} {'frame ms':>9} {'deform ms':>9} {'raster ms':>9} "
        f"{'still FPS':>9} {'dB vs f32':>9} {'compile s':>9}",
    ]
    for r in result.get("render", []) + result.get("compiled_render", []):
        if "error" in r:
            lines.append(f"{'compiled ' + r['mode']:<22} {r['precision']:>9} {r['error']}")
            continue
        name = f"{r['size']} {'with' if r['cnn'] else 'no'} CNN" if "mode" not in r else f"compiled {r['mode']}"
        times = " ".join(f"{r[k]:>9.2f}" for k in ("frame_ms", "deform_ms", "rasterize_ms"))
        db = "" if r["psnr_vs_float32"] is None else f"{r['psnr_vs_float32']:.1f}"
        lines.append(
            f"{name:<22} {r['precision']:>9} {r['fps']:>7.1f} {times} {r['still_fps']:>9.1f} {db:>9} "
            f"{r.get('compile_s', 0):>9.1f}"
        )
    lines += [
        "",
        f"{'train step (ms)':<10} {'N':>7} {'cams':>4} {'step':>7} "
        + " ".join(f"{p:>9}" for p in ("load", *PARTS))
        + f" {'other':>7} {'peak MB':>8}",
    ]
    for r in result.get("train_step", []) + result.get("train_step_small", []):
        parts = " ".join(f"{r['parts_ms'][p]:>9.2f}" for p in ("load", *PARTS))
        lines.append(
            f"{r['variant']:<10} {r['gaussians']:>7} {r['cameras']:>4} {r['step_ms']:>7.2f} {parts} "
            f"{r['unaccounted_ms']:>7.2f} {r['peak_memory_mb']:>8.0f}"
        )
    if "graph_ms" in result:
        lines += ["", f"kNN graph rebuild: {result['graph_ms']:.1f} ms"]
    if "densify" in result:
        d = result["densify"]
        lines.append(
            f"densify at step {d['step']}: {d['densify_ms']:.1f} ms ({d['gaussians_before']} -> "
            f"{d['gaussians_after']} Gaussians)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--capture", type=Path, default=None)
    parser.add_argument("--gaussians", type=int, default=250_000)
    parser.add_argument("--gaussians-small", type=int, default=42_000, help="the smaller avatar's training step")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile cases (CUDA only anyway)")
    parser.add_argument("--small", action="store_true", help="CPU check: tiny capture, 3,000 Gaussians, 2 reps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/gpu.json"))
    args = parser.parse_args()
    if args.small:
        args.gaussians, args.reps, args.warmup = min(args.gaussians, 3000), min(args.reps, 2), min(args.warmup, 1)
        args.gaussians_small = min(args.gaussians_small, 1000)
    work = args.out.parent / "gpu_work"
    args.capture = args.capture or synthesize_capture(work, args.small)
    device = torch.device(resolve_device(args.device))
    compile_nets = device.type == "cuda" and not args.no_compile
    trainer = build(args, work / "run")
    gen = torch.Generator().manual_seed(0)
    trainer.replace_gaussians(grown(trainer.params, args.gaussians, gen))
    trainer.sync_timers = lambda: synchronize(device)
    reps, warmup = args.reps, args.warmup
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "capture": str(args.capture),
        "image": f"{trainer.cache.width}x{trainer.cache.height}",
        "gaussians": args.gaussians,
        "reps": reps,
        "warmup": warmup,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def measured(key: str, value: Any) -> None:
        """Keep each figure as soon as it is measured: a run cut short by a time limit still leaves them."""
        result[key] = value
        args.out.write_text(json.dumps(result, indent=2))
        print(f"[{time.strftime('%H:%M:%S')}] {key} measured", flush=True)

    measured("render", render_cases(trainer, device, reps, warmup))
    steps = [step_case(trainer, c, device, reps, warmup) for c in (1, 2, 4)]
    measured("train_step", steps)
    for variant in STEP_VARIANTS if compile_nets else ():
        steps.append(step_case(trainer, 2, device, reps, warmup, variant))
        measured("train_step", steps)
    measured(
        "graph_ms", median_ms(lambda: knn_graph(trainer.params["means"], trainer.cfg.knn), device, max(reps // 5, 1), 1)
    )
    paper_scale = {k: v.detach().clone() for k, v in trainer.params.items()}
    measured("densify", densify_case(trainer, device))
    trainer.replace_gaussians(grown(paper_scale, args.gaussians_small, gen))
    measured("train_step_small", [step_case(trainer, 2, device, reps, warmup)])
    trainer.replace_gaussians(paper_scale)
    profile_path = args.out.with_suffix(".profile.txt")
    profile_path.write_text(profile_table(trainer, device, steps=5 if device.type == "cuda" else 1))
    measured("profile", str(profile_path))
    if compile_nets:
        measured("compiled_render", compiled_cases(trainer, device, reps, warmup))
    print(table(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
