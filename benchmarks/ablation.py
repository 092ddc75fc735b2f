"""What each part of NPGA buys: one training run per row, scored on the held-out sequence (new expressions).

Rows add one part at a time: static canonical Gaussians (head pose only); + the distilled coarse field;
+ the detail MLP; + per-Gaussian latent features; + the Laplacian regularisers (the full CPU model);
+ the screen-space CNN. Every row trains with the same preset, seed and schedule; the distilled field is
computed once and shared. On a synthetic capture each row is also scored per face region of the held-out
sequence (mouth, eyes, forehead and brows, cheeks, rest of the face, hair/ears/neck), the regions found
from the canonical point under each pixel, so the table says which effect each part recovers.

Single runs differ by 0.1-0.2 dB: `--seeds 0 1 2` trains each row once per seed and the table shows mean±sd.
`--twin` scores every row also against the capture rendered without its expression-dependent effects: for the
coarse-only row, that is what it would score if it drew them perfectly, i.e. the most the parts learning those
effects can add.

.venv/bin/python benchmarks/ablation.py [--capture data/demo] [--config configs/demo.yaml] [--steps N]
    [--seeds 0 1 2] [--twin TWIN] [--device cuda] [--every 2] [--jobs 1] [--threads 2]
    [--rows ROW ...] [--out benchmarks/out/ablation]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import as_completed
from pathlib import Path

import numpy as np
import torch

from data_tools.mesh_render import rasterize_mesh
from data_tools.synth import frame_geometry
from npga.avatar.model import Avatar
from npga.commands.common import RuntimeOptions, open_avatar, open_training_cache, tracked_renderer
from npga.commands.distill import Config as DistillCommand
from npga.commands.distill import main as run_distill
from npga.commands.eval import Config as EvalConfig
from npga.commands.eval import main as run_eval
from npga.config import load_config
from npga.data.cache import FrameCache
from npga.data.layout import ParticipantLayout
from npga.data.prepare import open_or_prepare
from npga.data.tracking import Tracking
from npga.drive.fit import TrackConfig
from npga.evaluate import evaluate
from npga.evaluate import summarize as summarize_split
from npga.headmodel import SyntheticHead, load_head_model
from npga.headmodel.synthetic import EYE_CENTER, EYE_RADII
from npga.metrics import composite
from npga.runs import RunLayout
from npga.train import ProgressBar, TrainConfig, build_trainer, with_steps
from npga.train.refit import refit_tracking
from npga.workers import worker_pool

REGIONS = ("mouth", "eyes", "forehead and brows", "cheeks", "rest of face", "hair, ears, neck")


def rows(base: TrainConfig) -> dict[str, TrainConfig]:
    """The ablation's configs, each the previous one plus one part."""
    no_laplacian = dataclasses.replace(
        base.loss, laplacian_features=0.0, laplacian_dynamics=0.0, laplacian_appearance=0.0
    )
    no_latent = dataclasses.replace(base.init, latent_dim=0)
    static = dataclasses.replace(
        base,
        use_coarse=False,
        use_detail=False,
        init=no_latent,
        loss=no_laplacian,
        cnn=dataclasses.replace(base.cnn, enabled=False),
    )
    coarse = dataclasses.replace(static, use_coarse=True)
    detail = dataclasses.replace(coarse, use_detail=True)
    latent = dataclasses.replace(
        detail, init=base.init if base.init.latent_dim else dataclasses.replace(base.init, latent_dim=16)
    )
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
        posed, _ = frame_geometry(
            head,
            mesh,
            torch.from_numpy(truth.expression[t]),
            torch.from_numpy(truth.scale[t] * truth.rotation[t]).double(),
            torch.from_numpy(truth.translation[t]).double(),
            ("folds",),
        )
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


def region_psnr(
    avatar: Avatar, cache: FrameCache, regions: np.ndarray, seq: str, frames: list[int]
) -> dict[str, float]:
    """PSNR per region of the held-out sequence: squared errors pooled over the region's pixels in every
    scored frame and camera."""
    render = tracked_renderer(avatar, cache)
    serials = list(cache.serials)
    sums, counts = np.zeros(len(REGIONS)), np.zeros(len(REGIONS))
    for i, t in enumerate(frames):
        gt_rgb, gt_alpha = (torch.from_numpy(a) for a in cache.frames(seq, t, serials))
        with torch.no_grad():
            pred, _ = render(seq, t, [cache.cameras[s] for s in serials])
        err = ((pred.float().cpu().clamp(0, 1) - composite(gt_rgb, gt_alpha)) ** 2).mean(-1).numpy()  # (C, H, W)
        for r in range(len(REGIONS)):
            inside = regions[i] == r
            sums[r] += err[inside].sum()
            counts[r] += inside.sum()
    return {name: float(-10 * np.log10(sums[r] / max(counts[r], 1))) for r, name in enumerate(REGIONS)}


@dataclasses.dataclass(frozen=True)
class HeldOutRegions:
    """Region per pixel (T, C, H, W) of the scored frames of the held-out sequence (synthetic captures only)."""

    seq: str
    frames: list[int]
    maps: np.ndarray


@dataclasses.dataclass(frozen=True)
class Scoring:
    """How every row is scored (sent to the worker processes)."""

    every: int
    """Every n-th frame."""
    regions: HeldOutRegions | None = None
    """Per-region scores of the held-out sequence (synthetic captures)."""
    twin: Path | None = None
    """The capture rendered without its expression-dependent effects: the held-out sequence scored against it is
    what the row would score if it drew those effects perfectly."""
    refit: bool = False
    """Also score the held-out sequence after `npga eval --refine-tracking` (its codes and poses fitted to the
    training cameras' frames)."""
    true_tracking: Path | None = None
    """A synthetic capture whose true tracking also drives the held-out sequence: what the row scores with a
    perfect tracking of the sequence, the bound of any refit."""


def train_and_score(
    name: str, cfg: TrainConfig, scoring: Scoring, shared_field: RunLayout | None = None, threads: int | None = None
) -> dict:
    """Train `cfg` into a fresh `cfg.out` (reusing a distilled field when given), then score its held-out
    sequence and cameras (the held-out sequence's regions, and against the twin, when given); returns the
    table row."""
    if threads:
        torch.set_num_threads(threads)
    run = RunLayout(cfg.out)
    shutil.rmtree(run.root, ignore_errors=True)
    if cfg.use_coarse and shared_field is not None:
        run.root.mkdir(parents=True)
        shutil.copy(shared_field.distill, run.distill)
        shutil.copy(shared_field.distill_report, run.distill_report)
    print(f"== {name}, seed {cfg.seed}")
    t0 = time.perf_counter()
    trainer = build_trainer(cfg)
    trainer.hooks.insert(0, ProgressBar(0, cfg.total_steps))
    trainer.fit()
    seconds = time.perf_counter() - t0
    refit_seconds = None
    if cfg.refit_tracking:  # as `npga train` does after the steps
        refit_tracking(run, trainer.device, TrackConfig())
        refit_seconds = time.perf_counter() - t0 - seconds
    runtime = RuntimeOptions(device=cfg.device, precision="float32")  # `npga eval`'s default precision
    metrics = run_eval(
        EvalConfig(run.root, split=("heldout_sequences", "heldout_cameras"), every=scoring.every, runtime=runtime)
    )
    seq, cams = metrics["heldout_sequences"], metrics["heldout_cameras"]
    row = {
        "row": name,
        "seed": cfg.seed,
        "run": str(run.root),
        "steps": cfg.steps,
        "mouth_steps": trainer.cfg.mouth_steps,
        "train_seconds": seconds,
        "refit_seconds": refit_seconds,
        "n_gaussians": len(trainer.params["means"]),
        "heldout_sequences": {k: seq[k] for k in ("psnr", "ssim", "lpips", "n_frames")},
        "heldout_cameras": {k: cams[k] for k in ("psnr", "ssim", "lpips", "n_frames")},
    }
    if scoring.twin is not None:
        twin = run_eval(
            EvalConfig(
                run.root,
                split=("heldout_sequences",),
                every=scoring.every,
                capture=scoring.twin,
                out=run.root / "eval_twin",
                runtime=runtime,
            )
        )["heldout_sequences"]
        row["heldout_sequences_twin"] = {k: twin[k] for k in ("psnr", "ssim")}
    if scoring.refit:
        refit = run_eval(
            EvalConfig(
                run.root,
                split=("heldout_sequences",),
                every=scoring.every,
                out=run.root / "eval_refit",
                refine_tracking=True,
                runtime=runtime,
            )
        )["heldout_sequences"]
        row["heldout_sequences_refit"] = {k: refit[k] for k in ("psnr", "ssim")}
    if scoring.true_tracking is None and scoring.regions is None:
        return row
    file, avatar = open_avatar(run.root, cfg.device)
    cache = open_training_cache(file, avatar, None)
    if scoring.true_tracking is not None:
        layout = ParticipantLayout(scoring.true_tracking)
        truth = {s: Tracking.load(layout.true_tracking(s)) for s in avatar.split.heldout_sequences}
        render = tracked_renderer(avatar, cache, truth)
        background = avatar.background.cpu()
        result = evaluate(render, cache, avatar.split, "heldout_sequences", scoring.every, None, background)
        scored = summarize_split(result)
        row["heldout_sequences_true"] = {k: scored[k] for k in ("psnr", "ssim")}
    if (regions := scoring.regions) is not None:
        row["regions"] = region_psnr(avatar, cache, regions.maps, regions.seq, regions.frames)
        row["region_pixels"] = {n: int((regions.maps == i).sum()) for i, n in enumerate(REGIONS)}
    return row


def trained_rows(
    runs: list[tuple[str, TrainConfig]], scoring: Scoring, shared_field: RunLayout, jobs: int, threads: int | None
) -> Iterator[dict]:
    """Train and score each (row name, config) in `jobs` worker processes; yields each row as it finishes. A run
    that fails is reported and skipped: one failed run must not lose the others."""
    with worker_pool(jobs) as pool:
        futures = {pool.submit(train_and_score, name, cfg, scoring, shared_field, threads): name for name, cfg in runs}
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as e:  # the other runs go on
                print(f"{futures[future]}: failed: {e!r}")
                continue
            yield row


def summarize(results: list[dict], names: list[str]) -> list[dict]:
    """Per row (in `names` order, rows without results left out): the mean and the sample standard deviation
    over seeds of each score, and the mean's change from the previous row (the issue's per-part gain)."""

    def scores(r: dict) -> dict[str, float]:
        s, c = r["heldout_sequences"], r["heldout_cameras"]
        out = {"seq PSNR": s["psnr"], "seq SSIM": s["ssim"], "cam PSNR": c["psnr"], "cam SSIM": c["ssim"]}
        if "heldout_sequences_twin" in r:
            out["seq PSNR, twin"] = r["heldout_sequences_twin"]["psnr"]
        if "heldout_sequences_refit" in r:
            out["seq PSNR, refit"] = r["heldout_sequences_refit"]["psnr"]
        if "heldout_sequences_true" in r:
            out["seq PSNR, true tracking"] = r["heldout_sequences_true"]["psnr"]
        return out | r.get("regions", {})

    table, previous = [], None
    for name in names:
        runs = sorted((r for r in results if r["row"] == name), key=lambda r: r["seed"])
        if not runs:
            continue
        values = [scores(r) for r in runs]
        mean = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
        std = {k: float(np.std([v[k] for v in values], ddof=1)) if len(values) > 1 else None for k in values[0]}
        gain = None if previous is None else mean["seq PSNR"] - previous["seq PSNR"]
        table.append(
            {
                "row": name,
                "seeds": [r["seed"] for r in runs],
                "mean": mean,
                "std": std,
                "seq PSNR vs previous row": gain,
            }
        )
        previous = mean
    return table


def _cell(mean: float, std: float | None, digits: int) -> str:
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f}±{std:.{digits}f}"


def print_summary(table: list[dict]) -> None:
    if not table:
        return
    heads = ["seq PSNR", "seq SSIM", "cam PSNR", "cam SSIM"]
    if "seq PSNR, twin" in table[0]["mean"]:
        heads.append("seq PSNR, twin")
    print(f"\n{'row':<20} {'seeds':>6} " + " ".join(f"{h:>14}" for h in heads) + f" {'vs previous':>12}")
    for t in table:
        cells = [_cell(t["mean"][h], t["std"][h], 4 if "SSIM" in h else 2) for h in heads]
        gain = "" if t["seq PSNR vs previous row"] is None else f"{t['seq PSNR vs previous row']:+.2f}"
        print(f"{t['row']:<20} {len(t['seeds']):>6} " + " ".join(f"{c:>14}" for c in cells) + f" {gain:>12}")
    if any(REGIONS[0] in t["mean"] for t in table):
        print(f"\nheld-out sequence PSNR per region\n{'row':<20} " + " ".join(f"{n[:12]:>12}" for n in REGIONS))
        for t in table:
            print(f"{t['row']:<20} " + " ".join(f"{_cell(t['mean'][n], t['std'][n], 2):>12}" for n in REGIONS))
    means = {t["row"]: t["mean"]["seq PSNR"] for t in table}
    for reference in ("static", "+ coarse field"):
        if "+ Laplacian" in means and reference in means:
            gain = means["+ Laplacian"] - means[reference]
            print(f"full CPU model (+ Laplacian) vs {reference}: {gain:+.2f} dB (held-out sequence, mean over seeds)")
    coarse = next((t["mean"] for t in table if t["row"] == "+ coarse field"), {})
    if "seq PSNR, twin" in coarse:
        bound = coarse["seq PSNR, twin"] - coarse["seq PSNR"]
        print(
            f"coarse field with the expression-dependent effects drawn perfectly: {bound:+.2f} dB over coarse-only "
            "(the most that the parts learning those effects can add)"
        )


def check_twin(capture: Path, ours: FrameCache, twin: Path, seq: str) -> None:
    """The twin must be the same capture: the held-out sequence's tracking and cameras identical."""
    theirs = open_or_prepare(twin, ours.height)
    a, b = ours.tracking(seq), theirs.tracking(seq)
    same = all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("expression", "rotation", "translation"))
    if not same or list(ours.serials) != list(theirs.serials):
        raise ValueError(
            f"{twin} is not {capture} without its effects: the tracking of {seq} or the cameras differ "
            "(make it with `npga synth` of the same seed and preset, --effects gaze tracking_noise)"
        )


def held_out_regions(capture: Path, cache: FrameCache, seq: str, every: int) -> HeldOutRegions | None:
    """The held-out sequence's region maps when the capture is synthetic, else None (no regions to score)."""
    if not (capture / "headmodel.json").is_file():
        return None
    frames = list(range(0, cache.n_frames(seq), every))
    return HeldOutRegions(seq, frames, region_maps(capture, cache, seq, frames, list(cache.serials)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=None, help="the preset's schedule stretched to N steps")
    parser.add_argument("--every", type=int, default=2, help="score every n-th frame")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="train every row once per seed (default: the preset's seed); the table shows mean±sd",
    )
    parser.add_argument(
        "--twin",
        type=Path,
        default=None,
        help="the capture rendered without its expression-dependent effects (`npga synth` of the "
        "same seed and preset, --effects gaze tracking_noise): rows are also scored against it",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="train and score on this device (default: the preset's)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at once (after one shared distillation)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per row")
    parser.add_argument("--rows", nargs="+", default=None, help="train only these rows (names as in the table)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/ablation"))
    args = parser.parse_args()
    base = dataclasses.replace(load_config(TrainConfig, args.config), capture=args.capture)
    if args.steps is not None:
        base = with_steps(base, args.steps)
    if args.device is not None:
        base = dataclasses.replace(base, device=args.device)
    seeds = args.seeds or [base.seed]
    if args.rows is not None and (unknown := set(args.rows) - set(rows(base))):
        parser.error(f"unknown rows {sorted(unknown)}; the rows are {list(rows(base))}")

    selected = {name: cfg for name, cfg in rows(base).items() if args.rows is None or name in args.rows}
    runs = []  # (row name, its config for one seed)
    for i, (name, cfg) in enumerate(selected.items()):
        folder = f"{i}_{name.strip('+ ').replace(' ', '_')}"
        for seed in seeds:
            out = args.out / (f"{folder}_seed{seed}" if len(seeds) > 1 else folder)
            runs.append((name, dataclasses.replace(cfg, seed=seed, out=out)))
    shared_field = RunLayout(args.out / "distilled")  # kept between invocations: delete it for a new capture
    if not shared_field.distill.is_file():
        run_distill(DistillCommand(args.capture, shared_field.root, base.distill, base.device))
    cache = open_or_prepare(args.capture, base.height)  # prepared once, before the workers share it
    seq = base.heldout_sequences[0]
    if args.twin is not None:
        check_twin(args.capture, cache, args.twin, seq)
    scoring = Scoring(args.every, held_out_regions(args.capture, cache, seq, args.every), args.twin)

    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []

    def write() -> None:  # after every finished run, so a run killed from outside loses only itself
        summary = {
            "capture": str(args.capture),
            "config": str(args.config),
            "every": args.every,
            "seeds": seeds,
            "summary": summarize(results, list(selected)),
            "rows": results,
        }
        (args.out / "ablation.json").write_text(json.dumps(summary, indent=2))

    for row in trained_rows(runs, scoring, shared_field, args.jobs, args.threads):
        results.append(row)
        write()
    print_summary(summarize(results, list(selected)))
    print(f"wrote {args.out / 'ablation.json'}")
    if len(results) < len(runs):
        raise SystemExit(f"{len(runs) - len(results)} of {len(runs)} runs failed")


if __name__ == "__main__":
    main()
