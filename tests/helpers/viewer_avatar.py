"""A tiny avatar for the viewer tests: a compact, opaque head whose expression visibly changes its colours."""

from __future__ import annotations

import math

import torch

from npga.avatar.dynamics import RESIDUAL_SLICES
from npga.avatar.model import Avatar
from tests.helpers.small_avatars import random_avatar


def vivid_avatar(seed: int = 0) -> Avatar:
    """`random_avatar` with 300 opaque Gaussians in a head-sized ball at the origin (the rig looks at it from
    3 m) and a detail network that changes only colours, strongly enough to see (no CNN: both render paths show
    the same)."""
    gen = torch.Generator().manual_seed(seed)
    avatar = random_avatar(gen, cnn=False)
    n = 300
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    radius = 0.35 * torch.rand(n, 1, generator=gen).pow(1 / 3)
    avatar.params = {
        "means": direction * radius,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": torch.full((n, 3), math.log(0.06)),
        "opacities": torch.full((n,), 4.0),
        "colors": torch.randn(n, 3, generator=gen) * 0.3 + torch.tensor([1.0, 0.0, -0.5]),
        "features": torch.randn(n, 6, generator=gen),
    }
    color = RESIDUAL_SLICES["color"]
    with torch.no_grad():  # residual colours only: big enough to see, while shapes stay put
        avatar.nets.detail.net[0].weight.mul_(10)
        avatar.nets.detail.net[2].weight[color].mul_(30)
        avatar.nets.detail.net[2].weight[: color.start].zero_()
        avatar.nets.detail.net[2].weight[color.stop :].zero_()
    return avatar
