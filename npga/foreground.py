"""The driver's foreground when no mask video is given: a plain-background estimate.

Model: the video's background is one roughly uniform colour (a wall, a backdrop), estimated as the median of
a thin band along the image border over the first frames; a pixel is foreground by its colour distance from
it (soft between two thresholds), and only the largest connected region with its holes filled is kept.
Limits: it fails on cluttered or moving backgrounds, on a background coloured like skin or hair, and where
the person fills most of the border; give a mask video (`--mask`) then.
"""

from __future__ import annotations

import cv2
import numpy as np

BORDER = 0.03  # width of the border band, as a fraction of the image's smaller side


def border_color(frames: list[np.ndarray]) -> np.ndarray:
    """(3,) float in [0, 1]: median colour of the border band of uint8 frames (H, W, 3)."""
    h, w = frames[0].shape[:2]
    b = max(1, round(BORDER * min(h, w)))
    band = []
    for f in frames:
        band += [f[:b].reshape(-1, 3), f[-b:].reshape(-1, 3), f[:, :b].reshape(-1, 3), f[:, -b:].reshape(-1, 3)]
    return np.median(np.concatenate(band), axis=0) / 255.0


def foreground_mask(frame: np.ndarray, background: np.ndarray, low: float = 0.06, high: float = 0.15) -> np.ndarray:
    """(H, W) float in [0, 1]: 0 within `low` (RGB distance) of the background colour, 1 beyond `high`;
    the largest connected region only, holes filled."""
    dist = np.linalg.norm(frame.astype(np.float32) / 255.0 - background[None, None].astype(np.float32), axis=-1)
    soft = np.clip((dist - low) / (high - low), 0.0, 1.0)  # (H, W)
    hard = (soft > 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
    if n <= 1:
        return np.zeros_like(soft)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    # Fill holes: flood the outside from a padded corner; what the flood does not reach lies inside the region.
    flood = np.pad(region, 1)
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0  # (H, W) enclosed by the region (eyes and teeth as bright as a white wall)
    near = cv2.dilate(region | holes.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # keep the soft rim
    return np.where(holes, 1.0, soft * near).astype(np.float32)
