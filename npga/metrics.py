"""Image metrics as the NeRSemble evaluation computes them: PSNR, SSIM and LPIPS.

Images are float tensors in [0, 1], (H, W, 3) or batched (B, H, W, 3). PSNR and SSIM are pure torch
and differentiable, so the training loss uses the same SSIM the evaluation reports.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

SSIM_WINDOW = 11  # Gaussian window of Wang et al. 2004: 11 taps, sigma 1.5
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_batch(img: torch.Tensor, name: str) -> torch.Tensor:
    """(H, W, C) or (B, H, W, C) -> (B, H, W, C)."""
    if img.ndim == 3:
        return img[None]
    if img.ndim != 4:
        raise ValueError(f"{name} must be (H, W, C) or (B, H, W, C), got shape {tuple(img.shape)}")
    return img


def composite(rgb: torch.Tensor, alpha: torch.Tensor, background: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Composite straight colour (..., 3) with alpha (..., 1) onto a background (white by default)."""
    return rgb * alpha + (1.0 - alpha) * background


def mse(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, (B,)."""
    pred, gt = _as_batch(pred, "pred"), _as_batch(gt, "gt")
    return ((pred - gt) ** 2).flatten(1).mean(1)


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (B,), data range 1."""
    return -10.0 * torch.log10(mse(pred, gt).clamp_min(1e-12))


def _gaussian_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    r = SSIM_WINDOW // 2
    x = torch.arange(-r, r + 1, device=device, dtype=dtype)
    w = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return w / w.sum()  # (11,)


def ssim_map(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (B, H-10, W-10, C) over the valid region (no padding), data range 1."""
    pred, gt = _as_batch(pred, "pred"), _as_batch(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    B, H, W, C = pred.shape
    if min(H, W) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {W}x{H}")
    w = _gaussian_window(pred.device, pred.dtype)
    wx = w.view(1, 1, 1, -1).expand(5 * C, 1, 1, -1)
    wy = w.view(1, 1, -1, 1).expand(5 * C, 1, -1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:  # (B, 5C, H, W) -> (B, 5C, H-10, W-10), separable
        return F.conv2d(F.conv2d(x, wx, groups=5 * C), wy, groups=5 * C)

    x = pred.permute(0, 3, 1, 2)
    y = gt.permute(0, 3, 1, 2)
    mu_x, mu_y, xx, yy, xy = blur(torch.cat([x, y, x * x, y * y, x * y], 1)).split(C, 1)  # one blur for all five
    var_x = xx - mu_x**2
    var_y = yy - mu_y**2
    cov = xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.permute(0, 2, 3, 1)


def ssim(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image (B,): Gaussian window 11, sigma 1.5, K = (0.01, 0.03), data range 1.

    Equals scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=-1)`.
    """
    return ssim_map(pred, gt).flatten(1).mean(1)


ALEXNET_CHECKPOINT = "alexnet-owt-7be5be79.pth"


class LPIPS:
    """LPIPS (AlexNet, inputs normalised to [-1, 1]) through the `lpips` package, when it can run offline.

    Its weights are never downloaded at run time: the AlexNet backbone must already be in torch's hub
    cache and the `lpips` package (which ships its linear layers) must be installed. Otherwise
    `available` is False, `reason` says how to provide them, and callers report LPIPS as null.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.model = None
        self.reason = ""
        checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_CHECKPOINT
        try:
            import lpips
        except Exception as e:  # ImportError, or torchvision failing to load its operators
            self.reason = f"LPIPS unavailable: `pip install lpips torchvision` ({type(e).__name__}: {e})"
            return
        if not checkpoint.is_file():
            self.reason = f"LPIPS unavailable: put torchvision's AlexNet weights at {checkpoint} (no download here)"
            return
        self.model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor | None:
        """LPIPS per image (B,), or None when unavailable."""
        return None if self.model is None else self.differentiable(pred, gt)

    def differentiable(self, pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """LPIPS per image (B,) with gradients (the training loss); needs `available`."""
        if self.model is None:
            raise RuntimeError(self.reason)
        pred, gt = _as_batch(pred, "pred"), _as_batch(gt, "gt")
        to_nchw = lambda im: im.permute(0, 3, 1, 2) * 2.0 - 1.0
        return self.model(to_nchw(pred), to_nchw(gt)).flatten()
