"""A trained avatar as one object that renders any expression, head pose and camera.

It holds what the avatar file holds (`npga.avatar.file`): canonical Gaussians, networks, the tracked
motion of the capture's sequences (playback), statistics of the training codes (expression sliders), the
rig's cameras, the split it was trained with, its head model's description and provenance. It needs no
capture, no frame cache and no trainer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from npga.avatar.config import AvatarConfig
from npga.avatar.deform import AvatarNets, Gaussians, deform, express, pose
from npga.avatar.precision import Resolved, network_precision
from npga.avatar.render import render_gaussians
from npga.cameras import Camera, stack_cameras
from npga.split import Split

MIN_CODE_STD = 1e-6
"""Training codes spreading less than this along a principal direction do not move along it."""


@dataclass(frozen=True)
class Motion:
    """One tracked sequence: what drives the avatar frame by frame.

    When training refined the capture's tracking (`--refine-tracking`), `expression` and `head_pose` are the
    refined values, which the avatar was trained with and plays back, and the capture's own stand beside them."""

    expression: torch.Tensor  # (T, D)
    head_pose: torch.Tensor  # (T, 4, 4) head -> world similarity
    timesteps: torch.Tensor  # (T,) int64 video frame of each row
    tracked_expression: torch.Tensor | None = None  # (T, D) the capture's tracking before refinement; None: as is
    tracked_head_pose: torch.Tensor | None = None  # (T, 4, 4)

    def __len__(self) -> int:
        return len(self.expression)

    @property
    def refined(self) -> bool:
        return self.tracked_expression is not None

    def to(self, device: torch.device | str) -> Motion:
        return Motion(*(None if t is None else t.to(device) for t in dataclasses.astuple(self)))


@dataclass(frozen=True)
class CodeStats:
    """Where the training codes lie, and the whitened coordinates along them that the viewer's sliders and the
    tracker move: one unit along a direction is one standard deviation of the training codes, so one step size
    (or slider range) suits every direction."""

    mean: torch.Tensor  # (D,)
    directions: torch.Tensor  # (K, D) orthonormal principal directions, largest variance first
    std: torch.Tensor  # (K,) standard deviation of the codes along each direction
    low: torch.Tensor  # (K,) smallest projection of a training code on each direction
    high: torch.Tensor  # (K,) largest projection
    min: torch.Tensor  # (D,) per-component range of the training codes
    max: torch.Tensor  # (D,)

    @property
    def unit(self) -> torch.Tensor:
        """(K,) one whitened unit along each direction: its standard deviation, floored at MIN_CODE_STD so that a
        direction the training codes never moved along neither divides by zero nor counts as moving."""
        return self.std.clamp_min(MIN_CODE_STD)

    @property
    def n_moving(self) -> int:
        """How many directions the training codes really spread along (the rest are rounding noise)."""
        return int((self.std > MIN_CODE_STD).sum())

    def whiten(self, code: torch.Tensor) -> torch.Tensor:
        """(..., D) code -> (..., K) whitened coordinates about the mean."""
        return ((code - self.mean) @ self.directions.T) / self.unit

    def offset(self, a: torch.Tensor) -> torch.Tensor:
        """(k,) whitened coordinates along the first k <= K directions -> (D,) change of a code."""
        k = a.shape[-1]
        return (a * self.unit[:k]) @ self.directions[:k]

    def unwhiten(self, a: torch.Tensor) -> torch.Tensor:
        """(k,) whitened coordinates -> (D,) code: the mean moved by `offset(a)`."""
        return self.mean + self.offset(a)


def code_stats(codes: torch.Tensor) -> CodeStats:
    """Mean, principal directions and ranges of training codes (T, D), by SVD of the centred codes."""
    codes = codes.double()
    mean = codes.mean(0)
    centred = codes - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)  # vh (K, D), K = min(T, D)
    proj = centred @ vh.T  # (T, K)
    f = lambda t: t.float().contiguous()
    return CodeStats(
        mean=f(mean),
        directions=f(vh),
        std=f(s / max(len(codes) - 1, 1) ** 0.5),
        low=f(proj.min(0).values),
        high=f(proj.max(0).values),
        min=f(codes.min(0).values),
        max=f(codes.max(0).values),
    )


@dataclass
class Avatar:
    config: AvatarConfig
    params: dict[str, torch.Tensor]  # per-Gaussian canonical parameters (npga.avatar.init.PER_GAUSSIAN_KEYS)
    nets: AvatarNets
    motions: dict[str, Motion]
    codes: CodeStats
    cameras: dict[str, Camera]  # the rig's cameras at the training image size
    split: Split
    head_model: dict[str, Any]  # the head model's description (npga.headmodel.head_model_from_description)
    provenance: dict[str, Any] = field(default_factory=dict)  # version, commit, config, step, PSNR at save
    precision: Resolved = "float32"  # what the networks run in when drawing (npga.avatar.precision); not saved

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def n_gaussians(self) -> int:
        return len(self.params["means"])

    @property
    def step(self) -> int:
        return int(self.provenance.get("step", 0))

    @property
    def background(self) -> torch.Tensor:
        """(3,) the colour the avatar renders on."""
        return torch.tensor(self.config.background, dtype=torch.float32, device=self.device)

    def motion(self, sequence: str) -> Motion:
        if sequence not in self.motions:
            raise KeyError(f"the avatar has no sequence {sequence!r} (sequences: {list(self.motions)})")
        return self.motions[sequence]

    def tracked(self, sequence: str, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame `t`'s expression code (D,) and head pose (4, 4) of one of the avatar's sequences."""
        m = self.motion(sequence)
        if not 0 <= t < len(m):
            raise IndexError(f"frame {t} out of range for {sequence} ({len(m)} frames)")
        return m.expression[t], m.head_pose[t]

    @torch.no_grad()
    def expressed(self, z_ex: torch.Tensor, precision: Resolved | None = None) -> Gaussians:
        """The Gaussians for a code (D,) in the head's frame (no head pose), the networks run in `precision`
        (default: the avatar's)."""
        with network_precision(precision or self.precision, self.device):
            return express(self.params, self.nets, z_ex.float().to(self.device))

    @torch.no_grad()
    def gaussians(self, z_ex: torch.Tensor, head_pose: torch.Tensor) -> Gaussians:
        """The posed Gaussians for a code (D,) and head pose (4, 4), the networks run in `precision`."""
        return pose(self.expressed(z_ex), head_pose.float().to(self.device))

    @torch.no_grad()
    def canonical_gaussians(self) -> Gaussians:
        """The canonical Gaussians as they are stored: no coarse or detail motion, no head pose."""
        z = torch.zeros(self.config.expression_dim, device=self.device)
        return deform(self.params, AvatarNets(None, None, None), z, torch.eye(4, device=self.device))

    @torch.no_grad()
    def render_code(
        self,
        z_ex: torch.Tensor,
        head_pose: torch.Tensor,
        cameras: Sequence[Camera],
        background: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb (C, H, W, 3) and alpha (C, H, W, 1) for any code (D,) and pose (4, 4), on `background` (3,)
        (default: the avatar's own)."""
        viewmats, Ks = stack_cameras(cameras, device=self.device)
        g = self.gaussians(z_ex, head_pose)
        bg = self.background if background is None else background.to(self.device, torch.float32)
        rgb, alpha, _ = render_gaussians(g, viewmats, Ks, cameras[0].width, cameras[0].height, bg, self.nets.cnn)
        return rgb.clamp(0, 1), alpha

    def render(self, sequence: str, t: int, cameras: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame `t` of one of the avatar's sequences (`npga.evaluate.Renderer`'s signature)."""
        return self.render_code(*self.tracked(sequence, t), cameras)
