"""What each part of NPGA buys: one training run per row, scored on the held-out sequence (new expressions).

Rows add one part at a time: static canonical Gaussians (head pose only); + the distilled coarse field;
+ the detail MLP; + per-Gaussian latent features; + the Laplacian regularisers (the full CPU model);
+ the screen-space CNN. Every row trains with the same preset, seed and schedule; the distilled field is
computed once and shared. On a synthetic capture each row is also scored per face region of the held-out
sequence (mouth, eyes, forehead and brows, cheeks, rest of the face, hair/ears/neck), the regions found
from the canonical point under each pixel, so the table says which effect each part recovers.

.venv/bin/python benchmarks/ablation.py [--capture data/demo] [--config configs/demo.yaml] [--steps N]
    [--every 2] [--jobs 1] [--threads 2] [--out benchmarks/out/ablation]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from data_tools.mesh_render import rasterize_mesh
from data_tools.synth import frame_geometry
from npga.commands.common import open_avatar, open_training_cache, tracked_renderer
from npga.commands.distill import Config as DistillCommand
from npga.commands.distill import main as run_distill
from npga.commands.eval import Config as EvalConfig
from npga.commands.eval import main as run_eval
from npga.config import load_config
from npga.data.cache import FrameCache
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.headmodel import SyntheticHead, load_head_model
from npga.headmodel.synthetic import EYE_CENTER, EYE_RADII
from npga.metrics import composite
from npga.runs import RunLayout
from npga.train import ProgressBar, TrainConfig, build_trainer, with_steps

REGIONS = ("mouth", "eyes", "forehead and brows", "cheeks", "rest of face", "hair, ears, neck")


def rows(base: TrainConfig) -> dict[str, TrainConfig]:
    """The ablation's configs, each the previous one plus one part."""
    no_laplacian = dataclasses.replace(
        base.loss, laplacian_features=0.0, laplacian_dynamics=0.0, laplacian_appearance=0.0
    )
    no_latent = dataclasses.replace(base.init, latent_dim=0)
    static = dataclasses.replace(base, use_coarse=False, use_detail=False, init=no_latent, loss=no_laplacian,
                                 cnn=dataclasses.replace(base.cnn, enabled=False))  # fmt: skip
    coarse = dataclasses.replace(static, use_coarse=True)
    detail = dataclasses.replace(coarse, use_detail=True)
    latent = dataclasses.replace(detail, init=base.init if base.init.latent_dim else dataclasses.replace(
        base.init, latent_dim=16))  # fmt: skip
    laplacian = dataclasses.replace(latent, loss=base.loss)
    cnn = dataclasses.replace(laplacian, cnn=dataclasses.replace(base.cnn, enabled=True))
    return {
        "static": static,
        "+ coarse field": coarse,
        "+ detail MLP": detail,
        "+ latent features": latent,
        "+ Laplacian": laplacian,
        "+ CNN": cnn,
    }


def region_of(canonical: np.ndarray) -> np.ndarray:
    """Region index into REGIONS (M,) of canonical head points (M, 3) of the synthetic head."""
    x, y, z = canonical.T
    eye = np.zeros(len(x), bool)
    for side in (1.0, -1.0):
        center = np.array([side * EYE_CENTER[0], *EYE_CENTER[1:]])
        eye |= (np.linalg.norm((canonical - center) / np.array(EYE_RADII), axis=1) < 1.1) & (z > 0.06)
    mouth = (np.abs(x) < 0.025) & (y > -0.06) & (y < -0.036) & (z > 0.05)
    forehead = (np.abs(x) < 0.045) & (y > 0.025) & (y < 0.06) & (z > 0.04)
    cheeks = (np.abs(x) > 0.008) & (np.abs(x) < 0.05) & (y > -0.05) & (y < -0.004) & (z > 0.04)
    face = z > 0.02
    return np.select([mouth, eye, forehead, cheeks, face], [0, 1, 2, 3, 4], 5)


def region_maps(capture: Path, cache: FrameCache, seq: str, frames: list[int], serials: list[str]) -> np.ndarray:
    """(T, C, H, W) int8 region per pixel of the cache's images (-1: background), from the true codes and poses
    (`true_tracking.npz` when the tracking is noisy) and the renderer's geometry."""
    head = load_head_model(capture)
    if not isinstance(head, SyntheticHead):
        raise ValueError(f"{capture}: per-region scores need the synthetic head model")
    paths = ParticipantLayout(capture)
    truth = Tracking.load(paths.true_tracking(seq) if paths.true_tracking(seq).is_file() else paths.tracking(seq))
    mesh = head.canonical_mesh(128)
    maps = []
    for t in frames:
        posed, _ = frame_geometry(head, mesh, torch.from_numpy(truth.expression[t]),
                                  torch.from_numpy(truth.scale[t] * truth.rotation[t]).double(),
                                  torch.from_numpy(truth.translation[t]).double(), ("folds",))  # fmt: skip
        per_camera = []
        for serial in serials:
            cam = cache.cameras[serial]
            uv, depth = cam.project(posed.numpy())
            verts = torch.from_numpy(np.concatenate([uv, depth[:, None]], 1))
            canonical, mask = rasterize_mesh(verts, mesh.faces, mesh.vertices.double(), cam.width, cam.height)
            labels = np.full(mask.shape, -1, np.int8)
            labels[mask.numpy()] = region_of(canonical[mask].numpy())
            per_camera.append(labels)
        maps.append(per_camera)
    return np.asarray(maps)


def region_psnr(run: Path, capture: Path, regions: np.ndarray, seq: str, frames: list[int]) -> dict[str, float]:
    """PSNR per region of the held-out sequence: squared errors pooled over the region's pixels in every
    scored frame and camera."""
    file, avatar = open_avatar(run, "cpu")
    cache = open_training_cache(file, avatar, capture)
    render = tracked_renderer(avatar, cache)
    serials = list(cache.serials)
    sums, counts = np.zeros(len(REGIONS)), np.zeros(len(REGIONS))
    for i, t in enumerate(frames):
        gt_rgb, gt_alpha = (torch.from_numpy(a) for a in cache.frames(seq, t, serials))
        with torch.no_grad():
            pred, _ = render(seq, t, [cache.cameras[s] for s in serials])
        err = ((pred.float().clamp(0, 1) - composite(gt_rgb, gt_alpha)) ** 2).mean(-1).numpy()  # (C, H, W)
        for r in range(len(REGIONS)):
            inside = regions[i] == r
            sums[r] += err[inside].sum()
            counts[r] += inside.sum()
    return {name: float(-10 * np.log10(sums[r] / max(counts[r], 1))) for r, name in enumerate(REGIONS)}


def train_and_score(name: str, cfg: TrainConfig, every: int, shared_field: RunLayout | None = None,
                    threads: int | None = None) -> dict:  # fmt: skip
    """Train `cfg` into a fresh `cfg.out` (reusing a distilled field when given), then score its held-out
    sequence and cameras; returns the table row."""
    if threads:
        torch.set_num_threads(threads)
    run = RunLayout(cfg.out)
    shutil.rmtree(run.root, ignore_errors=True)
    if cfg.use_coarse and shared_field is not None:
        run.root.mkdir(parents=True)
        shutil.copy(shared_field.distill, run.distill)
        shutil.copy(shared_field.distill_report, run.distill_report)
    print(f"== {name}")
    t0 = time.perf_counter()
    trainer = build_trainer(cfg)
    trainer.hooks.insert(0, ProgressBar(0, cfg.steps))
    trainer.fit()
    seconds = time.perf_counter() - t0
    metrics = run_eval(EvalConfig(run.root, split=("heldout_sequences", "heldout_cameras"), every=every))
    seq, cams = metrics["heldout_sequences"], metrics["heldout_cameras"]
    return {
        "row": name, "run": str(run.root), "steps": cfg.steps, "train_seconds": seconds,
        "n_gaussians": len(trainer.params["means"]),
        "heldout_sequences": {k: seq[k] for k in ("psnr", "ssim", "lpips", "n_frames")},
        "heldout_cameras": {k: cams[k] for k in ("psnr", "ssim", "lpips", "n_frames")},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="the preset's schedule stretched to N steps")
    parser.add_argument("--every", type=int, default=2, help="score every n-th frame")
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at once (after one shared distillation)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per row")
    parser.add_argument("--rows", nargs="+", default=None, help="train only these rows (names as in the table)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/ablation"))
    args = parser.parse_args()
    base = dataclasses.replace(load_config(TrainConfig, args.config), capture=args.capture)
    if args.steps is not None:
        base = with_steps(base, args.steps)

    selected = {name: cfg for name, cfg in rows(base).items() if args.rows is None or name in args.rows}
    configs = {name: dataclasses.replace(cfg, out=args.out / f"{i}_{name.strip('+ ').replace(' ', '_')}")
               for i, (name, cfg) in enumerate(selected.items())}  # fmt: skip
    shared_field = RunLayout(args.out / "distilled")  # kept between invocations: delete it for a new capture
    if not shared_field.distill.is_file():
        run_distill(DistillCommand(args.capture, shared_field.root, base.distill, base.device))
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(train_and_score, name, cfg, args.every, shared_field, args.threads)
                   for name, cfg in configs.items()]  # fmt: skip
        results = [f.result() for f in futures]

    if (args.capture / "headmodel.json").is_file():
        first = next(iter(configs.values())).out
        file, avatar = open_avatar(first, "cpu")
        cache = open_training_cache(file, avatar, args.capture)
        seq = base.heldout_sequences[0]
        frames = list(range(0, cache.n_frames(seq), args.every))
        regions = region_maps(args.capture, cache, seq, frames, list(cache.serials))
        for r in results:
            r["regions"] = region_psnr(Path(r["run"]), args.capture, regions, seq, frames)
            r["region_pixels"] = {name: int((regions == i).sum()) for i, name in enumerate(REGIONS)}

    heads = ("seq PSNR", "seq SSIM", "cam PSNR", "cam SSIM")
    print(f"\n{'row':<20} " + " ".join(f"{h:>9}" for h in heads) + f" {'Gaussians':>10} {'train s':>8}")
    for r in results:
        s, c = r["heldout_sequences"], r["heldout_cameras"]
        print(f"{r['row']:<20} {s['psnr']:>9.2f} {s['ssim']:>9.4f} {c['psnr']:>9.2f} {c['ssim']:>9.4f} "
              f"{r['n_gaussians']:>10} {r['train_seconds']:>8.0f}")  # fmt: skip
    if "regions" in results[0]:
        print(f"\nheld-out sequence PSNR per region\n{'row':<20} " + " ".join(f"{n[:12]:>12}" for n in REGIONS))
        for r in results:
            print(f"{r['row']:<20} " + " ".join(f"{r['regions'][n]:>12.2f}" for n in REGIONS))
    seq_psnr = {r["row"]: r["heldout_sequences"]["psnr"] for r in results}
    for reference in ("static", "+ coarse field"):
        if "+ Laplacian" in seq_psnr and reference in seq_psnr:
            gain = seq_psnr["+ Laplacian"] - seq_psnr[reference]
            print(f"full CPU model (+ Laplacian) vs {reference}: {gain:+.2f} dB (held-out sequence)")
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"capture": str(args.capture), "config": str(args.config), "every": args.every, "rows": results}
    (args.out / "ablation.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'ablation.json'}")


if __name__ == "__main__":
    main()
