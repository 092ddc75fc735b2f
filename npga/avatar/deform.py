"""`deform`: canonical Gaussians + networks + one frame's expression and head pose -> posed Gaussians.

A pure function of its inputs (no "current frame", no cached state): the trainer, the evaluator and the
viewer all call it the same way. Order: coarse motion x_c + G(x_c, z), detail residuals from the detail
MLP (`express`: everything the expression does, in the head's frame), then the frame's rigid head pose (a
similarity: rotation, uniform scale, translation; `pose`). Renderers that show one expression from many
head poses keep `express`'s result and only `pose` it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from npga.avatar.cnn import ScreenCNN
from npga.avatar.dynamics import RESIDUAL_SLICES, DetailMLP
from npga.deform.field import ForwardField
from npga.geometry import matrix_to_quat, quat_multiply


@dataclass(frozen=True)
class Gaussians:
    """Posed, activated Gaussians ready for `rasterize`."""

    means: torch.Tensor  # (N, 3) world
    quats: torch.Tensor  # (N, 4) wxyz, unit
    scales: torch.Tensor  # (N, 3) standard deviations
    opacities: torch.Tensor  # (N,) in [0, 1]
    colors: torch.Tensor  # (N, 3) in [0, 1]
    features: torch.Tensor | None  # (N, F) latent features (rendered for the CNN)
    residuals: torch.Tensor | None  # (N, 14) detail MLP output (RESIDUAL_SLICES), for regularisation


class AvatarNets(nn.Module):
    """The avatar's networks; any of them may be absent (the ablation's rows)."""

    def __init__(self, coarse: ForwardField | None, detail: DetailMLP | None, cnn: ScreenCNN | None) -> None:
        super().__init__()
        self.coarse = coarse
        self.detail = detail
        self.cnn = cnn


def apply_head_pose(
    means: torch.Tensor,  # (N, 3)
    quats: torch.Tensor,  # (N, 4)
    scales: torch.Tensor,  # (N, 3)
    head_pose: torch.Tensor,  # (4, 4) similarity head -> world
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move Gaussians by x_world = s R x + t: rotate means and orientations, scale means and sizes."""
    A = head_pose[:3, :3].to(means.dtype)  # (3, 3) = s R
    # det(A) as a triple product: torch.linalg.det factorises through a library call every frame (0.3 ms of host
    # time per call in an H100 profile, benchmarks/RESULTS.md).
    s = torch.dot(A[0], torch.linalg.cross(A[1], A[2])).abs().pow(1.0 / 3.0)
    q = matrix_to_quat(A / s).to(quats.dtype)  # (4,)
    means_w = means @ A.T + head_pose[:3, 3].to(means.dtype)
    return means_w, quat_multiply(q.expand_as(quats), quats), scales * s


def deform(
    params: Mapping[str, torch.Tensor],
    nets: AvatarNets,
    z_ex: torch.Tensor,
    head_pose: torch.Tensor,
    detail_code: torch.Tensor | None = None,
    coarse_offset: torch.Tensor | None = None,
) -> Gaussians:
    """Posed Gaussians for expression code z_ex (D,) and head pose (4, 4) (`Tracking.head_to_world`);
    `detail_code` and `coarse_offset` as in `express`."""
    return pose(express(params, nets, z_ex, detail_code, coarse_offset), head_pose)


def pose(g: Gaussians, head_pose: torch.Tensor) -> Gaussians:
    """Gaussians in the head's frame moved by a head pose (4, 4); half-precision network outputs (bfloat16
    autocast) come back as float32, so the pose is applied at full precision."""
    f = lambda t: t.float() if t is not None and t.dtype in (torch.bfloat16, torch.float16) else t
    means, quats, scales = apply_head_pose(f(g.means), f(g.quats), f(g.scales), head_pose)
    return Gaussians(means, quats, scales, f(g.opacities), f(g.colors), f(g.features), g.residuals)


def express(
    params: Mapping[str, torch.Tensor],
    nets: AvatarNets,
    z_ex: torch.Tensor,
    detail_code: torch.Tensor | None = None,
    coarse_offset: torch.Tensor | None = None,
) -> Gaussians:
    """The Gaussians of expression code z_ex (D,) in the head's frame (no head pose). `detail_code` (D,): the
    code the detail network sees instead of z_ex (training perturbs it: `TrainConfig.detail_code_noise`).
    `coarse_offset` (N, 3): the coarse field's displacement of these means at z_ex, where the caller kept it
    (the mouth phase, in which the field and the means are frozen)."""
    x_c = params["means"]  # (N, 3) canonical
    means = x_c
    if coarse_offset is not None:
        means = means + coarse_offset
    elif nets.coarse is not None:
        # A frozen coarse field moves the means without a Jacobian term: its displacement gradient is small,
        # and back-propagating through it would cost as much as the detail network. Tracking (a code that
        # requires grad) needs the code's gradient through it.
        needs_grad = z_ex.requires_grad or any(p.requires_grad for p in nets.coarse.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and needs_grad):
            offset = nets.coarse(x_c, z_ex)  # (N, 3)
        means = means + offset
    quats = F.normalize(params["quats"], dim=-1)
    log_scales, opacity_logits, color_logits = params["scales"], params["opacities"], params["colors"]
    features = params["features"] if "features" in params else None
    residuals = None
    if nets.detail is not None:
        # Position enters through its encoding only as a lookup key: its gradient is left to the image loss.
        code = z_ex if detail_code is None else detail_code
        residuals = nets.detail(x_c.detach(), features, code)  # (N, 14), under the losses' size priors
        total = residuals if nets.detail.mouth is None else residuals + nets.detail.mouth(x_c.detach(), code)
        r = {k: total[:, s] for k, s in RESIDUAL_SLICES.items()}
        means = means + r["position"] * nets.detail.cfg.position_scale
        dq = F.normalize(r["rotation"] + r["rotation"].new_tensor([1.0, 0.0, 0.0, 0.0]), dim=-1)
        quats = quat_multiply(dq, quats)
        log_scales = log_scales + r["scale"]
        color_logits = color_logits + r["color"]
        opacity_logits = opacity_logits + r["opacity"][:, 0]
    return Gaussians(
        means=means,
        quats=quats,
        scales=log_scales.exp(),
        opacities=torch.sigmoid(opacity_logits),
        colors=torch.sigmoid(color_logits),
        features=features,
        residuals=residuals,
    )
