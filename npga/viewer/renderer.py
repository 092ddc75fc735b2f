"""`ViewRenderer`: the viewer's pictures of an avatar, without a browser.

`render(camera)` is the server render path (an image for one viewport); `splats()` is the browser path (a
buffer for viser's splat renderer plus the head's pose). Both start from the same Gaussians deformed in the
head's frame, cached by expression code: the network runs once per expression change, however many
viewports, render modes or head poses are shown of it.

On a CPU the networks may run in bfloat16 (`precision`): where the CPU has bfloat16 matrix units this halves
an expression change's cost, and the picture differs from float32 by ~50 dB PSNR, far below what the eye
sees. Training and evaluation never do this; only what the viewer shows.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
import torch

from npga.avatar.deform import Gaussians, pose
from npga.avatar.model import Avatar
from npga.avatar.precision import Precision, resolve_precision
from npga.avatar.render import render_gaussians
from npga.cameras import Camera, stack_cameras
from npga.render import rasterize
from npga.viewer.splats import HeadPose, SplatBuffer, splat_buffer, splat_unit, split_head_pose
from npga.viewer.state import SPLAT_MODES, ViewState, expression_of

CENTRE_SIZE = 0.004
"""Gaussian-centres mode: each centre drawn as an opaque sphere of this standard deviation, as a fraction of
the canonical Gaussians' bounding-box diagonal."""


def feature_pca_colors(features: torch.Tensor) -> torch.Tensor:
    """Colours (N, 3) in [0, 1]: latent features (N, F) projected on their first three principal directions,
    each stretched so its 1st..99th percentile spans [0, 1]."""
    x = features.double() - features.double().mean(0)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # vh (min(N, F), F)
    proj = x @ vh[:3].T  # (N, <=3)
    lo, hi = torch.quantile(proj, 0.01, dim=0), torch.quantile(proj, 0.99, dim=0)
    rgb = ((proj - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    if rgb.shape[1] < 3:  # fewer than three feature dimensions: the missing channels stay dark
        rgb = torch.cat([rgb, rgb.new_zeros(len(rgb), 3 - rgb.shape[1])], 1)
    return rgb.float()


def colorize_depth(depth: np.ndarray, alpha: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Expected depth (H, W) as a turbo colour map (near red, far blue) over the covered pixels, composited by
    alpha (H, W) onto `background` (3,): (H, W, 3) in [0, 1]."""
    covered = alpha > 0.5
    if not covered.any():
        return np.broadcast_to(background, (*depth.shape, 3)).astype(np.float32)
    near, far = float(depth[covered].min()), float(depth[covered].max())
    t = np.clip((far - depth) / max(far - near, 1e-9), 0, 1)  # 1 at the nearest surface
    turbo = cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1] / 255.0  # (H, W, 3) RGB
    return (turbo * alpha[..., None] + background * (1 - alpha[..., None])).astype(np.float32)


class ViewRenderer:
    """Renders `state` (a ViewState the GUI replaces) of one avatar; safe to call from several threads."""

    def __init__(self, avatar: Avatar, state: ViewState | None = None, precision: Precision = "float32") -> None:
        self.avatar = avatar
        self.precision = resolve_precision(precision, avatar.device)
        self.state = state or ViewState(avatar.split.train_sequences[0], background=tuple(avatar.config.background))
        self._lock = threading.Lock()
        self._cached_code: torch.Tensor | None = None
        self._cached_head: Gaussians | None = None
        self._pca: torch.Tensor | None = None
        lo, hi = avatar.params["means"].amin(0), avatar.params["means"].amax(0)
        self.centre_size = CENTRE_SIZE * float((hi - lo).norm())
        self.splat_unit = splat_unit(avatar.params["scales"].exp())  # fixed per avatar: the node's scale stays

    def head_gaussians(self, z_ex: torch.Tensor) -> Gaussians:
        """The Gaussians for code z_ex (D,) in the head's frame (no head pose), from the cache when unchanged."""
        with self._lock:
            if self._cached_code is None or not torch.equal(self._cached_code, z_ex):
                self._cached_head = self.avatar.expressed(z_ex, self.precision)
                self._cached_code = z_ex.clone()
            return self._cached_head

    def feature_colors(self) -> torch.Tensor:
        """(N, 3) the latent-PCA colours (features are per Gaussian and expression-independent: computed once)."""
        if "features" not in self.avatar.params:
            raise ValueError("render mode 'latent PCA': this avatar has no latent features")
        with self._lock:
            if self._pca is None:
                self._pca = feature_pca_colors(self.avatar.params["features"])
            return self._pca

    def posed(self, state: ViewState | None = None) -> Gaussians:
        """The world-space Gaussians of `state` (default: the current state)."""
        z, head_pose = expression_of(self.avatar, state or self.state)
        g = self.head_gaussians(z.float())
        return pose(g, head_pose.float().to(g.means.device))

    @torch.no_grad()
    def render(self, camera: Camera, state: ViewState | None = None) -> np.ndarray:
        """(H, W, 3) float32 image in [0, 1] of `state` (default: the current one) through `camera`."""
        state = state or self.state
        g = self.posed(state)
        device = g.means.device
        viewmats, Ks = stack_cameras([camera], device=device)
        bg = torch.tensor(state.background, dtype=torch.float32, device=device)  # (3,)
        W, H = camera.width, camera.height
        if state.mode == "RGB":
            rgb, _, _ = render_gaussians(g, viewmats, Ks, W, H, bg, self.avatar.nets.cnn)
            return rgb[0].clamp(0, 1).cpu().numpy()
        if state.mode in ("alpha", "depth"):
            depth, alpha, _ = rasterize(
                g.means, g.quats, g.scales, g.opacities, g.colors, viewmats, Ks, W, H, render_mode="ED"
            )
            alpha = alpha[0, ..., 0].clamp(0, 1).cpu().numpy()  # (H, W)
            if state.mode == "alpha":
                return np.repeat(alpha[..., None], 3, -1).astype(np.float32)
            return colorize_depth(depth[0, ..., 0].cpu().numpy(), alpha, np.asarray(state.background, np.float32))
        if state.mode == "latent PCA":
            colors, scales, opacities = self.feature_colors().to(device), g.scales, g.opacities
        else:  # Gaussian centres
            colors, opacities = g.colors, torch.ones_like(g.opacities)
            scales = torch.full_like(g.scales, self.centre_size)
        rgb, _, _ = rasterize(g.means, g.quats, scales, opacities, colors, viewmats, Ks, W, H, backgrounds=bg[None])
        return rgb[0].clamp(0, 1).cpu().numpy()

    def splats(self, state: ViewState | None = None) -> tuple[SplatBuffer, HeadPose]:
        """The browser path: the splat buffer in the head's frame and the head pose the scene node takes.

        Modes the splat renderer cannot show (alpha, depth) fall back to RGB.
        """
        state = state or self.state
        z, head_to_world = expression_of(self.avatar, state)
        head_pose = split_head_pose(head_to_world)
        g = self.head_gaussians(z.float())
        mode = state.mode if state.mode in SPLAT_MODES else "RGB"
        colors = self.feature_colors() if mode == "latent PCA" else None
        size = self.centre_size if mode == "Gaussian centres" else None
        return splat_buffer(g, head_pose.scale, self.splat_unit, colors=colors, size=size), head_pose
