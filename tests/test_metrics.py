"""PSNR and SSIM against scikit-image (an independent implementation)."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from npga.metrics import LPIPS, composite, psnr, ssim


def _image_pair(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "random":
        gt = rng.random((37, 52, 3))
        pred = np.clip(gt + 0.2 * rng.standard_normal(gt.shape), 0, 1)
    else:  # real-looking: smooth shading, an edge, texture, a white background, small errors
        y, x = np.mgrid[0:64, 0:48] / 64.0
        head = ((x - 0.37) ** 2 / 0.09 + (y - 0.5) ** 2 / 0.16) < 1.0
        skin = np.stack([0.8 - 0.3 * y, 0.6 - 0.2 * y, 0.5 + 0.1 * np.sin(40 * x)], -1)
        gt = np.where(head[..., None], skin, 1.0)
        pred = np.clip(gt + 0.03 * rng.standard_normal(gt.shape) + 0.02 * np.roll(gt, 1, axis=1), 0, 1)
    return pred, gt


@pytest.mark.parametrize("kind", ["random", "real_looking"])
def test_psnr_and_ssim_match_scikit_image(kind):
    pred, gt = _image_pair(kind, np.random.default_rng(1))
    ref_psnr = peak_signal_noise_ratio(gt, pred, data_range=1.0)
    ref_ssim = structural_similarity(
        gt, pred, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    t_pred, t_gt = torch.tensor(pred), torch.tensor(gt)
    assert abs(psnr(t_pred, t_gt).item() - ref_psnr) < 1e-4
    assert abs(ssim(t_pred, t_gt).item() - ref_ssim) < 1e-4
    # float32 as used in training stays within the same tolerance
    assert abs(ssim(t_pred.float(), t_gt.float()).item() - ref_ssim) < 1e-4


def test_metrics_are_batched_and_differentiable():
    rng = np.random.default_rng(2)
    gt = torch.tensor(rng.random((2, 20, 24, 3)))
    pred = (gt + 0.1).clamp(0, 1).requires_grad_()
    s = ssim(pred, gt)
    assert s.shape == (2,) and torch.all(s < 1)
    (1 - s).sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    assert torch.allclose(ssim(gt, gt), torch.ones(2, dtype=gt.dtype))


def test_masked_composite_onto_white():
    rgb = torch.full((4, 4, 3), 0.2)
    alpha = torch.zeros(4, 4, 1)
    alpha[:2] = 1.0
    out = composite(rgb, alpha)
    assert torch.allclose(out[:2], rgb[:2]) and torch.allclose(out[2:], torch.ones(2, 4, 3))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="differ"):
        ssim(torch.zeros(16, 16, 3), torch.zeros(16, 17, 3))
    with pytest.raises(ValueError, match="at least"):
        ssim(torch.zeros(8, 8, 3), torch.zeros(8, 8, 3))


def test_lpips_is_null_with_a_reason_when_weights_are_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    metric = LPIPS()
    assert not metric.available
    assert "LPIPS unavailable" in metric.reason
    assert metric(torch.zeros(16, 16, 3), torch.zeros(16, 16, 3)) is None
