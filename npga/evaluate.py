"""Evaluation as NeRSemble does it: render held-out views, compare with PSNR / SSIM / LPIPS, write a report.

Independent of how an avatar renders: `evaluate` takes a `Renderer` (sequence, frame index, cameras ->
images), so the same code scores a trained run, a baseline, or ground truth against itself.
Images are compared on the training background (white by default): the prediction as rendered, the
ground truth composited with its alpha; the `_masked` variants also composite the prediction with the
ground-truth alpha.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from npga.cameras import Camera
from npga.data.cache import FrameCache
from npga.geometry import even_side
from npga.io.atomic import atomic_path, write_text_atomic
from npga.io.video import to_uint8, write_video
from npga.metrics import LPIPS, composite, psnr, ssim
from npga.split import Split

log = logging.getLogger(__name__)

# (sequence, frame index t, cameras) -> rgb (C, H, W, 3) rendered on white, alpha (C, H, W, 1)
Renderer = Callable[[str, int, Sequence[Camera]], tuple[torch.Tensor, torch.Tensor]]
METRICS = ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked", "lpips_masked")
# A report's scores, and what was scored: `npga eval` writes the second after the rest, so a report holding it is whole.
METRICS_FILE, INFO_FILE = "metrics.json", "eval_info.json"


@dataclass
class SplitResult:
    name: str
    rows: list[dict] = field(default_factory=list)  # one per (sequence, t, serial)
    samples: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # serial -> (gt, pred)
    video: list[np.ndarray] = field(default_factory=list)  # gt | render frames of the first camera


def _score(pred: torch.Tensor, gt: torch.Tensor, lpips: LPIPS) -> dict[str, float | None]:
    lp = lpips(pred, gt)
    return {
        "psnr": float(psnr(pred, gt)[0]),
        "ssim": float(ssim(pred, gt)[0]),
        "lpips": None if lp is None else float(lp[0]),
    }


def evaluate(
    render: Renderer,
    cache: FrameCache,
    split: Split,
    split_name: str,
    every: int = 1,
    lpips: LPIPS | None = None,
    background: float | torch.Tensor = 1.0,
) -> SplitResult:
    """Render and score every `every`-th frame of the split's sequences in its cameras.

    `render` draws on `background`; the ground truth is composited on the same colour.
    """
    sequences, serials = split.eval_views(split_name, cache.serials)
    frames = [(seq, t) for seq in sequences for t in range(0, cache.n_frames(seq), every)]
    if not frames or not serials:
        raise ValueError(
            f"split {split_name!r} has no frames to evaluate (sequences {list(sequences)}, cameras {list(serials)} "
            f"with frames in {cache.root})"
        )
    lpips = lpips or LPIPS()
    result = SplitResult(split_name)
    cams = [cache.cameras[s] for s in serials]
    for seq, t in tqdm(frames, desc=f"eval {split_name}", unit="frame"):
        gt_rgb, gt_alpha = (torch.from_numpy(a) for a in cache.frames(seq, t, serials))
        with torch.no_grad():
            pred, _ = render(seq, t, cams)
        pred = pred.detach().cpu().float().clamp(0, 1)
        gt = composite(gt_rgb, gt_alpha, background)  # (C, H, W, 3)
        pred_masked = composite(pred, gt_alpha, background)
        for c, serial in enumerate(serials):
            row = {"split": split_name, "sequence": seq, "t": t, "serial": serial}
            row.update(_score(pred[c], gt[c], lpips))
            row.update({f"{k}_masked": v for k, v in _score(pred_masked[c], gt[c], lpips).items()})
            result.rows.append(row)
        if seq == sequences[0] and t == (cache.n_frames(seq) // 2) // every * every:
            for c, serial in enumerate(serials):
                result.samples[serial] = (gt[c].numpy(), pred[c].numpy())
        result.video.append(np.concatenate([gt[0].numpy(), pred[0].numpy()], 1))
    return result


def summarize(result: SplitResult) -> dict:
    """Means over all evaluated frames and per camera; LPIPS is null when it could not be computed."""

    def mean(rows: list[dict], key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(vals)) if vals and len(vals) == len(rows) else None

    per_camera = {}
    for serial in dict.fromkeys(r["serial"] for r in result.rows):
        rows = [r for r in result.rows if r["serial"] == serial]
        per_camera[serial] = {k: mean(rows, k) for k in METRICS} | {"n_frames": len(rows)}
    return {k: mean(result.rows, k) for k in METRICS} | {"n_frames": len(result.rows), "per_camera": per_camera}


def error_heatmap(gt: np.ndarray, pred: np.ndarray, max_error: float = 0.25) -> np.ndarray:
    """Mean absolute error per pixel as a colour map (float RGB in [0, 1]); `max_error` maps to red."""
    err = np.abs(gt - pred).mean(-1) / max_error
    heat = cv2.applyColorMap((np.clip(err, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return heat[..., ::-1].astype(np.float32) / 255.0


def write_report(
    out: str | os.PathLike, results: Sequence[SplitResult], fps: float = 25.0, tracking: dict[str, str] | None = None
) -> dict:
    """metrics.json, per_frame.csv, a grid PNG per camera (truth | render | error) and a side-by-side mp4.
    `tracking`: which tracking drove each split's renders, recorded in metrics.json under "tracking"."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {r.name: summarize(r) for r in results}
    if tracking is not None:
        metrics["tracking"] = tracking
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2))
    with atomic_path(out / "per_frame.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["split", "sequence", "t", "serial", *METRICS])
        writer.writeheader()
        for r in results:
            writer.writerows(r.rows)
    for r in results:
        for serial, (gt, pred) in r.samples.items():
            grid = np.concatenate([gt, pred, error_heatmap(gt, pred)], 1)
            with atomic_path(out / f"{r.name}_cam_{serial}.png") as tmp:
                cv2.imwrite(str(tmp), cv2.cvtColor(to_uint8(grid), cv2.COLOR_RGB2BGR))
        frames = [to_uint8(v) for v in r.video]
        h, w = frames[0].shape[:2]
        write_video(out / f"{r.name}.mp4", [f[: even_side(h), : even_side(w)] for f in frames], fps=fps)
    return metrics
