"""`npga prepare`: check a capture once and decode its videos into a frame cache (npga/data/prepare.py)."""

from __future__ import annotations

from pathlib import Path

from npga.data.cache import FrameCache
from npga.data.prepare import PrepareConfig, prepare

Config = PrepareConfig


def main(cfg: Config) -> Path:
    out = prepare(cfg)
    cache = FrameCache.open(out)
    frames = sum(cache.n_frames(s) for s in cache.sequences)
    print(
        f"frame cache: {out} ({len(cache.sequences)} sequences, {frames} frames x {len(cache.serials)} cameras "
        f"at {cache.width}x{cache.height})"
    )
    return out
