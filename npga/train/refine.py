"""Per-frame corrections of the training frames' tracking, optimised with the avatar (`--refine-tracking`).

Every real capture arrives with a tracker's errors, and an avatar trained on them learns them: a frame whose
tracked pose is off by a tenth of a degree blurs the canonical head, and a detail network fed each frame's unique
code learns that frame's error. So each training frame gets a small correction, moved by the same images that
train the avatar: a rigid one applied in the head's own frame (refined pose = tracked pose @ C_t, with C_t a
rotation by the axis-angle w_t about the head's centre, a translation s_t in head units and, optionally, a scale
exp(l_t)), and an additive one of the expression code (z_t + d_t).

Gauge: a correction shared by every frame is absorbed by the canonical Gaussians (a rigidly moved canonical head
draws the same images), so nothing in the images fixes it and it would drift. After every step the corrections'
mean over all training frames is removed: the refined tracking keeps the capture's average pose and code, and
only frame-to-frame errors move. Priors keep each correction small (in units of a typical tracker error) and,
optionally, neighbouring frames' corrections alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from npga.avatar.model import Motion
from npga.geometry import axis_angle_to_matrix


@dataclass(frozen=True)
class RefineConfig:
    start: int = 100
    """Step from which the corrections move: first the avatar learns a rough fit to the capture's tracking."""
    lr_rotation: float = 1e-4
    """Adam step of each frame's rotation correction (radians)."""
    lr_translation: float = 2e-5
    """Adam step of each frame's translation correction (head units)."""
    lr_scale: float = 0.0
    """Adam step of each frame's log scale correction; 0: the scale stays as tracked."""
    lr_expression: float = 1e-3
    """Adam step of each frame's expression code correction (code units)."""
    lr_final: float = 0.1
    """Factor every correction's learning rate decays to (exponentially) from `start` to the last step: each
    frame is drawn only every few dozen steps with one camera, so its correction's steps are noisy; large early
    steps find the error, small late ones average the cameras' views of it."""
    prior: float = 1e-3
    """Weight of the corrections' mean squared size, each in units of its typical error below."""
    smooth: float = 0.0
    """Weight of the mean squared change of the corrections between neighbouring frames of a sequence, in the
    same units (0: frames are corrected independently; a tracker's per-frame jitter is not smooth)."""
    rotation_error: float = 2e-3
    """A typical tracker's rotation error (radians): the unit of the rotation priors."""
    translation_error: float = 2e-4
    """A typical tracker's translation error (head units): the unit of the translation priors."""
    scale_error: float = 2e-3
    """A typical tracker's log scale error: the unit of the scale priors."""
    expression_error: float = 0.03
    """A typical tracker's error of an expression component: the unit of the expression priors."""


class TrackingCorrections(nn.Module):
    """One correction per training frame, rows ordered by sequence (`offsets`), then by frame."""

    def __init__(self, frames: Mapping[str, int], expression_dim: int, pivot: torch.Tensor) -> None:
        super().__init__()
        self.offsets: dict[str, int] = {}
        n = 0
        for seq, count in frames.items():
            self.offsets[seq] = n
            n += count
        self.lengths = dict(frames)
        device = pivot.device
        self.rotation = nn.Parameter(torch.zeros(n, 3, device=device))  # (F, 3) axis-angle
        self.translation = nn.Parameter(torch.zeros(n, 3, device=device))  # (F, 3) head units
        self.log_scale = nn.Parameter(torch.zeros(n, device=device))  # (F,)
        self.expression = nn.Parameter(torch.zeros(n, expression_dim, device=device))  # (F, D)
        self.register_buffer("pivot", pivot.detach().clone())  # (3,) the head's centre, canonical coordinates

    def rows(self, seq: str) -> slice:
        start = self.offsets[seq]
        return slice(start, start + self.lengths[seq])

    def matrices(self, rows: slice | int) -> torch.Tensor:
        """(..., 4, 4) C = [exp(l) R | p - exp(l) R p + s]: rotation and scale about the pivot p, then the shift."""
        sr = self.log_scale[rows].exp()[..., None, None] * axis_angle_to_matrix(self.rotation[rows])  # (..., 3, 3)
        shift = self.pivot - sr @ self.pivot + self.translation[rows]  # (..., 3)
        top = torch.cat([sr, shift[..., None]], -1)  # (..., 3, 4)
        bottom = torch.zeros_like(top[..., :1, :])
        bottom[..., 0, 3] = 1.0
        return torch.cat([top, bottom], -2)

    def apply(self, seq: str, t: int, code: torch.Tensor, head_pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The refined (code (D,), head pose (4, 4)) of frame `t` of `seq` from its tracked ones."""
        i = self.offsets[seq] + t
        return code + self.expression[i], head_pose @ self.matrices(i)

    def penalties(self, cfg: RefineConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """(prior, smooth): the corrections' mean squared size, and the mean squared change between neighbouring
        frames of each sequence, every kind in units of its typical error."""
        kinds = [
            (self.rotation, cfg.rotation_error),
            (self.translation, cfg.translation_error),
            (self.expression, cfg.expression_error),
        ]
        if cfg.lr_scale > 0:
            kinds.append((self.log_scale[:, None], cfg.scale_error))
        prior = sum((v / unit).square().mean() for v, unit in kinds)
        steps = [torch.cat([v[self.rows(s)].diff(dim=0) for s in self.offsets]) / unit for v, unit in kinds]
        smooth = sum(d.square().mean() for d in steps) if len(steps[0]) else prior.new_zeros(())
        return prior, smooth

    @torch.no_grad()
    def remove_mean(self) -> None:
        """Pin the gauge: no correction shared by every training frame (the canonical head absorbs that one)."""
        for p in (self.rotation, self.translation, self.log_scale, self.expression):
            p -= p.mean(0)

    @torch.no_grad()
    def refined(self, seq: str, motion: Motion) -> Motion:
        """`motion` (the capture's tracking of `seq`) with the corrections applied, the tracking kept beside it."""
        rows = self.rows(seq)
        device = motion.expression.device
        expression = motion.expression + self.expression[rows].to(device)
        head_pose = motion.head_pose @ self.matrices(rows).to(device)
        return Motion(expression, head_pose, motion.timesteps, motion.expression, motion.head_pose)


REFINE_RATES = ("lr_rotation", "lr_translation", "lr_scale", "lr_expression")
"""The learning rates of `RefineConfig` (`lr_final` is a decay factor)."""


def _kinds(corrections: TrackingCorrections, cfg: RefineConfig) -> tuple[tuple[nn.Parameter, float], ...]:
    return (
        (corrections.rotation, cfg.lr_rotation),
        (corrections.translation, cfg.lr_translation),
        (corrections.log_scale, cfg.lr_scale),
        (corrections.expression, cfg.lr_expression),
    )


def make_refine_optimizer(corrections: TrackingCorrections, cfg: RefineConfig) -> torch.optim.Adam:
    """Adam with one learning rate per kind of correction; a kind whose rate is 0 is frozen (stays as tracked)."""
    kinds = _kinds(corrections, cfg)
    if not any(lr > 0 for _, lr in kinds):
        raise ValueError("--refine-tracking: every refine.lr_* is 0, so nothing would be refined")
    for p, lr in kinds:
        p.requires_grad_(lr > 0)
    return torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in kinds if lr > 0])


def refine_learning_rates(corrections: TrackingCorrections, cfg: RefineConfig, step: int, steps: int) -> list[float]:
    """The optimiser's learning rates at `step` of a run of `steps`, in its group order: each kind's rate decayed
    exponentially from `cfg.start` (x1) to the last step (x `cfg.lr_final`)."""
    frac = min(max((step - cfg.start) / max(steps - 1 - cfg.start, 1), 0.0), 1.0)
    return [lr * cfg.lr_final**frac for _, lr in _kinds(corrections, cfg) if lr > 0]
