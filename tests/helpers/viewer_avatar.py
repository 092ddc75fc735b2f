"""A tiny avatar for the viewer tests: a compact, opaque head whose expression visibly changes its colours."""

from __future__ import annotations

import dataclasses
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


def posed_vivid_avatar(seed: int = 0) -> Avatar:
    """`vivid_avatar` whose expression changes colours smoothly enough for a linear bake (its colour residuals at
    a fifth), and whose sequences turn, scale and move the head visibly (20 degrees, 10%, 10 cm): a page that
    drops the head pose draws something else."""
    avatar = vivid_avatar(seed)
    with torch.no_grad():
        avatar.nets.detail.net[2].weight[RESIDUAL_SLICES["color"]].mul_(0.2)
    motions = {}
    for i, (name, m) in enumerate(avatar.motions.items()):
        angle = math.radians(20.0 + 10.0 * i)
        c, s = math.cos(angle), math.sin(angle)
        pose = torch.tensor([[c, 0.0, s, 0.1], [0.0, 1.0, 0.0, -0.05], [-s, 0.0, c, 0.0], [0.0, 0.0, 0.0, 1.0]])
        pose[:3, :3] *= 1.1
        motions[name] = dataclasses.replace(m, head_pose=pose.expand(len(m), 4, 4).clone())
    avatar.motions = motions
    return avatar
