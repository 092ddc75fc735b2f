"""Posed Gaussians as viser's in-browser splat renderer takes them, split into a buffer and a node pose.

The buffer holds the Gaussians in the head's frame; the scene node carries the head's rigid motion. A
tracked head that only turns or moves therefore changes the node's pose (a few bytes), never the buffer
(32 bytes per Gaussian). The head pose's uniform scale is baked into the buffer: it is not rigid motion.

viser stores covariances as float16, whose smallest normal number is 6e-5: a head in metres has Gaussians of
about 1 mm (variance 1e-6), which would lose most of their precision or flush to zero and draw as faint
smudges. So the buffer is written in a `unit` chosen per avatar (its typical Gaussian is about 1 unit across)
and the scene node scales it back by 1 / unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from npga.avatar.deform import Gaussians
from npga.geometry import matrix_to_quat
from npga.render.projection import quat_scale_to_covar


@dataclass(frozen=True)
class HeadPose:
    """A head -> world similarity split as x_world = scale * R x + translation."""

    wxyz: np.ndarray  # (4,) R as a unit quaternion
    translation: np.ndarray  # (3,)
    scale: float


def split_head_pose(head_pose: torch.Tensor) -> HeadPose:
    """Rotation, translation and uniform scale of a similarity (4, 4)."""
    A = head_pose[:3, :3].double().cpu()  # (3, 3) = s R
    s = float(torch.linalg.det(A).abs().pow(1.0 / 3.0))
    return HeadPose(
        wxyz=matrix_to_quat(A / s).reshape(4).numpy(), translation=head_pose[:3, 3].double().cpu().numpy(), scale=s
    )


@dataclass(frozen=True)
class SplatBuffer:
    """The arrays of viser's `add_gaussian_splats` / `set_gaussians`, in the scene node's frame."""

    centers: np.ndarray  # (N, 3) float32, in units of 1 / node_scale
    covariances: np.ndarray  # (N, 3, 3) float32, same units squared
    rgbs: np.ndarray  # (N, 3) float32 in [0, 1]
    opacities: np.ndarray  # (N, 1) float32 in [0, 1]
    node_scale: float  # the scene node's scale that brings the buffer back to world units

    @property
    def wire_bytes(self) -> int:
        """What viser sends for it: 32 bytes per Gaussian (float32 centre, float16 covariance, RGBA8)."""
        return 32 * len(self.centers)


def splat_unit(scales: torch.Tensor) -> float:
    """Buffer units per world unit for Gaussians of standard deviations `scales` (N, 3): the median one
    becomes 1, well inside float16's range."""
    return 1.0 / max(float(scales.median()), 1e-12)


def splat_buffer(
    head: Gaussians, scale: float, unit: float, colors: torch.Tensor | None = None, size: float | None = None
) -> SplatBuffer:
    """The buffer for Gaussians posed in the head's frame (no head pose applied), scaled by the pose's `scale`,
    in `unit`s (`splat_unit`).

    `colors` (N, 3) replaces the Gaussians' own; `size` draws each as an opaque sphere of that standard
    deviation (to see where the centres are).
    """
    scales = head.scales if size is None else torch.full_like(head.scales, size / scale)  # (N, 3)
    covariances = quat_scale_to_covar(head.quats, scales * (scale * unit))  # (N, 3, 3)
    opacities = head.opacities if size is None else torch.ones_like(head.opacities)  # (N,)
    rgbs = head.colors if colors is None else colors  # (N, 3)
    as_numpy = lambda t: t.detach().float().cpu().numpy()
    return SplatBuffer(
        centers=as_numpy(head.means * (scale * unit)),
        covariances=as_numpy(covariances),
        rgbs=as_numpy(rgbs.clamp(0, 1)),
        opacities=as_numpy(opacities[:, None]),
        node_scale=1.0 / unit,
    )
