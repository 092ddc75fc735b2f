"""The networks' drawing precision: what `auto` picks, what each format changes, and what it must not."""

from __future__ import annotations

import pytest
import torch

import npga.avatar.precision as precision_module
from npga.avatar.precision import network_precision, resolve_precision
from tests.helpers.viewer_avatar import vivid_avatar


def test_auto_is_bfloat16_on_a_gpu_or_a_cpu_with_bfloat16_units_and_tf32_needs_cuda(monkeypatch):
    for has_units, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(precision_module, "cpu_has_bfloat16_units", lambda h=has_units: h)
        assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("auto", torch.device("cuda")) == "bfloat16"
    assert resolve_precision("tf32", torch.device("cuda")) == "tf32"
    with pytest.raises(ValueError, match="tf32.*cpu"):
        resolve_precision("tf32", torch.device("cpu"))


def test_bfloat16_runs_the_networks_in_bfloat16_and_float32_changes_nothing():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(5, 8)
    with network_precision("bfloat16", x.device):
        assert layer(x).dtype == torch.bfloat16
    with network_precision("float32", x.device):
        assert torch.equal(layer(x), layer.forward(x))
        assert layer(x).dtype == torch.float32


def test_a_bfloat16_avatar_keeps_its_head_pose_at_full_precision():
    """Far from the origin, bfloat16's 8-bit mantissa would move a Gaussian by centimetres: only the networks'
    motion may round, the head pose must not."""
    avatar = vivid_avatar()
    z = avatar.motions["A"].expression[2]
    head_pose = torch.eye(4)
    head_pose[:3, 3] = torch.tensor([30.0, -20.0, 50.0])  # bfloat16 spacing at 50 is 0.25
    exact = avatar.gaussians(z, head_pose)
    avatar.precision = "bfloat16"
    fast = avatar.gaussians(z, head_pose)
    assert fast.means.dtype == fast.colors.dtype == torch.float32
    assert not torch.equal(fast.colors, exact.colors)  # the detail network did run in bfloat16
    assert (fast.colors - exact.colors).abs().max() < 0.1  # a strong colour network: logits up to ~30
    assert (fast.means - exact.means).abs().max() < 1e-4


@pytest.mark.gpu
def test_tf32_and_bfloat16_avatars_draw_the_float32_picture_on_cuda():
    avatar = vivid_avatar()
    avatar.params = {k: v.cuda() for k, v in avatar.params.items()}
    avatar.nets = avatar.nets.cuda()
    camera = avatar.cameras["c0"]
    z, head_pose = avatar.tracked("A", 3)
    exact, _ = avatar.render_code(z, head_pose, [camera])
    for precision in ("tf32", "bfloat16"):
        avatar.precision = precision
        fast, _ = avatar.render_code(z, head_pose, [camera])
        psnr = -10 * torch.log10(((fast - exact) ** 2).mean())
        assert psnr > 40, f"{precision}: {psnr:.1f} dB from float32"
    assert not torch.backends.cuda.matmul.allow_tf32  # tf32 was switched on for the networks only
