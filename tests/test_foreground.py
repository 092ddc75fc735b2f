"""The driver's foreground estimate (npga/drive/foreground.py) against drawn and supersampled truths."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from npga.drive.foreground import border_color, foreground_mask


def test_foreground_estimate_finds_a_face_on_a_plain_wall():
    wall = np.array([200, 205, 190], np.uint8)
    frame = np.tile(wall, (96, 80, 1))
    truth = np.zeros((96, 80), np.uint8)
    cv2.ellipse(truth, (40, 50), (22, 30), 0, 0, 360, 1, -1)
    frame[truth == 1] = (180, 120, 100)
    cv2.circle(frame, (32, 45), 3, wall.tolist(), -1)  # an eye as bright as the wall: a hole to fill
    cv2.circle(frame, (5, 5), 2, (20, 20, 20), -1)  # a speck in the corner: not the face
    np.testing.assert_allclose(border_color([frame]), wall / 255.0, atol=1e-6)
    mask = foreground_mask(frame, border_color([frame])) > 0.5
    iou = (mask & (truth == 1)).sum() / (mask | (truth == 1)).sum()
    assert iou > 0.97
    assert mask[45, 32] and not mask[:10, :10].any()  # the eye is filled, the speck is gone


def test_foreground_estimate_gives_rim_pixels_their_sub_pixel_coverage():
    # A disc filmed with 8x8 supersampling: rim pixels mix its colour (which varies across it) with the wall's.
    H, W, ss, radius = 64, 80, 8, 21.3
    ys, xs = (np.mgrid[0 : H * ss, 0 : W * ss] + 0.5) / ss  # sub-pixel sample positions
    inside = (xs - 41.2) ** 2 + (ys - 30.7) ** 2 < radius**2
    wall = np.array([200.0, 205.0, 190.0])
    subject = np.stack([60 + 1.5 * xs, 50 + 0.8 * ys, 40 + 0 * xs], -1)  # (H ss, W ss, 3) a colour gradient
    fine = np.where(inside[..., None], subject, wall)
    frame = fine.reshape(H, ss, W, ss, 3).mean((1, 3)).round().astype(np.uint8)
    coverage = inside.reshape(H, ss, W, ss).mean((1, 3))  # (H, W) the truth
    mask = foreground_mask(frame, border_color([frame]))
    assert mask.sum() == pytest.approx(np.pi * radius**2, rel=0.005)  # a thresholded mask is ~3% too big here
    rim = (coverage > 0) & (coverage < 1)
    assert np.abs(mask - coverage)[rim].mean() < 0.05
    assert np.abs(mask - coverage)[~rim].max() < 0.02
