"""Distillation of the forward field: checked against the synthetic head's exact forward displacement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data_tools.synth import expression_track
from npga.commands.distill import Config as DistillCommand
from npga.commands.distill import main as run_distill
from npga.commands.distill import tracked_codes
from npga.deform import DistillConfig, FieldConfig, ForwardField, PositionalEncoding, load_distilled
from npga.deform.distill import distill
from npga.deform.field import conditioned, mlp
from npga.deform.sampling import sample_codes, sample_surface
from npga.headmodel import SyntheticHead, load_head_model

SMALL = DistillConfig(pool_size=4096, steps=300, eval_points=2048, mesh_resolution=48)


def test_positional_encoding_shape_and_normalisation():
    bounds = torch.tensor([[-1.0, -2.0, -1.0], [1.0, 2.0, 1.0]])
    enc = PositionalEncoding(bounds, n_freqs=3)
    x = torch.tensor([[0.0, 2.0, 0.0]])
    out = enc(x)
    assert out.shape == (1, enc.out_dim) == (1, 21)
    assert torch.allclose(out[0, :3], torch.tensor([0.0, 1.0, 0.0]))  # the largest half-extent maps to 1


def test_field_starts_at_zero_and_checks_code_length():
    g = ForwardField(FieldConfig(), expression_dim=4, bounds=torch.tensor([[-1.0] * 3, [1.0] * 3]))
    assert torch.equal(g(torch.randn(5, 3), torch.randn(4)), torch.zeros(5, 3))
    try:
        g(torch.randn(5, 3), torch.randn(3))
    except ValueError as e:
        assert "expects 4" in str(e)
    else:
        raise AssertionError("a code of the wrong length must be refused")


def test_code_sampling_stays_in_the_tracked_range():
    codes = torch.rand(6, 3)
    z = sample_codes(codes, 1000, 0.5, torch.Generator().manual_seed(0))
    assert z.shape == (1000, 3)
    assert (z >= codes.min(0).values - 1e-6).all() and (z <= codes.max(0).values + 1e-6).all()


def motion_error(displacement, head, x: torch.Tensor, z: torch.Tensor) -> tuple[float, float]:
    """(error on the points that move, p95 error): the first is the mean error over the 10% of points with the
    largest true displacement relative to their mean displacement; the second is relative to the largest one.
    Medians over the whole surface cannot tell a field from zero: most of a face does not move."""
    true = head.forward_displacement(x, z)  # (N, 3) exact ground truth of the synthetic head
    with torch.no_grad():
        err = (displacement(x, z) - true).norm(dim=-1)
    mag = true.norm(dim=-1)
    moving = mag >= mag.quantile(0.9)
    return float(err[moving].mean() / mag[moving].mean()), float(err.quantile(0.95) / mag.max())


# The distilled field (SMALL) scores about (0.27, 0.06); a zero field (1.0, 0.16), a flipped one (2.0, 0.33), the
# field of another frame's code (0.85, 0.28), half the motion (0.5, 0.08).
MOVING_LIMIT, P95_LIMIT = 0.4, 0.1


@pytest.fixture(scope="module")
def head_and_points():
    """The synthetic head, tracked codes like the tiny capture's, and surface points each under one of them."""
    head = SyntheticHead.from_seed(0)
    rng = np.random.default_rng(1000)
    codes = torch.from_numpy(np.concatenate([expression_track(s, 4, rng) for s in ("EXP-1-jaw", "FREE")])).float()
    gen = torch.Generator().manual_seed(123)
    x, _ = sample_surface(head.canonical_mesh(48), 4096, gen)
    z = codes[torch.randint(len(codes), (4096,), generator=gen)]
    return head, codes, x, z


def test_distilled_field_moves_the_points_that_move(head_and_points):
    head, codes, x, z = head_and_points
    g, report = distill(head, codes, SMALL)
    moving, p95 = motion_error(g, head, x, z)
    assert moving < MOVING_LIMIT and p95 < P95_LIMIT, (moving, p95)
    assert report["cycle_residual"]["p95"] < P95_LIMIT * report["largest_displacement"]


WRONG_FIELDS = {
    "zero": lambda head, x, z: torch.zeros_like(x),
    "flipped": lambda head, x, z: -head.forward_displacement(x, z),  # the cycle target x_c - x_p
    "another_frames_code": lambda head, x, z: head.forward_displacement(x, z.roll(1, 0)),
    "half": lambda head, x, z: 0.5 * head.forward_displacement(x, z),
}


@pytest.mark.parametrize("wrong", WRONG_FIELDS)
def test_the_motion_criterion_rejects_a_wrong_field(head_and_points, wrong):
    head, _, x, z = head_and_points
    moving, p95 = motion_error(lambda x_, z_: WRONG_FIELDS[wrong](head, x_, z_), head, x, z)
    assert moving > 1.2 * MOVING_LIMIT, (wrong, moving, p95)


def test_distill_command_writes_a_field_that_matches_the_true_displacement(tiny_capture, tmp_path):
    """`npga distill` on the tiny capture: its report and its saved field, on the points that move."""
    run_distill(DistillCommand(capture=tiny_capture, out=tmp_path / "run", distill=SMALL, device="cpu"))
    report = json.loads((tmp_path / "run" / "distill_report.json").read_text())
    assert report["cycle_residual"]["p95"] < P95_LIMIT * report["largest_displacement"]

    g = load_distilled(tmp_path / "run" / "distill.pt")
    head = load_head_model(tiny_capture)
    codes = tracked_codes(tiny_capture)
    gen = torch.Generator().manual_seed(123)
    x, _ = sample_surface(head.canonical_mesh(48), 4096, gen)
    z = codes[torch.randint(len(codes), (4096,), generator=gen)]
    moving, p95 = motion_error(g, head, x, z)
    assert moving < MOVING_LIMIT and p95 < P95_LIMIT, (moving, p95)


def test_a_shared_code_conditions_the_first_layer_as_the_concatenated_input_does():
    gen = torch.Generator().manual_seed(3)
    net = mlp(7 + 5, 16, 2, 3).double()
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.bias, generator=gen)
    x = torch.randn(40, 7, generator=gen, dtype=torch.float64)
    z = torch.randn(5, generator=gen, dtype=torch.float64, requires_grad=True)
    reference = net(torch.cat([x, z.expand(40, -1)], -1))
    fast = conditioned(net, x, z)
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-12)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), z)
    (grad_ref,) = torch.autograd.grad(reference.square().sum(), z)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=0, atol=1e-10)
