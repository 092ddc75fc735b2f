"""The driver's foreground when no mask video is given: a plain-background estimate.

Model: the video's background is one roughly uniform colour (a wall, a backdrop), estimated as the median of
a thin band along the image border over the first frames; a pixel is foreground by its colour distance from
it, and only the largest connected region with its holes filled is kept. Along the region's rim, where a pixel
mixes the subject with the wall, its coverage comes from the colour line between the two: a pixel I = a F +
(1 - a) B, with B the wall and F the nearest interior pixel's colour, has a = (I - B).(F - B) / |F - B|^2.
Sub-pixel coverage matters: a silhouette half a pixel too fat all round makes a monocular tracker put the head
millimetres too close.
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
    """(H, W) float in [0, 1]: the share of each pixel the subject covers. A pixel within `low` (RGB distance)
    of the background colour is background, one beyond `high` belongs to the subject's region; the largest
    connected region is kept with its holes filled, and its rim gets sub-pixel coverage (module docstring)."""
    image = frame.astype(np.float32) / 255.0  # (H, W, 3)
    bg = background.astype(np.float32)
    dist = np.linalg.norm(image - bg, axis=-1)
    soft = np.clip((dist - low) / (high - low), 0.0, 1.0)  # (H, W)
    n, labels, stats, _ = cv2.connectedComponentsWithStats((soft > 0.5).astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(soft)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    # Fill holes: flood the outside from a padded corner; what the flood does not reach lies inside the region.
    flood = np.pad(region, 1)
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood[1:-1, 1:-1] == 0  # (H, W) enclosed by the region (eyes and teeth as bright as a white wall)
    solid = region | holes.astype(np.uint8)
    interior = cv2.erode(solid, np.ones((3, 3), np.uint8), iterations=2) > 0  # pure subject, rim excluded
    rim = (cv2.dilate(solid, np.ones((3, 3), np.uint8)) > 0) & ~interior
    coverage = np.where(interior, 1.0, 0.0).astype(np.float32)
    if not interior.any():  # a subject too thin for an interior: the thresholds' soft coverage
        return np.where(rim, soft, coverage).astype(np.float32)
    # The nearest interior pixel of every pixel: distanceTransformWithLabels labels each zero pixel of its input
    # in scan order, and gives every pixel the label of its nearest one.
    _, nearest = cv2.distanceTransformWithLabels(
        (~interior).astype(np.uint8), cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL
    )
    inside_colours = image[interior]  # (M, 3) in scan order
    line = inside_colours[nearest[rim] - 1] - bg  # (R, 3) F - B per rim pixel
    length2 = (line * line).sum(-1)
    along = ((image[rim] - bg) * line).sum(-1) / np.maximum(length2, 1e-12)
    # Where subject and wall are nearly the same colour the line says nothing: keep the thresholds' guess there.
    coverage[rim] = np.where(length2 > high**2, np.clip(along, 0.0, 1.0), soft[rim])
    coverage[holes] = 1.0
    return coverage
