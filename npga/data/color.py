"""Colour correction of raw NeRSemble v2 frames with the per-camera matrices of `color_calibration.json`.

The dataset ships one colour correction matrix (CCM) per camera, fitted with the polynomial method of
Cheung et al. 2004 ("A comparative study of the characterisation of colour cameras by means of neural
networks and polynomial transforms"). The official loader applies it as:
sRGB decode -> expand each linear RGB into `terms` monomials -> CCM (3, terms) -> sRGB encode.
The number of terms is the CCM's column count; the monomial lists below are the Cheung 2004 / Westland 2004
augmented matrices in the order the `colour-science` package uses, which the published CCMs assume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

# Monomials of each Cheung 2004 expansion, by number of terms; "" is the constant 1, "RRG" is R*R*G.
_CUBIC = "R G B RG RB GB RR GG BB RGB RRG GGB BBR"
_CUBIC_FULL = _CUBIC + " RRB GGR BBG RRR GGG BBB"
CHEUNG2004_TERMS: dict[int, tuple[str, ...]] = {
    n: tuple("" if m == "1" else m for m in spec.split())
    for n, spec in {
        3: "R G B",
        4: "R G B 1",
        5: "R G B RGB 1",
        7: "R G B RG RB GB 1",
        8: "R G B RG RB GB RGB 1",
        10: "R G B RG RB GB RR GG BB 1",
        11: "R G B RG RB GB RR GG BB RGB 1",
        14: "R G B RG RB GB RR GG BB RGB RRR GGG BBB 1",
        16: _CUBIC + " RRR GGG BBB",
        17: _CUBIC + " RRR GGG BBB 1",
        19: _CUBIC_FULL,
        20: _CUBIC_FULL + " 1",
        22: _CUBIC_FULL + " RRGB RGGB RGBB",
        35: _CUBIC_FULL + " RRRG RRRB GGGR GGGB BBBR BBBG RRGB RGGB RGBB RRGG RRBB GGBB RRRR GGGG BBBB 1",
    }.items()
}


def srgb_decode(v: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light (IEC 61966-2-1)."""
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def srgb_encode(x: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB encoding; values below the linear segment stay linear (negatives too)."""
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.maximum(x, 0.0031308) ** (1 / 2.4) - 0.055)


def cheung2004_expand(rgb: np.ndarray, terms: int) -> np.ndarray:
    """(N, 3) linear RGB -> (N, terms) monomials of the Cheung 2004 expansion."""
    if terms not in CHEUNG2004_TERMS:
        raise ValueError(f"Cheung 2004 defines no expansion with {terms} terms (valid: {sorted(CHEUNG2004_TERMS)})")
    channel = {"R": rgb[:, 0], "G": rgb[:, 1], "B": rgb[:, 2]}
    cols = []
    for monomial in CHEUNG2004_TERMS[terms]:
        col = np.ones(len(rgb), dtype=rgb.dtype)
        for c in monomial:
            col = col * channel[c]
        cols.append(col)
    return np.stack(cols, axis=1)


def correct_colors(image: np.ndarray, ccm: np.ndarray) -> np.ndarray:
    """Apply one camera's CCM (3, terms) to a uint8 RGB image (..., 3); returns uint8 of the same shape."""
    rgb = srgb_decode(image.reshape(-1, 3).astype(np.float32) / 255.0)  # (N, 3)
    linear = cheung2004_expand(rgb, ccm.shape[1]) @ ccm.T.astype(np.float32)  # (N, 3)
    out = np.clip(srgb_encode(linear), 0.0, 1.0)
    return np.round(out * 255.0).astype(np.uint8).reshape(image.shape)


def load_color_calibration(path: str | os.PathLike, serials: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """{serial: CCM (3, terms)} for `serials` from a `color_calibration.json`; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"colour correction asked for, but there is no colour calibration: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping {{serial: matrix}}")
    missing = [s for s in serials if s not in data]
    if missing:
        raise ValueError(f"{path}: no colour correction matrix for serial(s) {missing}")
    ccms = {}
    for serial in serials:
        try:
            ccm = np.asarray(data[serial], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: matrix of serial {serial} is not numeric ({e})") from e
        if ccm.ndim != 2 or ccm.shape[0] != 3 or ccm.shape[1] not in CHEUNG2004_TERMS:
            raise ValueError(
                f"{path}: matrix of serial {serial} has shape {ccm.shape}, expected (3, terms) with terms in "
                f"{sorted(CHEUNG2004_TERMS)}"
            )
        if not np.isfinite(ccm).all():
            raise ValueError(f"{path}: matrix of serial {serial} contains NaN or inf")
        ccms[serial] = ccm
    return ccms
