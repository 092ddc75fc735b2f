"""Colour correction of raw frames: the CCM against a hand computation, and the calibration file's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npga.data.capture import Capture
from npga.data.color import correct_colors, load_color_calibration
from npga.data.layout import ParticipantLayout
from tests.helpers.small_captures import SERIALS, rgb_frame


def test_color_correction_matches_a_hand_computation(raw_capture):
    # 3 x 4 CCM (Cheung 2004 with 4 terms: R, G, B, 1), worked out for one pixel by hand.
    ccm = np.array([[1.1, -0.05, 0.0, 0.01], [0.02, 0.95, 0.03, 0.0], [0.0, 0.1, 0.9, -0.02]])
    pixel = np.array([200, 100, 30], dtype=np.uint8)
    v = pixel / 255.0
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    out = ccm[:, :3] @ linear + ccm[:, 3]
    encoded = np.where(out <= 0.0031308, 12.92 * out, 1.055 * out ** (1 / 2.4) - 0.055)
    expected = np.round(np.clip(encoded, 0, 1) * 255)
    np.testing.assert_array_equal(correct_colors(pixel[None, None], ccm)[0, 0], expected)
    # Identity (3 terms) gives the image back, up to rounding.
    image = rgb_frame(0, 0, (16, 16))
    assert np.abs(correct_colors(image, np.eye(3)).astype(int) - image).max() <= 1

    path = ParticipantLayout(raw_capture).color_calibration
    path.write_text(json.dumps({s: ccm.tolist() for s in SERIALS}))
    assert set(Capture.open(raw_capture).color_calibration()) == set(SERIALS)
    path.write_text(json.dumps({s: np.zeros((3, 6)).tolist() for s in SERIALS}))
    with pytest.raises(ValueError, match=r"color_calibration.json: matrix of serial \d+ has shape \(3, 6\)"):
        load_color_calibration(path, SERIALS)
