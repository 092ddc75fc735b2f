"""The mouth phase (`--mouth-steps`): windows around the mouth, rendered through shifted intrinsics, and steps
that move the mouth network and nothing else."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from npga.avatar import deform, render_gaussians
from npga.avatar.mouth import mouth_weight
from npga.cameras import look_at
from npga.losses import LOSS_TERMS, LossWeights, compute_losses, total_loss
from npga.render import rasterize
from npga.train import TrainConfig, build_trainer, mouth_phase, with_steps
from npga.train import trainer as trainer_module
from npga.train.mouth_phase import MARGIN, MIN_WINDOW, contains, crop_intrinsics, mouth_window, only_trainable
from tests.test_train import tiny_config

W, H = 96, 64
K = torch.tensor([[80.0, 0.0, 47.0], [0.0, 80.0, 30.0], [0.0, 0.0, 1.0]])


def _view(eye: tuple[float, float, float]) -> torch.Tensor:
    return torch.from_numpy(look_at(np.array(eye), np.zeros(3))).float()  # (4, 4)


def _pixels(points: torch.Tensor, viewmat: torch.Tensor) -> np.ndarray:
    """(M, 2) pixel coordinates, by homogeneous coordinates in float64 (not the function's own arithmetic)."""
    x = np.c_[points.double().numpy(), np.ones(len(points))] @ viewmat.double().numpy().T
    uvw = x[:, :3] @ K.double().numpy().T
    return uvw[:, :2] / uvw[:, 2:]


def test_the_window_holds_every_projected_point_with_its_margin_and_stays_inside_the_image():
    viewmat = _view((0.2, -0.1, 1.5))
    points = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([0.06, 0.03, 0.02])
    x0, y0, x1, y1 = mouth_window(points, viewmat, K, W, H, margin=0.25)
    uv = _pixels(points, viewmat)
    lo, hi = uv.min(0), uv.max(0)
    extent = hi - lo
    assert 0 <= x0 and x1 <= W and 0 <= y0 and y1 <= H
    assert x0 <= lo[0] - 0.25 * extent[0] + 1 and x1 >= hi[0] + 0.25 * extent[0] - 1
    assert y0 <= lo[1] - 0.25 * extent[1] + 1 and y1 >= hi[1] + 0.25 * extent[1] - 1
    assert x1 - x0 < 0.9 * W  # a window, not the frame


def test_a_tiny_or_edge_window_keeps_its_minimum_size_and_points_behind_the_camera_give_none():
    viewmat = torch.eye(4)
    one = torch.tensor([[0.0, 0.0, 2.0]])  # the principal point
    x0, y0, x1, y1 = mouth_window(one, viewmat, K, W, H, margin=0.25)
    assert (x1 - x0, y1 - y0) == (MIN_WINDOW, MIN_WINDOW) and x0 <= 47 < x1 and y0 <= 30 < y1
    corner = torch.tensor([[-47.0 / 80 * 2, -30.0 / 80 * 2, 2.0]])  # projects onto pixel (0, 0)
    x0, y0, x1, y1 = mouth_window(corner, viewmat, K, W, H, margin=0.25)
    assert (x0, y0, x1 - x0, y1 - y0) == (0, 0, MIN_WINDOW, MIN_WINDOW)  # slid inside, not cut short
    assert mouth_window(torch.tensor([[0.0, 0.0, -1.0]]), viewmat, K, W, H, 0.25) is None
    assert mouth_window(torch.tensor([[50.0, 0.0, 1.0]]), viewmat, K, W, H, 0.25) is None  # far off the image


def test_a_window_rendered_through_shifted_intrinsics_is_that_window_of_the_frame():
    gen = torch.Generator().manual_seed(0)
    n = 60
    means = torch.randn(n, 3, generator=gen) * 0.15
    quats = torch.randn(n, 4, generator=gen)
    scales = torch.rand(n, 3, generator=gen) * 0.04 + 0.01
    opacities = torch.rand(n, generator=gen) * 0.8 + 0.1
    colors = torch.rand(n, 3, generator=gen)
    viewmat = _view((0.3, 0.2, 1.4))[None]
    bg = torch.ones(1, 3)
    full, full_alpha, _ = rasterize(means, quats, scales, opacities, colors, viewmat, K[None], W, H, backgrounds=bg)
    x0, y0, x1, y1 = 21, 13, 70, 47  # off the 16-pixel tile grid on purpose
    crop = crop_intrinsics(K, x0, y0)[None]
    part, part_alpha, _ = rasterize(
        means, quats, scales, opacities, colors, viewmat, crop, x1 - x0, y1 - y0, backgrounds=bg
    )
    assert torch.allclose(part, full[:, y0:y1, x0:x1], atol=1e-5)
    assert torch.allclose(part_alpha, full_alpha[:, y0:y1, x0:x1], atol=1e-5)
    assert (full[:, y0:y1, x0:x1] < 0.99).any()  # the window shows Gaussians, not just background


def test_only_the_named_parameters_require_gradients_inside_the_block_and_every_flag_comes_back():
    a, b, c = (torch.nn.Parameter(torch.ones(2)) for _ in range(3))
    c.requires_grad_(False)
    with only_trainable([a, b, c], [b]):
        assert (a.requires_grad, b.requires_grad, c.requires_grad) == (False, True, False)
    assert (a.requires_grad, b.requires_grad, c.requires_grad) == (True, True, False)
    with pytest.raises(RuntimeError), only_trainable([a, b, c], [b]):
        raise RuntimeError("a failing step")
    assert (a.requires_grad, b.requires_grad, c.requires_grad) == (True, True, False)


def _mouth_config(capture, out, **kw) -> TrainConfig:
    cfg = tiny_config(capture, out, checkpoint_every=1000, **kw)
    mouth = dataclasses.replace(cfg.detail.mouth, enabled=True)
    return dataclasses.replace(cfg, detail=dataclasses.replace(cfg.detail, mouth=mouth))


def test_the_mouth_phase_moves_the_mouth_network_alone_and_gives_every_flag_back(tiny_capture, tmp_path):
    cfg = _mouth_config(tiny_capture, tmp_path / "run", steps=20, mouth_steps=10)
    trainer = build_trainer(dataclasses.replace(cfg, mouth_steps=0), hooks=[])
    trainer.fit()  # the joint steps
    before = {n: p.detach().clone() for n, p in trainer.nets.named_parameters()}
    flags = {n: p.requires_grad for n, p in trainer.nets.named_parameters()}
    gaussians = {k: p.detach().clone() for k, p in trainer.params.items()}

    phase = build_trainer(dataclasses.replace(cfg, resume=True, override_config=True), hooks=[])
    assert phase.step == 20
    phase.fit()
    assert phase.step == 30
    for name, p in phase.nets.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == name.startswith("detail.mouth."), name
        assert p.requires_grad == flags[name], name
    for k, p in phase.params.items():
        assert torch.equal(p, gaussians[k]), k


def test_a_mouth_step_follows_the_frame_loss_over_the_mouth_s_window(tiny_capture, tmp_path):
    """Its gradient is the joint step's L1 term's, restricted to the window's pixels (a frame's mean, not the
    window's: Adam's moments from the joint steps then scale it as before), rendered here from the whole frame."""
    cfg = _mouth_config(tiny_capture, tmp_path / "run", steps=10, mouth_steps=1)
    only_l1 = LossWeights(**{name: 0.0 for name in LOSS_TERMS})
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(only_l1, l1=1.0))
    trainer = build_trainer(cfg, hooks=[])
    while trainer.step < cfg.steps:
        trainer.train_step(trainer.sample_step())
    mouth = trainer.nets.detail.mouth
    batch = trainer.make_batch(trainer.split.train_sequences[0], 1, trainer.train_serials[5:6])

    with only_trainable(trainer.nets.parameters(), mouth.parameters()):
        g = deform(trainer.params, trainer.nets, batch.z, batch.head_pose)
        rgb, _, _ = trainer.rasterize(g, batch)  # (1, H, W, 3) the whole frame
    inside = mouth_weight(trainer.params["means"], mouth.center, mouth.radii) > 0
    w, h = trainer.cache.width, trainer.cache.height
    x0, y0, x1, y1 = mouth_window(g.means[inside].detach(), batch.viewmats[0], batch.Ks[0], w, h, MARGIN)
    error = (rgb - batch.rgb)[:, y0:y1, x0:x1].abs()  # (1, h, w, 3)
    expected = torch.autograd.grad(error.sum() / (3 * w * h), list(mouth.parameters()))

    seen = []
    trainer.net_optimizer.step = lambda: seen.append([p.grad.clone() for p in mouth.parameters()])
    trainer.mouth_step(batch)
    assert len(seen) == 1
    for got, want in zip(seen[0], expected, strict=True):
        assert (got - want).norm() <= 1e-4 * want.norm()
    assert max(e.abs().max() for e in expected) > 0


def test_a_mouth_step_draws_fewer_gaussians_for_the_gradient_of_the_window_drawn_from_all(
    tiny_capture, tmp_path, monkeypatch
):
    """The step draws only the Gaussians its frame keeps (`MouthFrame`: under 70% of them here) and leaves out
    the loss terms it cannot change; its gradient is still the whole avatar's window loss's, every term counted
    (the per-Gaussian means too: a scale limit every Gaussian passes, an opacity prior). A window outside the
    kept ones' reach falls back to every Gaussian, with the same gradient."""
    monkeypatch.setattr(mouth_phase, "MIN_WINDOW", 12)  # the tiny capture's face is 30 pixels tall
    monkeypatch.setattr(trainer_module, "SLACK", 0.1)
    cfg = _mouth_config(tiny_capture, tmp_path / "run", steps=10, mouth_steps=1)
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, max_scale=1e-4, opacity_reg=0.05))
    trainer = build_trainer(cfg, hooks=[])
    while trainer.step < cfg.steps:
        trainer.train_step(trainer.sample_step())
    mouth = trainer.nets.detail.mouth
    seq = trainer.split.train_sequences[0]
    batch = trainer.make_batch(seq, 1, trainer.train_serials[5:6])
    # one training camera: its window's line of sight holds a part of the tiny head (all of its cameras' do not)
    trainer.train_serials = batch.serials

    with only_trainable(trainer.nets.parameters(), mouth.parameters()):
        g = deform(trainer.params, trainer.nets, batch.z, batch.head_pose)
        inside = mouth_weight(trainer.params["means"], mouth.center, mouth.radii) > 0
        w, h = trainer.cache.width, trainer.cache.height
        x0, y0, x1, y1 = mouth_window(g.means[inside].detach(), batch.viewmats[0], batch.Ks[0], w, h, MARGIN)
        K = crop_intrinsics(batch.Ks[0], x0, y0)[None]
        rgb, alpha, _ = render_gaussians(g, batch.viewmats, K, x1 - x0, y1 - y0, trainer.background, trainer.nets.cnn)
        gt_rgb, gt_alpha = batch.rgb[:, y0:y1, x0:x1], batch.alpha[:, y0:y1, x0:x1]
        terms = compute_losses(rgb, alpha, gt_rgb, gt_alpha, g, trainer.neighbors, cfg.loss)
        loss = total_loss(terms, cfg.loss) * (x1 - x0) * (y1 - y0) / (w * h)
        expected = torch.autograd.grad(loss, list(mouth.parameters()))
    assert terms["scale"] > 0 and terms["opacity_reg"] > 0

    seen = []
    trainer.net_optimizer.step = lambda: seen.append([p.grad.clone() for p in mouth.parameters()])
    trainer.mouth_step(batch)
    frame = trainer._mouth_frames[(seq, 1)]
    assert contains(frame.windows[batch.serials[0]], (x0, y0, x1, y1))  # the step drew the kept ones
    # the kept ones draw the whole grown window as every Gaussian does
    gx0, gy0, gx1, gy1 = frame.windows[batch.serials[0]]
    part = {name: p[frame.index] for name, p in trainer.params.items()}
    with torch.no_grad():
        kept = deform(part, trainer.nets, batch.z, batch.head_pose, coarse_offset=frame.coarse_offset)
        K = crop_intrinsics(batch.Ks[0], gx0, gy0)[None]
        images = [
            render_gaussians(gs, batch.viewmats, K, gx1 - gx0, gy1 - gy0, trainer.background, trainer.nets.cnn)[0]
            for gs in (kept, g)
        ]
    assert (images[0] - images[1]).abs().max() < 1e-5
    assert len(frame.index) < 0.7 * len(trainer.params["means"])
    trainer._mouth_frames[(seq, 1)] = dataclasses.replace(frame, windows={})  # no camera's window is covered
    trainer.mouth_step(batch)
    assert len(seen) == 2
    for grads in seen:
        for got, want in zip(grads, expected, strict=True):
            assert (got - want).norm() <= 1e-4 * want.norm()


def test_the_mouth_phase_resumes_bit_for_bit_and_scales_with_the_schedule(tiny_capture, tmp_path):
    cfg = _mouth_config(tiny_capture, tmp_path / "full", steps=12, mouth_steps=16, detail_code_noise=0.05)
    full = build_trainer(cfg, hooks=[])
    full.fit()
    split = build_trainer(dataclasses.replace(cfg, out=tmp_path / "split", mouth_steps=6), hooks=[])
    split.fit()  # ends inside the phase, at step 18
    resumed = build_trainer(dataclasses.replace(cfg, out=tmp_path / "split", resume=True, override_config=True), [])
    assert resumed.step == 18
    resumed.fit()
    for a, b in zip(full.nets.parameters(), resumed.nets.parameters(), strict=True):
        assert torch.equal(a, b)
    assert with_steps(cfg, 24).mouth_steps == 32


def test_the_mouth_phase_without_a_mouth_network_warns_and_is_skipped(tiny_capture, tmp_path, caplog):
    cfg = tiny_config(tiny_capture, tmp_path / "run", steps=3, mouth_steps=5, checkpoint_every=1000)
    trainer = build_trainer(cfg, hooks=[])
    assert trainer.cfg.total_steps == 3 and "mouth steps are skipped" in caplog.text
    trainer.fit()
    assert trainer.step == 3


def test_a_mouth_phase_whose_network_cannot_learn_fails_before_the_joint_steps(tiny_capture, tmp_path):
    cfg = _mouth_config(tiny_capture, tmp_path / "run", steps=3, mouth_steps=5)
    cfg = dataclasses.replace(cfg, lr=dataclasses.replace(cfg.lr, mouth=0.0))
    with pytest.raises(ValueError, match="--lr.mouth is 0"):
        build_trainer(cfg, hooks=[])
