"""An analytic parametric head with NPHM's interface: the embedded default that needs no download.

Canonical geometry is a smooth union of ellipsoids (cranium, jaw, nose, lips, ears, eyes, neck); the colour
field carries detail at several scales (hair strands, brows, lips, irises, eye rims, skin texture). An
expression code moves local regions by an explicit, smooth forward displacement D(x_c, z); `backward`
inverts it by fixed-point iteration, so distillation has an exact ground truth. Units are metre-like (the
head is about 0.2 tall), y points up and the face looks along +z.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from npga.headmodel.base import Mesh, MouthRegion
from npga.headmodel.surface import zero_level_mesh

EXPRESSIONS: tuple[str, ...] = (
    "jaw_open",
    "smile",
    "lip_pucker",
    "brow_raise",
    "blink_left",
    "blink_right",
    "cheek_puff",
    "brow_furrow",
    "mouth_shift",
    "lip_stretch",
)
BACKWARD_ITERATIONS = 60  # the displacement's Lipschitz constant stays below ~0.6: 0.6^60 ~ 1e-13
EYE_CENTER = (0.029, 0.016, 0.071)  # the +x eye; the other mirrors it
EYE_RADII = (0.0135, 0.0115, 0.012)
MOUTH_LINE_Y = -0.047  # height of the closed lips' seam


@dataclass(frozen=True)
class HeadIdentity:
    """Everything that distinguishes one synthetic person; `seed` determines all other fields."""

    seed: int
    head_scale: tuple[float, float, float]  # cranium stretch in x, y, z
    jaw_width: float
    nose_length: float
    ear_size: float
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    lips: tuple[float, float, float]
    iris: tuple[float, float, float]
    hairline: float  # height of the hairline on the forehead
    strand_frequency: float  # hair strands per radian
    texture_phase: tuple[float, float, float]

    @classmethod
    def from_seed(cls, seed: int) -> HeadIdentity:
        rng = np.random.default_rng(seed)
        u = lambda lo, hi: float(rng.uniform(lo, hi))
        skin_tone = u(0.0, 1.0)
        skin = tuple(float(v) for v in np.array([0.93, 0.76, 0.64]) * (1 - 0.45 * skin_tone) + [0.02, 0.01, 0.0])
        hair_kind = rng.integers(0, 3)
        hair = [(0.16, 0.10, 0.06), (0.45, 0.30, 0.15), (0.08, 0.07, 0.07)][hair_kind]
        return cls(
            seed=seed,
            head_scale=(u(0.95, 1.05), u(0.96, 1.04), u(0.96, 1.05)),
            jaw_width=u(0.9, 1.1),
            nose_length=u(0.85, 1.2),
            ear_size=u(0.85, 1.15),
            skin=skin,  # type: ignore[arg-type]
            hair=tuple(float(c * u(0.85, 1.15)) for c in hair),  # type: ignore[arg-type]
            lips=(u(0.65, 0.8), u(0.3, 0.4), u(0.32, 0.42)),
            iris=tuple(float(c) for c in rng.choice([[0.25, 0.4, 0.6], [0.35, 0.22, 0.1], [0.3, 0.45, 0.3]])),  # type: ignore[arg-type]
            hairline=u(0.035, 0.05),
            strand_frequency=u(50.0, 80.0),
            texture_phase=(u(0, 2 * math.pi), u(0, 2 * math.pi), u(0, 2 * math.pi)),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadIdentity:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _ellipsoid_sdf(x: torch.Tensor, center, radii) -> torch.Tensor:
    """Approximate signed distance to an ellipsoid (exact on the surface, a bound elsewhere)."""
    c = x.new_tensor(center)
    r = x.new_tensor(radii)
    q = (x - c) / r
    k0 = q.norm(dim=-1)
    k1 = (q / r).norm(dim=-1)
    return k0 * (k0 - 1.0) / k1.clamp_min(1e-9)


def _smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    h = torch.clamp(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b * (1 - h) + a * h - k * h * (1 - h)


def _bump(x: torch.Tensor, center, sigma: float) -> torch.Tensor:
    """Gaussian radial weight (N,) around `center`."""
    return torch.exp(-0.5 * ((x - x.new_tensor(center)) ** 2).sum(-1) / sigma**2)


class SyntheticHead:
    """The analytic head: canonical SDF, colour field, forward displacement and its inverse."""

    def __init__(self, identity: HeadIdentity) -> None:
        self.identity = identity
        sx, sy, sz = identity.head_scale
        jw, nl, es = identity.jaw_width, identity.nose_length, identity.ear_size
        # (center, radii) of each part, in the canonical head frame.
        self._parts = [
            ((0.0, 0.025, -0.01), (0.074 * sx, 0.085 * sy, 0.092 * sz)),  # cranium
            ((0.0, -0.04, 0.018), (0.056 * jw, 0.05, 0.064)),  # jaw and cheeks
            ((0.0, -0.005, 0.079 + 0.004 * nl), (0.011, 0.022 * nl, 0.016 * nl)),  # nose
            ((0.0, -0.047, 0.074), (0.022, 0.008, 0.011)),  # lips
            ((0.074 * sx, 0.0, -0.01), (0.011, 0.026 * es, 0.016 * es)),  # ears
            ((-0.074 * sx, 0.0, -0.01), (0.011, 0.026 * es, 0.016 * es)),
            (EYE_CENTER, EYE_RADII),  # eyes
            ((-EYE_CENTER[0], *EYE_CENTER[1:]), EYE_RADII),
            ((0.0, -0.095, -0.015), (0.042, 0.06, 0.045)),  # neck
        ]

    @classmethod
    def from_seed(cls, seed: int) -> SyntheticHead:
        return cls(HeadIdentity.from_seed(seed))

    @classmethod
    def from_description(cls, description: dict[str, Any], base_dir: Path | None = None) -> SyntheticHead:
        """Rebuild from `description()` (the analytic head needs no files, so `base_dir` is unused)."""
        return cls(HeadIdentity.from_dict(description["identity"]))

    def description(self) -> dict[str, Any]:
        return {"type": "synthetic", "identity": asdict(self.identity)}

    @property
    def expression_dim(self) -> int:
        return len(EXPRESSIONS)

    @property
    def identity_vector(self) -> np.ndarray:
        """A 16-d summary of the identity, stored in the tracking file like NPHM's identity code."""
        i = self.identity
        v = [
            *i.head_scale,
            i.jaw_width,
            i.nose_length,
            i.ear_size,
            *i.skin,
            *i.hair,
            *i.lips[:1],
            i.hairline,
            i.strand_frequency / 100.0,
        ]
        return np.asarray(v, dtype=np.float32)

    def mouth_region(self) -> MouthRegion:
        """The lips' seam, 3 cm deep, a little wider than the band the capture's mouth effect darkens."""
        return MouthRegion(center=(0.0, MOUTH_LINE_Y, 0.074), radii=(0.048, 0.016, 0.03))

    @property
    def bounds(self) -> torch.Tensor:
        return torch.tensor([[-0.11, -0.17, -0.13], [0.11, 0.13, 0.13]])

    # ---- geometry -------------------------------------------------------------------------------
    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        d = None
        for center, radii in self._parts:
            e = _ellipsoid_sdf(x, center, radii)
            d = e if d is None else _smooth_min(d, e, 0.012)
        return d

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """Outward unit normals (N, 3) from the SDF gradient (central differences)."""
        h = 1e-4
        grads = []
        for axis in range(3):
            dx = x.new_zeros(3)
            dx[axis] = h
            grads.append(self.sdf(x + dx) - self.sdf(x - dx))
        return torch.nn.functional.normalize(torch.stack(grads, -1), dim=-1)

    def canonical_mesh(self, resolution: int = 128, device: torch.device | str = "cpu") -> Mesh:
        """Analytic and cheap: evaluated on the CPU in float64 whatever `device` says."""
        return zero_level_mesh(self.sdf, self.normals, self.bounds, resolution, dtype=torch.float64)

    # ---- appearance -----------------------------------------------------------------------------
    def color(self, x: torch.Tensor) -> torch.Tensor:
        i = self.identity
        x = x.to(torch.float32)
        px, py, pz = x.unbind(-1)
        ph = i.texture_phase
        skin = x.new_tensor(i.skin).expand(len(x), 3)
        # skin texture: pores and blotches at two scales
        fine = torch.sin(px * 900 + ph[0]) * torch.sin(py * 870 + ph[1]) * torch.sin(pz * 910 + ph[2])
        coarse = torch.sin(px * 120 + ph[1]) * torch.sin(py * 95 + ph[2]) + torch.sin(pz * 110 + ph[0])
        col = skin * (1.0 + 0.04 * fine[:, None] + 0.03 * coarse[:, None])
        # cheeks and nose tip slightly redder
        blush = _bump(x, (0.045, -0.02, 0.06), 0.018) + _bump(x, (-0.045, -0.02, 0.06), 0.018)
        blush = blush + 0.6 * _bump(x, (0.0, -0.015, 0.1), 0.01)
        col = col + blush[:, None] * x.new_tensor([0.08, -0.03, -0.03])
        # hair: everything above the hairline and behind the ears, with strands
        hair_mask = torch.sigmoid((py - i.hairline + 0.5 * torch.clamp(-pz, min=0) - 0.25 * torch.abs(px)) / 0.004)
        hair_mask = torch.maximum(hair_mask, torch.sigmoid((-pz - 0.03 + 0.6 * torch.clamp(-py - 0.02, min=0)) / 0.006))
        hair_mask = hair_mask * torch.sigmoid((py + 0.07) / 0.006)
        angle = torch.atan2(px, pz)
        strands = 0.5 + 0.5 * torch.sin(angle * i.strand_frequency + 30 * py + ph[0])
        strands = strands * (0.75 + 0.25 * torch.sin(angle * i.strand_frequency * 3.1 + ph[1]))
        hair_col = x.new_tensor(i.hair) * (0.6 + 0.7 * strands[:, None])
        col = col * (1 - hair_mask[:, None]) + hair_col * hair_mask[:, None]
        # brows: two arcs above the eyes, with a hair-like pattern
        for side in (1.0, -1.0):
            b = torch.exp(
                -0.5 * ((px - side * 0.03) / 0.014) ** 2
                - 0.5 * ((py - 0.038 - 40 * (px - side * 0.03) ** 2 * -1) / 0.0035) ** 2
            )
            b = b * (pz > 0.04).float() * (0.7 + 0.3 * torch.sin(px * 2000 + py * 300))
            col = col * (1 - b[:, None]) + x.new_tensor(i.hair)[None] * 0.8 * b[:, None]
        # lips
        lip = torch.exp(-0.5 * (px / 0.02) ** 4 - 0.5 * ((py + 0.047) / 0.0075) ** 2) * (pz > 0.06).float()
        col = col * (1 - lip[:, None]) + x.new_tensor(i.lips)[None] * lip[:, None]
        mouth_line = (
            torch.exp(-0.5 * ((py + 0.047) / 0.0012) ** 2) * torch.exp(-0.5 * (px / 0.02) ** 4) * (pz > 0.06).float()
        )
        col = col * (1 - 0.7 * mouth_line[:, None])
        # eyes: sclera, iris, pupil, dark rim
        for side in (1.0, -1.0):
            d_eye = ((x - x.new_tensor([side * 0.029, 0.016, 0.071])) / x.new_tensor([0.0135, 0.0115, 0.012])).norm(
                dim=-1
            )
            on_eye = torch.sigmoid((1.02 - d_eye) / 0.01) * (pz > 0.077).float()
            r = torch.sqrt((px - side * 0.029) ** 2 + (py - 0.016) ** 2)
            eye_col = torch.where(
                (r < 0.0028)[:, None],
                x.new_tensor([0.03, 0.03, 0.03]).expand(len(x), 3),
                torch.where(
                    (r < 0.0062)[:, None],
                    x.new_tensor(i.iris).expand(len(x), 3)
                    * (0.8 + 0.2 * torch.sin(torch.atan2(py - 0.016, px) * 24))[:, None],
                    x.new_tensor([0.92, 0.9, 0.88]).expand(len(x), 3),
                ),
            )
            rim = torch.exp(-0.5 * ((d_eye - 1.0) / 0.08) ** 2) * (pz > 0.07).float()
            col = col * (1 - on_eye[:, None]) + eye_col * on_eye[:, None]
            col = col * (1 - 0.5 * rim[:, None])
        return col.clamp(0.0, 1.0)

    # ---- deformation ----------------------------------------------------------------------------
    def forward_displacement(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """D(x_c, z) (N, 3): the posed position of canonical x is x + D. Smooth, local, at most ~1.5 cm."""
        z = z.to(x.dtype)
        if z.ndim == 1:
            z = z[None].expand(len(x), -1)
        px, py, pz = x.unbind(-1)
        front = torch.sigmoid((pz - 0.02) / 0.01)
        zero = torch.zeros_like(px)
        d = torch.zeros_like(x)

        def add(weight: torch.Tensor, code: torch.Tensor, v: tuple[float, float, float] | torch.Tensor) -> None:
            vec = v if isinstance(v, torch.Tensor) else x.new_tensor(v).expand_as(x)
            d.add_((weight * code)[:, None] * vec)

        # jaw opening: everything below the mouth line drops and swings back a little
        below = torch.sigmoid((-0.05 - py) / 0.012) * torch.sigmoid((py + 0.125) / 0.012) * front
        add(below, z[:, 0], (0.0, -0.015, -0.004))
        # smile: mouth corners out and up
        for s in (1.0, -1.0):
            add(_bump(x, (s * 0.022, -0.047, 0.07), 0.013), z[:, 1], (s * 0.005, 0.005, -0.002))
            add(_bump(x, (s * 0.02, -0.047, 0.07), 0.012), z[:, 9], (s * 0.006, 0.0, 0.0))  # lip stretch
            add(_bump(x, (s * 0.03, 0.04, 0.075), 0.016), z[:, 3], (0.0, 0.006, 0.001))  # brow raise
            add(_bump(x, (s * 0.014, 0.036, 0.082), 0.009), z[:, 7], (-s * 0.003, -0.0025, 0.0))  # brow furrow
            add(_bump(x, (s * 0.045, -0.028, 0.055), 0.017), z[:, 6], (s * 0.006, 0.0, 0.004))  # cheek puff
        add(_bump(x, (0.0, -0.047, 0.078), 0.011), z[:, 2], (0.0, 0.0, 0.006))  # lip pucker
        add(_bump(x, (0.0, -0.047, 0.075), 0.016), z[:, 8], (0.005, 0.0, 0.0))  # mouth shift
        # blinks: the upper lid slides down over the eyeball
        for k, s in ((4, 1.0), (5, -1.0)):
            lid = _bump(x, (s * 0.029, 0.027, 0.07), 0.0075) * torch.sigmoid((py - 0.02) / 0.003)
            add(lid, z[:, k], torch.stack([zero, zero - 0.006, zero + 0.0015], -1))
        return d

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x + self.forward_displacement(x, z)

    def backward(self, x_posed: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
        """Canonical x with x + D(x, z) = x_posed, by fixed-point iteration x <- x_posed - D(x, z)."""
        xp = x_posed.double()
        z = z_ex.double()
        x = xp.clone()
        for _ in range(BACKWARD_ITERATIONS):
            x = xp - self.forward_displacement(x, z)
        return x.to(x_posed.dtype)
