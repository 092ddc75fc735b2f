"""What the synthetic capture shows but the head model handed to training does not explain.

Real captures hold more than an NPHM code explains: wrinkles and folds that come and go with an expression,
the mouth's interior, shading that follows the deformed surface, eyeball rotation, and a tracker's errors.
The capture generator renders these on top of the smooth `SyntheticHead`, while `headmodel.json` keeps
describing the smooth head, so the detail network, the latent features and the CNN have real work to do
(the head model's exact forward field stays the ground truth of distillation). Every effect is switchable
by name; all functions are pure and batched over points (N, 3) in the canonical head frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from npga.geometry import axis_angle_to_matrix
from npga.headmodel import EXPRESSIONS, SyntheticHead
from npga.headmodel.synthetic import EYE_CENTER, EYE_RADII, MOUTH_LINE_Y

Effect = Literal["shading", "wrinkles", "mouth", "folds", "gaze", "tracking_noise"]
ALL_EFFECTS: tuple[Effect, ...] = ("shading", "wrinkles", "mouth", "folds", "gaze", "tracking_noise")
LIGHT = torch.tensor([0.35, 0.45, 1.0], dtype=torch.float64) / math.sqrt(0.35**2 + 0.45**2 + 1.0)
_CODE = {name: i for i, name in enumerate(EXPRESSIONS)}
GAZE_SHIFT = 0.0025  # iris travel (head units) at full gaze: ~12 degrees of eyeball rotation
JACOBIAN_STEP = 2e-4  # central-difference step (head units) for the deformed normals: float32-safe, << folds


@dataclass(frozen=True)
class TrackingNoise:
    """How far the tracking written into the capture is from the codes and poses that rendered it."""

    rotation_jitter_deg: float = 0.05
    """Per-frame head rotation error (standard deviation per axis, degrees)."""
    rotation_drift_deg: float = 0.1
    """Slow head rotation drift over a sequence (standard deviation per axis, degrees)."""
    translation_jitter: float = 5e-5
    """Per-frame head translation error (head units; 5e-5 is 0.05 mm on this metre-like head)."""
    translation_drift: float = 1.5e-4
    """Slow head translation drift (head units)."""
    expression_jitter: float = 0.01
    """Per-frame error of every expression component (codes span [-1, 1])."""
    expression_drift: float = 0.02
    """Slow drift of every expression component."""


def _code(z: torch.Tensor, name: str) -> torch.Tensor:
    return z[_CODE[name]]


def _lip_profile(x: torch.Tensor) -> torch.Tensor:
    """(N,) 1 across the mouth's width at the front of the face, 0 elsewhere."""
    px, _, pz = x.unbind(-1)
    return torch.exp(-0.5 * (px / 0.02) ** 4) * torch.sigmoid((pz - 0.06) / 0.003)


def _nasolabial_distance(x: torch.Tensor) -> torch.Tensor:
    """(N,) signed xy-distance to the fold from the nose wing to the mouth corner (positive: cheek side)."""
    px, py, _ = x.unbind(-1)
    ax, ay, bx, by = 0.016, -0.012, 0.029, -0.04  # segment on the +x side, mirrored for -x
    dx, dy = bx - ax, by - ay
    length = math.hypot(dx, dy)
    qx, qy = px.abs() - ax, py - ay
    along = ((qx * dx + qy * dy) / length**2).clamp(0.0, 1.0)
    ex, ey = qx - along * dx, qy - along * dy
    side = torch.sign(qx * dy - qy * dx) * -1.0  # outward normal of the segment points to the cheek
    return side * torch.sqrt(ex**2 + ey**2 + 1e-12)


def _forehead_window(x: torch.Tensor) -> torch.Tensor:
    px, py, pz = x.unbind(-1)
    return (
        torch.exp(-0.5 * (px / 0.035) ** 4)
        * torch.sigmoid((py - 0.03) / 0.003)
        * torch.sigmoid((0.058 - py) / 0.004)
        * torch.sigmoid((pz - 0.05) / 0.005)
    )


def fold_height(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Skin folds (N,) along the outward normal, in head units: forehead lines on brow raise, frown lines
    on brow furrow, nasolabial folds on smile. Sub-millimetre, so only the renderer's head has them."""
    px, py, pz = x.unbind(-1)
    front = torch.sigmoid((pz - 0.05) / 0.005)
    brow = _code(z, "brow_raise").clamp_min(0.0)
    forehead = 5e-4 * brow * torch.sin(2 * math.pi * (py - 0.03) / 0.007) * _forehead_window(x)
    furrow = _code(z, "brow_furrow").clamp_min(0.0)
    frown = -6e-4 * furrow * torch.exp(-0.5 * ((px.abs() - 0.006) / 0.0015) ** 2 - 0.5 * ((py - 0.03) / 0.007) ** 2)
    smile = _code(z, "smile").clamp_min(0.0)
    s = _nasolabial_distance(x)
    nasolabial = (
        8e-4 * smile * (torch.exp(-0.5 * ((s - 0.0025) / 0.002) ** 2) - 0.7 * torch.exp(-0.5 * (s / 0.0012) ** 2))
    )
    return forehead + frown * front + nasolabial * front


def lip_offset(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(N, 3) lip detail: the lips part further than the jaw alone opens them, and pout on pucker."""
    _, py, _ = x.unbind(-1)
    lips = _lip_profile(x)
    below = torch.sigmoid((MOUTH_LINE_Y - py) / 0.0008) * torch.sigmoid((py - MOUTH_LINE_Y + 0.012) / 0.002)
    above = torch.sigmoid((py - MOUTH_LINE_Y) / 0.0008) * torch.sigmoid((MOUTH_LINE_Y + 0.01 - py) / 0.002)
    jaw = _code(z, "jaw_open").clamp_min(0.0)
    pucker = _code(z, "lip_pucker").clamp_min(0.0)
    on_lip = torch.exp(-0.5 * ((py - MOUTH_LINE_Y) / 0.0075) ** 2)
    dy = lips * jaw * (-0.0018 * below + 0.0006 * above)
    dz = lips * pucker * 0.0012 * on_lip
    return torch.stack([torch.zeros_like(dy), dy, dz], -1)


def fine_displacement(
    x: torch.Tensor, normals: torch.Tensor, z: torch.Tensor, effects: tuple[Effect, ...]
) -> torch.Tensor:
    """(N, 3) the renderer's geometry beyond the head model: folds along `normals` (N, 3) and lip detail."""
    if "folds" not in effects:
        return torch.zeros_like(x)
    return fold_height(x, z)[:, None] * normals + lip_offset(x, z)


def deformed_normals(displacement, x: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Unit normals (N, 3) of the surface x + displacement(x): n' ~ J^-T n with J = I + dD/dx by central
    differences (an exact transform of the canonical normals, no mesh facets)."""
    columns = []
    for axis in range(3):
        step = torch.zeros(3, dtype=x.dtype)
        step[axis] = JACOBIAN_STEP
        columns.append((displacement(x + step) - displacement(x - step)) / (2 * JACOBIAN_STEP))
    J = torch.eye(3, dtype=x.dtype) + torch.stack(columns, -1)  # (N, 3, 3), J[:, i, j] = d x'_i / d x_j
    n = torch.linalg.solve(J.transpose(1, 2), normals[..., None])[..., 0]
    return torch.nn.functional.normalize(n, dim=-1)


def crease_darkening(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """(N,) albedo factor in (0, 1]: the bottoms of wrinkles and folds get less light."""
    px, py, _ = x.unbind(-1)
    brow = _code(z, "brow_raise").clamp_min(0.0)
    lines = torch.sin(2 * math.pi * (py - 0.03) / 0.007).clamp_max(0.0) ** 2
    forehead = 0.3 * brow * lines * _forehead_window(x)
    furrow = _code(z, "brow_furrow").clamp_min(0.0)
    frown = 0.3 * furrow * torch.exp(-0.5 * ((px.abs() - 0.006) / 0.001) ** 2 - 0.5 * ((py - 0.03) / 0.007) ** 2)
    smile = _code(z, "smile").clamp_min(0.0)
    nasolabial = 0.2 * smile * torch.exp(-0.5 * (_nasolabial_distance(x) / 0.001) ** 2)
    nasolabial = nasolabial * torch.sigmoid((x[:, 2] - 0.05) / 0.005)
    return (1.0 - forehead - frown - nasolabial).clamp(0.3, 1.0)


def mouth_interior(x: torch.Tensor, z: torch.Tensor, albedo: torch.Tensor) -> torch.Tensor:
    """(N, 3) albedo with the dark mouth interior and the upper teeth where the opened lips part."""
    px, py, _ = x.unbind(-1)
    jaw = _code(z, "jaw_open").clamp(0.0, 1.0)
    half = 0.0006 + 0.0035 * jaw  # canonical half-height of the opening
    dy = py - MOUTH_LINE_Y
    inside = torch.sigmoid((half - dy.abs()) / 0.0004) * _lip_profile(x) * torch.sigmoid((jaw - 0.1) / 0.05)
    teeth = torch.sigmoid((dy - 0.2 * half) / 0.0003) * (0.9 + 0.1 * torch.cos(2 * math.pi * px / 0.0045)) ** 2
    dark = (
        albedo.new_tensor([0.12, 0.03, 0.04]) * (1 - teeth[:, None])
        + albedo.new_tensor([0.9, 0.88, 0.8]) * teeth[:, None]
    )
    return albedo * (1 - inside[:, None]) + dark * inside[:, None]


def gazed(x: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
    """(N, 3) where to look up the colour so that the irises turn by `gaze` (2,) in [-1, 1] (right, up):
    eyeball points shift against the gaze, fading out before the eye's rim so that the lids stay put."""
    shift = torch.zeros(3, dtype=x.dtype)
    shift[:2] = gaze.to(x.dtype) * GAZE_SHIFT
    out = x
    for side in (1.0, -1.0):
        center = x.new_tensor([side * EYE_CENTER[0], EYE_CENTER[1], EYE_CENTER[2]])
        d = ((x - center) / x.new_tensor(EYE_RADII)).norm(dim=-1)
        core = torch.sigmoid((0.8 - d) / 0.04) * (x[:, 2] > EYE_CENTER[2]).to(x.dtype)
        out = out - core[:, None] * shift
    return out


def shade(
    head: SyntheticHead,
    x: torch.Tensor,
    normals: torch.Tensor,
    z: torch.Tensor,
    gaze: torch.Tensor,
    effects: tuple[Effect, ...],
) -> torch.Tensor:
    """Linear RGB (N, 3) of canonical points x (N, 3) with world-space normals (N, 3) under one light."""
    albedo = head.color((gazed(x, gaze) if "gaze" in effects else x).float()).to(x.dtype)
    if "wrinkles" in effects:
        albedo = albedo * crease_darkening(x, z)[:, None]
    if "mouth" in effects:
        albedo = mouth_interior(x, z, albedo)
    n = torch.nn.functional.normalize(normals, dim=-1)
    light = 0.55 + 0.45 * (n @ LIGHT.to(n.dtype)).clamp_min(0.0)
    return (albedo * light[:, None]).clamp(0.0, 1.0)


def _smooth_track(n: int, std: float, dims: int, rng: np.random.Generator) -> np.ndarray:
    """(n, dims) slow random curves of standard deviation `std`: a sinusoid of under one cycle per sequence."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    freq, phase = rng.uniform(0.3, 1.0, dims), rng.uniform(0.0, 2 * np.pi, dims)
    return std * math.sqrt(2.0) * np.sin(2 * np.pi * freq * t + phase)


def gaze_track(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) gaze (right, up) in [-1, 1]: slow wandering plus a few quick saccades, not in any code."""
    slow = _smooth_track(n, 0.35, 2, rng)
    jumps = np.zeros((n, 2))
    for start in rng.integers(0, n, size=max(1, n // 12)):
        jumps[start:] += rng.normal(0.0, 0.3, 2)
    return np.clip(slow + jumps - jumps.mean(0), -1.0, 1.0)


def noisy_tracking(
    codes: np.ndarray,  # (n, D)
    rotation: np.ndarray,  # (n, 3, 3)
    translation: np.ndarray,  # (n, 3)
    noise: TrackingNoise,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a tracker would report: the true values plus per-frame jitter and a slow drift."""
    n, dims = codes.shape
    deg = math.pi / 180.0
    w = rng.normal(0.0, noise.rotation_jitter_deg * deg, (n, 3)) + _smooth_track(
        n, noise.rotation_drift_deg * deg, 3, rng
    )
    dt = rng.normal(0.0, noise.translation_jitter, (n, 3)) + _smooth_track(n, noise.translation_drift, 3, rng)
    dz = rng.normal(0.0, noise.expression_jitter, (n, dims)) + _smooth_track(n, noise.expression_drift, dims, rng)
    return codes + dz, axis_angle_to_matrix(torch.from_numpy(w)).numpy() @ rotation, translation + dt
