"""Training curves as a PNG, from a run's JSONL log (one JSON object per line with a "step").

Every numeric key whose name starts with "loss" goes on the left (log scale), every key containing "psnr" on
the right, so new loss terms appear without changes here. Drawn on a bare `Figure` (no pyplot): importing npga
never switches matplotlib's backend under a user's notebook or GUI.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from matplotlib.figure import Figure

from npga.io.atomic import atomic_path


def read_log(path: str | os.PathLike) -> list[dict]:
    """The log's records; a torn last line (a run killed mid-write) is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            records.append(rec)
    return records


def plot_training_curves(log_path: str | os.PathLike, out_png: str | os.PathLike, title: str = "") -> Path:
    records = read_log(log_path)
    if not records:
        raise ValueError(f"{log_path}: no training records to plot")
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float)) and k != "step"})
    fig = Figure(figsize=(9, 4.5), dpi=110)
    ax_loss = fig.add_subplot()
    ax_psnr = ax_loss.twinx()
    for key in keys:
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        steps, vals = zip(*pts, strict=True)
        if "psnr" in key:
            ax_psnr.plot(steps, vals, "-o" if len(pts) < 30 else "-", ms=3, label=key)
        elif key.startswith("loss") and min(vals) > 0:
            ax_loss.plot(steps, vals, lw=1, alpha=0.9, label=key)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_psnr.set_ylabel("PSNR (dB)")
    handles = ax_loss.get_legend_handles_labels()
    more = ax_psnr.get_legend_handles_labels()
    ax_loss.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper right")
    ax_loss.grid(alpha=0.3)
    if title:
        ax_loss.set_title(title)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp)
    return out
