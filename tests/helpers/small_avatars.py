"""Small avatars built in memory, for tests of what starts from an avatar (file, export, rendering)."""

from __future__ import annotations

import numpy as np
import torch

from npga.avatar import CNNConfig, DetailConfig
from npga.avatar.config import AvatarConfig, build_nets
from npga.avatar.model import Avatar, Motion, code_stats
from npga.cameras import Camera, look_at
from npga.deform import FieldConfig
from npga.split import Split


def random_avatar(gen: torch.Generator, cnn: bool = True) -> Avatar:
    """A small avatar with every part present (the CNN only if `cnn`) and no network at its initial value."""
    cnn_cfg = CNNConfig(enabled=True, latent_channels=2, hidden=4) if cnn else None
    cfg = AvatarConfig(
        expression_dim=4,
        bounds=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)),
        latent_dim=6,
        coarse=FieldConfig(width=16, depth=1),
        detail=DetailConfig(width=8, depth=1),
        cnn=cnn_cfg,
        background=(0.1, 0.2, 0.3),
    )
    nets = build_nets(cfg)
    with torch.no_grad():
        for p in nets.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    n = 50
    params = {
        "means": torch.randn(n, 3, generator=gen) * 0.3,
        "quats": torch.randn(n, 4, generator=gen),
        "scales": torch.randn(n, 3, generator=gen) - 3,
        "opacities": torch.randn(n, generator=gen),
        "colors": torch.randn(n, 3, generator=gen),
        "features": torch.randn(n, 6, generator=gen),
    }
    T = 5
    poses = torch.eye(4).repeat(T, 1, 1)
    poses[:, :3, 3] = torch.randn(T, 3, generator=gen) * 0.01
    motions = {
        "A": Motion(torch.randn(T, 4, generator=gen), poses, torch.arange(T) * 2),
        "B": Motion(torch.randn(3, 4, generator=gen), poses[:3], torch.arange(3)),
    }
    K = np.array([[60.0, 0, 16], [0, 60.0, 24], [0, 0, 1]])
    cams = {
        s: Camera(K=K, world_2_cam=look_at(np.array([x, 0.0, 3.0]), np.zeros(3)), width=32, height=48, serial=s)
        for s, x in (("c0", -0.5), ("c1", 0.5))
    }
    return Avatar(
        config=cfg,
        params=params,
        nets=nets,
        motions=motions,
        codes=code_stats(motions["A"].expression),
        cameras=cams,
        split=Split(("c0",), ("c1",), ("A",), ("B",)),
        head_model={"type": "synthetic"},
        provenance={"step": 7, "psnr": 21.5},
    )
