"""Expression code and rigid head pose per frame, by analysis by synthesis, from one or several calibrated views.

The avatar is rendered through the differentiable rasterizer from each view's camera (`Rig`) and one code, head
rotation, head position (and, for a monocular video without intrinsics, on the first frame, the focal length)
are moved by Adam until the renderings match the frame's images: per view L1 + SSIM on the image composited
onto the avatar's background with the foreground mask and a silhouette term, summed over the views, plus a
prior keeping the code inside the range of the avatar's training codes and temporal smoothness towards the
previous frame. A monocular video is the one-view case whose world is its camera (world_2_cam = identity).

Where a frame's fit starts: a given start (a capture's own tracking of it), else the previous frame's fit,
else (the first frame) a search over yaw angles and distances in the first view (scored by silhouette overlap
at the coarsest level). Cold starts run coarse to fine over an image pyramid; frames warm-started from the
previous fit take a few steps at full size. Each level's steps render only the Gaussians that reach an image
(one backward pass finds them).

Codes are optimised in the avatar's whitened principal directions (`CodeStats`): one unit is one standard
deviation of its training codes, so one learning rate fits every component. The head's scale is the avatar's
own (a person's head does not change size); the rotation turns about the head's centroid so that rotation
and position do not fight. Rotation and position move in the first view's camera axes: sideways in head
radii and, with one view, in depth along the view's ray (`moved_centroid`); several views see the depth as
well as the rest, so there it moves in head radii too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from npga.avatar.deform import deform
from npga.avatar.model import Avatar
from npga.avatar.render import render_gaussians
from npga.cameras import frontal_camera
from npga.config import SIGNED, AtLeast1, Fraction, Positive, Range
from npga.geometry import axis_angle_to_matrix, centred_intrinsics, matrix_to_axis_angle
from npga.losses import dssim, l1

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackConfig:
    pyramid: tuple[Annotated[float, Range(0, 1, above=True)], ...] = (0.5, 1.0)
    """Image scales of the coarse-to-fine pyramid, coarsest first."""
    min_height: AtLeast1 = 112
    """Levels less tall than this (pixels) are skipped, their steps taken at the next level: the rasterizer's
    screen-space dilation (0.3 px^2) fattens a head only a few dozen pixels wide, and with few pixels a level
    saves little time (most of the work is per Gaussian)."""
    first_iterations: tuple[int, ...] = (40, 40)
    """Adam steps per pyramid level from a cold start, the first frame (where the focal length is fitted). The
    finest level needs enough of them to undo what the coarse level's fatter silhouettes put off."""
    capture_iterations: tuple[int, ...] = (0, 8)
    """Adam steps per pyramid level of a frame started from a capture's own tracking (`npga track --capture`,
    `npga eval --refine-tracking`): a tracker's output, already close."""
    capture_lr_scale: Annotated[float, Range(0, above=True)] = 0.1
    """Every learning rate of a frame started from a capture's tracking, relative to the rates below: steps sized
    for a start far off carry a close one away (the demo's held-out sequence refitted from its 13 training
    cameras: poses 0.28 deg / 0.73 mm from the truth at 1x, 0.06 deg / 0.05 mm at 0.1x, against the capture's
    0.08 deg / 0.10 mm). A capture tracked coarsely wants 1 and more steps."""
    iterations: tuple[int, ...] = (0, 8)
    """Adam steps per pyramid level on every later frame (warm start from the previous frame). None at the
    coarse level: it only widens the first frame's basin, and its fatter silhouettes bias the distance."""
    warm_lr_scale: float = 0.5
    """Pose learning rates of the warm-started frames relative to the first frame's: the head moves little
    from frame to frame, and smaller steps do not jitter (a face's expression can change fast)."""
    lr_code: float = 0.1
    """Step of the code, in standard deviations of the training codes."""
    lr_rotation: float = 0.01
    """Step of the head rotation, radians."""
    lr_translation: float = 0.02
    """Step of the head position: sideways in head radii, in depth as a fraction of the distance with one view
    (so that one step moves the rendering about as much either way), in head radii with several."""
    lr_focal: float = 0.01
    """Step of the log focal length (first frame only, when the intrinsics are not given)."""
    ssim: float = 0.2
    """Weight of 1 - SSIM beside L1 (the training loss's balance)."""
    robust: float = 0.05
    """Scale c of a robust colour error c log(1 + |r| / c) in place of the L1 (0: the plain L1). A pixel the
    avatar cannot draw (a mouth interior it never learned) then pulls on the pose like an error of about c,
    however large its own. On the demo's self-reenactment 0.02 / 0.05 / 0.1 gave 29.63 / 29.70 / 29.67 dB
    against 29.40 dB with the L1 (benchmarks/RESULTS.md)."""
    silhouette: float = 0.5
    """Weight of the L1 between the rendered alpha and the foreground mask."""
    prior: float = 1e-3
    """Weight of the squared whitened code: pulls codes the frame does not determine to the mean."""
    code_range: float = 0.1
    """Weight of the squared excess of the code beyond the training codes' range (in standard deviations)."""
    smooth_code: float = 1e-3
    """Weight of the squared change of the whitened code from the previous frame."""
    smooth_pose: float = 1e-2
    """Weight of the squared change of rotation (radians) and position (head radii; log distance with one view)
    from the previous frame."""
    init_yaws: tuple[Annotated[float, SIGNED], ...] = (-40.0, -20.0, 0.0, 20.0, 40.0)
    """Yaw angles (degrees) tried for the first frame's pose."""
    init_distances: tuple[Positive, ...] = (0.85, 1.0, 1.2)
    """Distances tried for the first frame's pose, relative to the one the foreground's size suggests."""
    distance_smoothing: float = 5.0
    """After tracking: standard deviation (frames) of the Gaussian that smooths the head's distance from the
    camera over the video (0: off). One view fixes the distance worst of the whole pose (at the demo's size a
    millimetre changes the head's width by a tenth of a pixel) and per-frame fits jitter in it by millimetres,
    which shifts the head in any other view; a person's distance changes slowly (5 frames: 0.2 s at 25 fps).
    Each head moves along its own ray, so the driver's own view does not shift."""
    min_iou: Fraction = 0.7
    """A frame whose silhouette IoU with the foreground stays below this is reported as not converged."""
    min_contribution: float = 1e-3
    """Gaussians whose opacity moves the rendered alpha by less than this (summed over pixels) at the start of a
    level are left out of its steps: the back of the head and what is off screen cost time and change nothing."""

    def __post_init__(self) -> None:
        n = len(self.pyramid)
        if not n or any(len(steps) != n for steps in (self.first_iterations, self.capture_iterations, self.iterations)):
            raise ValueError(
                f"track: pyramid {self.pyramid}, first_iterations {self.first_iterations}, capture_iterations "
                f"{self.capture_iterations} and iterations {self.iterations} need one entry per level"
            )


@dataclass(frozen=True)
class FrameState:
    """One frame's fit: what the next frame starts from and what the tracking file stores. The world is the
    rig's (`Rig`); a monocular video's is its camera."""

    code: torch.Tensor  # (D,)
    rotation: torch.Tensor  # (3, 3) head -> world
    centroid: torch.Tensor  # (3,) the head's centroid in world coordinates
    K: torch.Tensor  # (3, 3) the first view's intrinsics at its full size (fitted focal length, monocular)


@dataclass(frozen=True)
class Rig:
    """The calibrated cameras each frame is seen in, in the world the fitted head poses live in."""

    world_2_cam: torch.Tensor  # (V, 4, 4) OpenCV axes
    K: torch.Tensor  # (V, 3, 3) at the images' full size

    @classmethod
    def monocular(cls, K: torch.Tensor) -> Rig:
        """One camera (K (3, 3)) at the world's origin: a video whose world is its camera."""
        K = torch.as_tensor(K, dtype=torch.float32)
        return cls(world_2_cam=torch.eye(4, device=K.device)[None], K=K[None])

    def __len__(self) -> int:
        return len(self.world_2_cam)

    def to(self, device: torch.device) -> Rig:
        return Rig(self.world_2_cam.float().to(device), self.K.float().to(device))

    def to_world(self, rotation: torch.Tensor, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rotation (3, 3), point (3,)) given in the first view's camera axes, in the world's (each in its own
        dtype)."""
        R, t = self.world_2_cam[0, :3, :3], self.world_2_cam[0, :3, 3]
        return R.T.to(rotation) @ rotation, R.T.to(point) @ (point - t.to(point))

    def to_camera(self, rotation: torch.Tensor, point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rotation (3, 3), point (3,)) given in the world's axes, in the first view's camera's."""
        R, t = self.world_2_cam[0, :3, :3], self.world_2_cam[0, :3, 3]
        return R.to(rotation) @ rotation, R.to(point) @ point + t.to(point)


@dataclass(frozen=True)
class FrameFit:
    state: FrameState
    head_to_camera: np.ndarray  # (4, 4) head -> world similarity, the tracking layout's head pose
    residual: float  # L1 colour error of the final fit at full size
    iou: float  # silhouette IoU of the final fit
    problem: str  # why the fit is not trusted; "" when it converged
    gradient_scales: tuple[torch.Tensor, ...]  # Adam's squared-gradient averages of (rotation, position)


@dataclass(frozen=True)
class HeadFrame:
    """What of the avatar's head the tracker keeps fixed: its centroid, size and scale in head coordinates."""

    centroid: torch.Tensor  # (3,)
    radius: float
    scale: float  # the head pose's similarity scale during training


def head_frame(avatar: Avatar) -> HeadFrame:
    means = avatar.params["means"].detach()  # (N, 3) canonical
    centroid = means.mean(0)
    radius = float((means - centroid).norm(dim=-1).mean())
    poses = torch.cat([m.head_pose for m in avatar.motions.values()]) if avatar.motions else torch.eye(4)[None]
    scale = float(torch.linalg.det(poses[:, :3, :3].double()).abs().pow(1 / 3).median())
    return HeadFrame(centroid=centroid, radius=radius, scale=scale)


def head_to_camera(rotation: torch.Tensor, centroid_cam: torch.Tensor, head: HeadFrame) -> torch.Tensor:
    """(4, 4) similarity x_cam = s R x + t that puts the head's centroid at `centroid_cam` (3,); the same for
    any frame the rotation and centroid are given in (the world's: the head pose)."""
    sr = head.scale * rotation  # (3, 3)
    top = torch.cat([sr, (centroid_cam.to(sr) - sr @ head.centroid.to(sr))[:, None]], 1)  # (3, 4)
    return torch.cat([top, sr.new_tensor([[0.0, 0.0, 0.0, 1.0]])], 0)


def moved_centroid(start: torch.Tensor, delta: torch.Tensor, radius: float, along_ray: bool = True) -> torch.Tensor:
    """(3,) the centroid `start` (3,) (camera coordinates) moved by delta (3,): sideways by delta[:2] head radii
    (at the starting distance) and in distance by the factor exp(delta[2]), along the ray through it (the image
    does not shift); not `along_ray` (several views), by delta head radii along each axis."""
    if not along_ray:
        return start + delta * radius
    ray = start / start[2]  # (3,) x/z, y/z, 1
    sideways = torch.cat([delta[:2] * radius / start[2], delta.new_zeros(1)])
    return start[2] * delta[2].exp() * (ray + sideways)


def centroid_offset(start: torch.Tensor, centroid: torch.Tensor, radius: float, along_ray: bool = True) -> torch.Tensor:
    """(3,) the delta that `moved_centroid` moves `start` (3,) by to reach `centroid` (3,)."""
    if not along_ray:
        return (centroid - start) / radius
    sideways = (centroid[:2] / centroid[2] - start[:2] / start[2]) * start[2] / radius
    return torch.cat([sideways, torch.log(centroid[2:] / start[2])])


def level_intrinsics(K: torch.Tensor, scale: float, focal_factor: torch.Tensor) -> torch.Tensor:
    """K (..., 3, 3) for the image resampled by `scale` (pixel centres at +0.5, as `Camera.resized`), with both
    focal lengths multiplied by `focal_factor` ()."""
    focal = torch.stack([focal_factor, focal_factor, torch.ones_like(focal_factor)])[:, None]  # (3, 1)
    resize = K.new_tensor([scale, scale, 1.0])[:, None]  # (3, 1)
    return K * torch.where(torch.eye(3, dtype=torch.bool, device=K.device), focal, 1.0) * resize


def robust_l1(pred: torch.Tensor, gt: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean of c log(1 + |pred - gt| / c): the L1 for errors well below c, growing only logarithmically above."""
    return (scale * torch.log1p((pred - gt).abs() / scale)).mean()


def code_penalties(avatar: Avatar, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(prior, range): mean squared whitened code, and mean squared excess beyond the training codes'
    projections, in standard deviations."""
    c = avatar.codes
    proj = a * c.unit  # (K,)
    excess = (proj - c.high).clamp_min(0) + (c.low - proj).clamp_min(0)
    return a.square().mean(), (excess / c.unit).square().mean()


def render_views(
    avatar: Avatar,
    code: torch.Tensor,
    pose: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    params: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """rgb (V, H, W, 3) and alpha (V, H, W, 1) of one deformation seen by cameras viewmats (V, 4, 4) (world ->
    camera, OpenCV axes) with intrinsics Ks (V, 3, 3); differentiable. `params`: some of the avatar's Gaussians
    (default: all)."""
    device = avatar.device
    g = deform(avatar.params if params is None else params, avatar.nets, code.to(device), pose.to(device))
    rgb, alpha, _ = render_gaussians(
        g, viewmats.to(device), Ks.to(device), width, height, avatar.background, avatar.nets.cnn
    )
    return rgb, alpha


def visible_gaussians(
    avatar: Avatar,
    code: torch.Tensor,
    pose: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    min_contribution: float,
) -> dict[str, torch.Tensor]:
    """The Gaussians (the avatar's params, subset) whose opacity changes the rendered alpha of the views by at
    least `min_contribution` pixels per unit opacity, found by one backward pass: occluded or off-screen ones do
    not."""
    logits = avatar.params["opacities"].detach().clone().requires_grad_(True)  # (N,)
    params = {**avatar.params, "opacities": logits}
    with torch.enable_grad():
        _, alpha = render_views(avatar, code.detach(), pose.detach(), viewmats, Ks, width, height, params)
        alpha.sum().backward()
    o = torch.sigmoid(logits.detach())
    contribution = logits.grad / (o * (1 - o)).clamp_min(1e-12)  # d alpha_sum / d opacity
    keep = contribution.abs() >= min_contribution  # (N,)
    return {k: v[keep] for k, v in avatar.params.items()}


def silhouette_iou(alpha: torch.Tensor, mask: torch.Tensor) -> float:
    a, m = alpha.squeeze(-1) > 0.5, mask.squeeze(-1) > 0.5
    union = (a | m).sum()
    return float((a & m).sum() / union) if union > 0 else 0.0


@dataclass(frozen=True)
class Target:
    """One frame's views at one pyramid level, ready to compare with their renderings."""

    rgb: torch.Tensor  # (V, H, W, 3) composited onto the avatar's background with the mask
    mask: torch.Tensor  # (V, H, W, 1)
    scale: float  # this level's size relative to the images'
    level: int  # index into TrackConfig.pyramid (and its iteration counts)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[2], self.rgb.shape[1]


def pyramid(
    images: np.ndarray, masks: np.ndarray, scales: tuple[float, ...], min_height: int, background: torch.Tensor
) -> list[Target]:
    """The views' images (V, H, W, 3) uint8 and masks (V, H, W) in [0, 1] at each scale (area-averaged),
    composited; levels below `min_height` are left out unless nothing else is left."""
    h, w = masks.shape[1:]
    kept = [i for i, s in enumerate(scales) if round(h * s) >= min_height] or [len(scales) - 1]
    levels = []
    for i in kept:
        s = scales[i]
        size = (max(8, round(w * s)), max(8, round(h * s)))
        rgb = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in images]) if s != 1 else images
        m = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in masks]) if s != 1 else masks
        rgb_t = torch.from_numpy(rgb.astype(np.float32) / 255.0).to(background.device)
        m_t = torch.from_numpy(m.astype(np.float32)).to(background.device)[..., None]
        levels.append(Target(rgb=rgb_t * m_t + (1 - m_t) * background, mask=m_t, scale=size[1] / h, level=i))
    return levels


class FrameObjective:
    """The loss of one frame's views at one pyramid level, for the fitted variables; knows the previous frame.

    The variables move the start in the first view's camera axes: whitened code a (K,), rotation update omega
    (3,) about the head's centroid, position update delta (3,) (`moved_centroid`), log focal update ()."""

    def __init__(
        self,
        avatar: Avatar,
        head: HeadFrame,
        cfg: TrackConfig,
        rig: Rig,
        start: FrameState,
        previous: FrameState | None,
    ) -> None:
        self.avatar, self.head, self.cfg, self.rig, self.start, self.previous = avatar, head, cfg, rig, start, previous
        self.along_ray = len(rig) == 1  # one view: the depth moves along its ray
        self.rotation0, self.centroid0 = rig.to_camera(start.rotation, start.centroid)  # the start, camera axes
        self.a_previous = None if previous is None else avatar.codes.whiten(previous.code)
        self.pose_previous = None if previous is None else self.pose_offsets(previous)

    def pose_offsets(self, other: FrameState) -> tuple[torch.Tensor, torch.Tensor]:
        """(omega (3,), delta (3,)) that move the start to `other`'s pose: zero when the fit starts from it."""
        if other is self.start:
            zero = torch.zeros(3, device=self.centroid0.device)
            return zero, zero
        rotation, centroid = self.rig.to_camera(other.rotation, other.centroid)
        omega = matrix_to_axis_angle(rotation @ self.rotation0.T)
        return omega, centroid_offset(self.centroid0, centroid, self.head.radius, self.along_ray)

    def state(self, a: torch.Tensor, omega: torch.Tensor, delta: torch.Tensor, log_focal: torch.Tensor) -> FrameState:
        rotation, centroid = self.rig.to_world(
            axis_angle_to_matrix(omega) @ self.rotation0,
            moved_centroid(self.centroid0, delta, self.head.radius, self.along_ray),
        )
        K = level_intrinsics(self.rig.K[0], 1.0, log_focal.exp())
        return FrameState(code=self.avatar.codes.unwhiten(a), rotation=rotation, centroid=centroid, K=K)

    def view(
        self, target: Target, a: torch.Tensor, omega: torch.Tensor, delta: torch.Tensor, log_focal: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(code (D,), head -> world pose (4, 4), the views' world -> camera (V, 4, 4) and K (V, 3, 3) at the
        target's size) of the variables."""
        s = self.state(a, omega, delta, log_focal)
        pose = head_to_camera(s.rotation, s.centroid, self.head)
        return s.code, pose, self.rig.world_2_cam, level_intrinsics(self.rig.K, target.scale, log_focal.exp())

    def __call__(
        self,
        target: Target,
        a: torch.Tensor,
        omega: torch.Tensor,
        delta: torch.Tensor,
        log_focal: torch.Tensor,
        params: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, rgb (V, H, W, 3), alpha (V, H, W, 1)) of the variables (`view`), rendering `params` (default:
        every Gaussian)."""
        cfg = self.cfg
        code, pose, viewmats, Ks = self.view(target, a, omega, delta, log_focal)
        rgb, alpha = render_views(self.avatar, code, pose, viewmats, Ks, *target.size, params)
        prior, excess = code_penalties(self.avatar, a)
        photometric = l1(rgb, target.rgb) if cfg.robust == 0 else robust_l1(rgb, target.rgb, cfg.robust)
        # Each term is a mean over the views (of one size): times their number, the sum of the views' losses.
        views = photometric + cfg.ssim * dssim(rgb, target.rgb) + cfg.silhouette * l1(alpha, target.mask)
        loss = len(rgb) * views + cfg.prior * prior + cfg.code_range * excess
        if self.previous is not None:
            loss = loss + cfg.smooth_code * (a - self.a_previous).square().mean()
            omega_previous, delta_previous = self.pose_previous
            change = (omega - omega_previous).square().sum() + (delta - delta_previous).square().sum()
            loss = loss + cfg.smooth_pose * change
        return loss, rgb, alpha


def fit_frame(
    avatar: Avatar,
    head: HeadFrame,
    cfg: TrackConfig,
    rig: Rig,
    levels: list[Target],
    start: FrameState,
    previous: FrameState | None,
    iterations: tuple[int, ...],
    fit_focal: bool,
    gradient_scales: tuple[torch.Tensor, ...] = (),
    lr_scale: float = 1.0,
) -> FrameFit:
    """Fit one frame's views from `start`, coarse to fine; `previous` (None on the first frame) anchors
    smoothness. A fit that starts from the previous frame's (`start is previous`) is warm: its pose steps are
    `warm_lr_scale` as large; `lr_scale` scales every rate (a start from a capture's tracking).

    `gradient_scales`: the previous frame's Adam squared-gradient averages of the pose. Adam's first steps are
    as large as the learning rate whatever the gradient (sign-like), so a pose fitted in a few steps would
    jitter by that much; with the previous frame's averages, its steps follow the gradient's size from the
    start. The code keeps sign-like first steps: expressions change faster than the head moves."""
    objective = FrameObjective(avatar, head, cfg, rig, start, previous)
    device = avatar.device
    a = avatar.codes.whiten(start.code.to(device)).detach().requires_grad_(True)
    omega = torch.zeros(3, device=device, requires_grad=True)
    delta = torch.zeros(3, device=device, requires_grad=True)
    log_focal = torch.zeros((), device=device, requires_grad=fit_focal)
    k = cfg.warm_lr_scale if previous is start else 1.0
    groups = [
        {"params": [a], "lr": lr_scale * cfg.lr_code},
        {"params": [omega], "lr": lr_scale * k * cfg.lr_rotation},
        {"params": [delta], "lr": lr_scale * k * cfg.lr_translation},
    ]
    if fit_focal:
        groups.append({"params": [log_focal], "lr": lr_scale * cfg.lr_focal})
    optimizer = torch.optim.Adam(groups)
    for p, scale in zip((omega, delta), gradient_scales, strict=False):
        # A late step count: the carried average needs no bias correction; the momentum starts from zero.
        optimizer.state[p] = {"step": torch.tensor(1e3), "exp_avg": torch.zeros_like(p), "exp_avg_sq": scale.clone()}
    variables = (a, omega, delta, log_focal)
    done = -1  # the last pyramid level whose steps were taken; a skipped level's steps go to the next one
    for target in levels:
        steps, done = sum(iterations[done + 1 : target.level + 1]), target.level
        if steps == 0:
            continue
        with torch.no_grad():
            view = objective.view(target, *variables)
        params = visible_gaussians(avatar, *view, *target.size, cfg.min_contribution)
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss, _, _ = objective(target, *variables, params)
            if not torch.isfinite(loss):
                break
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        _, rgb, alpha = objective(levels[-1], *variables)
        residual = float((rgb - levels[-1].rgb).abs().mean())
        iou = silhouette_iou(alpha, levels[-1].mask)
        finite = all(bool(torch.isfinite(v).all()) for v in variables) and math.isfinite(residual)
        state = objective.state(*variables) if finite else start
        problem = ""
        if not finite:
            problem = "the fit diverged (non-finite values); kept the code and pose it started from"
        elif iou < cfg.min_iou:
            problem = f"silhouette IoU {iou:.2f} < {cfg.min_iou} (the face is lost or occluded)"
        pose = head_to_camera(state.rotation, state.centroid, head)
    scales = tuple(optimizer.state[p]["exp_avg_sq"] for p in (omega, delta) if "exp_avg_sq" in optimizer.state[p])
    return FrameFit(
        state=state,
        head_to_camera=pose.cpu().double().numpy(),
        residual=residual,
        iou=iou,
        problem=problem,
        gradient_scales=scales if len(scales) == 2 else (),
    )


def _mask_stats(mask: np.ndarray) -> tuple[np.ndarray, float]:
    """(centroid (2,) in pixels, width of the foreground's bounding box in pixels) of a mask (H, W). The width:
    the neck leaving the image at the bottom cuts the height, and a head is about as deep as it is wide."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(ys) == 0:
        raise ValueError("empty foreground mask")
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5]), float(xs.max() - xs.min() + 1)


def reference_view(avatar: Avatar, head: HeadFrame) -> tuple[torch.Tensor, float, float]:
    """(head -> camera rotation (3, 3), distance of the head's centroid, vertical focal) of the avatar's frontal
    rig camera at its first tracked pose: how the head is usually seen."""
    cam = frontal_camera(avatar.cameras)
    pose = next(iter(avatar.motions.values())).head_pose[0].cpu().double() if avatar.motions else torch.eye(4)
    to_cam = torch.from_numpy(cam.world_2_cam) @ pose  # (4, 4) head -> camera
    rotation = (to_cam[:3, :3] / head.scale).float()
    centroid = to_cam[:3, :3].float() @ head.centroid.cpu() + to_cam[:3, 3].float()
    return rotation, float(centroid[2]), float(cam.K[1, 1] / cam.height)


def initial_state(avatar: Avatar, head: HeadFrame, cfg: TrackConfig, coarse: Target, rig: Rig) -> FrameState:
    """The first frame's starting point, found in the first view: the avatar's usual view turned by each of
    `init_yaws` and placed at each of `init_distances` x the distance the foreground's size suggests, centred on
    the foreground; the candidate whose silhouette overlaps the mask best (IoU, then colour L1) wins. Code: the
    training mean."""
    device = avatar.device
    rotation0, distance_ref, focal_ref = reference_view(avatar, head)
    w, h = coarse.size
    mask, image = coarse.mask[0], coarse.rgb[0]  # (H, W, 1), (H, W, 3) the first view
    center_px, width_px = _mask_stats(mask[..., 0].cpu().numpy())
    K0 = rig.K[0]
    K = level_intrinsics(K0, coarse.scale, torch.ones((), device=K0.device))  # (3, 3) at this level
    f, cx, cy = float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    camera = torch.eye(4, device=device)[None]  # the first view's own axes

    def render(code: torch.Tensor, pose: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, alpha = render_views(avatar, code, pose, camera, K[None], w, h)
        return rgb[0], alpha[0]

    # The rig sees the head this wide in pixels at distance_ref with focal_ref * height.
    with torch.no_grad():
        ref_pose = head_to_camera(rotation0, torch.tensor([0.0, 0.0, distance_ref]), head)
        ref_K = torch.from_numpy(centred_intrinsics(focal_ref * h, w, h)).float()  # (3, 3)
        _, ref_alpha = render(avatar.codes.mean, ref_pose, ref_K)
    _, ref_width = _mask_stats(ref_alpha[..., 0].cpu().numpy())
    distance = distance_ref * (f / (focal_ref * h)) * (ref_width / width_px)
    best, best_score = None, (-1.0, 0.0)
    code = avatar.codes.mean
    for yaw in cfg.init_yaws:
        c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
        turn = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])  # about the camera's vertical axis
        rotation = (turn @ rotation0).to(device)
        for factor in cfg.init_distances:
            d = distance * factor
            centroid = torch.tensor([(center_px[0] - cx) * d / f, (center_px[1] - cy) * d / f, d])
            with torch.no_grad():
                for _ in range(2):  # place, then shift so the rendered silhouette's centre meets the mask's
                    rgb, alpha = render(code, head_to_camera(rotation, centroid.to(device), head), K)
                    if (alpha > 0.5).sum() == 0:
                        break
                    shift = center_px - _mask_stats(alpha[..., 0].cpu().numpy())[0]
                    centroid = centroid + torch.tensor([shift[0] * d / f, shift[1] * d / f, 0.0])
                rgb, alpha = render(code, head_to_camera(rotation, centroid.to(device), head), K)
            score = (silhouette_iou(alpha, mask), -float((rgb - image).abs().mean()))
            if score > best_score:
                best_score = score
                best = (rotation, centroid.to(device))
    log.info("first-frame pose: silhouette IoU %.2f at the coarsest level", best_score[0])
    rotation, centroid = rig.to_world(*best)
    return FrameState(code=code, rotation=rotation, centroid=centroid, K=K0)


@dataclass(frozen=True)
class Views:
    """One frame as the tracker sees it: an image and a foreground mask in each view of the rig."""

    images: np.ndarray  # (V, H, W, 3) uint8
    masks: np.ndarray  # (V, H, W) in [0, 1]
    start: FrameState | None = None  # where its fit starts (a capture's tracking of it); None: the previous fit


@dataclass(frozen=True)
class TrackedFrame:
    index: int
    fit: FrameFit


def track_views(
    avatar: Avatar,
    frames: Iterator[Views],
    rig: Rig | None,
    cfg: TrackConfig,
    resume_from: FrameState | None = None,
    first_index: int = 0,
) -> Iterator[TrackedFrame]:
    """Fit each frame's views in turn: from its own start when it has one (a cold start), else from the
    previous fit (warm), else (the first frame) from `initial_state`.

    `rig`: the views' cameras, or None for one camera at the world's origin whose focal length is fitted on the
    first frame (starting from the avatar rig's field of view, principal point at the centre) and kept.
    `resume_from`: the last fit of an interrupted run, whose next frame is `first_index`.
    """
    head = head_frame(avatar)
    previous, scales = resume_from, ()
    for index, frame in enumerate(frames, start=first_index):
        levels = pyramid(frame.images, frame.masks, cfg.pyramid, cfg.min_height, avatar.background)
        if rig is not None:
            cameras = rig
        elif previous is not None:
            cameras = Rig.monocular(previous.K)
        else:
            h, w = frame.masks.shape[1:]
            cameras = Rig.monocular(torch.from_numpy(centred_intrinsics(reference_view(avatar, head)[2] * h, w, h)))
        cameras = cameras.to(avatar.device)
        if frame.start is not None:
            steps, scale = cfg.capture_iterations, cfg.capture_lr_scale
            fit = fit_frame(avatar, head, cfg, cameras, levels, frame.start, previous, steps, False, (), scale)
        elif previous is None:
            start = initial_state(avatar, head, cfg, levels[0], cameras)
            fit = fit_frame(avatar, head, cfg, cameras, levels, start, None, cfg.first_iterations, rig is None)
        else:
            fit = fit_frame(avatar, head, cfg, cameras, levels, previous, previous, cfg.iterations, False, scales)
        if fit.problem:
            log.warning("frame %d did not converge: %s", index, fit.problem)
        previous, scales = fit.state, fit.gradient_scales
        yield TrackedFrame(index=index, fit=fit)


def track_frames(
    avatar: Avatar,
    frames: Iterator[tuple[np.ndarray, np.ndarray]],
    K: np.ndarray | None,
    cfg: TrackConfig,
    resume_from: FrameState | None = None,
    first_index: int = 0,
) -> Iterator[TrackedFrame]:
    """Fit each (frame (H, W, 3) uint8, mask (H, W) in [0, 1]) of a monocular video in turn, each from the
    previous fit; the world is the video's camera.

    `K` (3, 3): the video's intrinsics, or None to fit the focal length on the first frame (starting from the
    rig's field of view, principal point at the centre) and keep it. `resume_from`: the last fit of an
    interrupted run, whose next frame is `first_index`.
    """
    rig = None if K is None else Rig.monocular(torch.as_tensor(K, dtype=torch.float32))
    views = (Views(images=frame[None], masks=mask[None]) for frame, mask in frames)
    return track_views(avatar, views, rig, cfg, resume_from, first_index)


@dataclass(frozen=True)
class TrackLog:
    """The fits so far, in arrays: what an interrupted run resumes from and what the tracking file is made of."""

    code: np.ndarray  # (T, D)
    rotation: np.ndarray  # (T, 3, 3) head -> world (a monocular video's world is its camera)
    centroid: np.ndarray  # (T, 3) the head's centroid in world coordinates
    intrinsics: np.ndarray  # (T, 3, 3) the first view's, at its size
    head_to_camera: np.ndarray  # (T, 4, 4) head -> world
    residual: np.ndarray  # (T,) L1 colour error of the final fit
    iou: np.ndarray  # (T,) silhouette IoU
    problem: np.ndarray  # (T,) str, "" where the fit converged

    @classmethod
    def empty(cls, dim: int) -> TrackLog:
        return cls(
            np.zeros((0, dim)),
            np.zeros((0, 3, 3)),
            np.zeros((0, 3)),
            np.zeros((0, 3, 3)),
            np.zeros((0, 4, 4)),
            np.zeros(0),
            np.zeros(0),
            np.zeros(0, dtype=str),
        )

    def __len__(self) -> int:
        return len(self.code)

    def appended(self, fit: FrameFit) -> TrackLog:
        s = fit.state
        row = {
            "code": s.code,
            "rotation": s.rotation,
            "centroid": s.centroid,
            "intrinsics": s.K,
            "head_to_camera": fit.head_to_camera,
            "residual": fit.residual,
            "iou": fit.iou,
            "problem": fit.problem,
        }
        grown = {}
        for name, value in row.items():
            value = value.detach().cpu().double().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            grown[name] = np.concatenate([getattr(self, name), value[None]])
        return TrackLog(**grown)

    def last_state(self, device: torch.device) -> FrameState | None:
        if not len(self):
            return None
        t = lambda a: torch.from_numpy(a[-1]).float().to(device)
        return FrameState(code=t(self.code), rotation=t(self.rotation), centroid=t(self.centroid), K=t(self.intrinsics))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def with_smoothed_distance(self, sigma: float, head: HeadFrame) -> TrackLog:
        """The log with `smooth_distance` applied to its centroids, and the head poses that go with them (a
        monocular video's: its world is its camera)."""
        centroid = smooth_distance(self.centroid, sigma)
        poses = [
            head_to_camera(torch.from_numpy(r), torch.from_numpy(c), head).numpy()
            for r, c in zip(self.rotation, centroid, strict=True)
        ]
        head_poses = np.stack(poses) if poses else self.head_to_camera
        return dataclasses.replace(self, centroid=centroid, head_to_camera=head_poses)


def smooth_distance(centroids: np.ndarray, sigma: float) -> np.ndarray:
    """(T, 3) head centroids in camera coordinates, their depths blurred over time by a Gaussian of `sigma`
    frames (mirrored at the ends), each moved along its own ray so that its image position stays."""
    if sigma <= 0 or len(centroids) < 2:
        return centroids.copy()
    depth = centroids[:, 2]
    return centroids * (gaussian_filter1d(depth, sigma, mode="reflect") / depth)[:, None]
