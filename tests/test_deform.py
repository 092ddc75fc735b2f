"""Distillation of the forward field: checked against the synthetic head's exact forward displacement."""

from __future__ import annotations

import json

import torch

from npga.commands.distill import Config as DistillCommand
from npga.commands.distill import main as run_distill
from npga.commands.distill import tracked_codes
from npga.deform import DistillConfig, FieldConfig, ForwardField, PositionalEncoding, load_distilled
from npga.deform.sampling import sample_codes, sample_surface
from npga.headmodel import load_head_model

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


def test_distilled_field_matches_the_true_forward_displacement(tiny_capture, tmp_path):
    """`npga distill` on the tiny capture: median error < 3% of the largest displacement (surface, tracked codes)."""
    run_distill(DistillCommand(capture=tiny_capture, out=tmp_path / "run", distill=SMALL, device="cpu"))
    report = json.loads((tmp_path / "run" / "distill_report.json").read_text())
    assert report["cycle_residual"]["median"] < 0.03 * report["largest_displacement"]

    g = load_distilled(tmp_path / "run" / "distill.pt")
    head = load_head_model(tiny_capture)
    codes = tracked_codes(tiny_capture)
    gen = torch.Generator().manual_seed(123)
    x, _ = sample_surface(head.canonical_mesh(48), 4096, gen)
    z = codes[torch.randint(len(codes), (4096,), generator=gen)]
    true = head.forward_displacement(x, z)  # (N, 3) exact ground truth of the synthetic head
    with torch.no_grad():
        err = (g(x, z) - true).norm(dim=-1)
    assert err.median() < 0.03 * true.norm(dim=-1).max()
