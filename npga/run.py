"""A trained run folder as an avatar that renders: what evaluation, rendering and the viewer load.

`load_run(run)` reads the run's config, split and newest checkpoint and rebuilds the networks; the
returned `Avatar.render(sequence, t, cameras)` has the signature of `npga.evaluate.Renderer`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from npga.avatar import AvatarNets, Gaussians, deform, render_gaussians
from npga.cameras import Camera, stack_cameras
from npga.config import load_config
from npga.data.cache import FrameCache
from npga.data.prepare import open_or_prepare
from npga.deform.distill import DISTILL_FILE, load_distilled
from npga.headmodel import load_head_model
from npga.split import Split
from npga.train import CONFIG_FILE, SPLIT_FILE, TrainConfig, build_nets, list_checkpoints


@dataclass
class Avatar:
    cfg: TrainConfig
    params: nn.ParameterDict
    nets: AvatarNets
    cache: FrameCache
    split: Split
    step: int

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    @property
    def background(self) -> torch.Tensor:
        """(3,) the colour the run renders on and composites ground truth on."""
        return torch.tensor(self.cfg.background, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def gaussians(self, z_ex: torch.Tensor, head_pose: torch.Tensor) -> Gaussians:
        """The posed Gaussians for a code (D,) and head pose (4, 4)."""
        return deform(self.params, self.nets, z_ex.float().to(self.device), head_pose.float().to(self.device))

    def tracked(self, sequence: str, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame `t`'s tracked expression code (D,) and head pose (4, 4)."""
        tr = self.cache.tracking(sequence)
        return torch.from_numpy(tr.expression[t]), torch.from_numpy(tr.head_to_world(t))

    @torch.no_grad()
    def render_code(self, z_ex: torch.Tensor, head_pose: torch.Tensor,
                    cameras: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """rgb (C, H, W, 3) on the run's background and alpha (C, H, W, 1) for any code (D,) and pose (4, 4)."""
        viewmats, Ks = stack_cameras(cameras, device=self.device)
        g = self.gaussians(z_ex, head_pose)
        rgb, alpha, _ = render_gaussians(g, viewmats, Ks, cameras[0].width, cameras[0].height, self.background,
                                         self.nets.cnn)  # fmt: skip
        return rgb.clamp(0, 1), alpha

    def render(self, sequence: str, t: int, cameras: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame `t` of a cached sequence, driven by its tracked code and head pose."""
        return self.render_code(*self.tracked(sequence, t), cameras)


def load_run(
    run: str | os.PathLike,
    device: str | torch.device = "cpu",
    checkpoint: Path | None = None,
    capture: Path | None = None,
) -> Avatar:
    """The avatar of a run folder at its newest checkpoint (or `checkpoint`).

    `capture` replaces the capture folder recorded in the run (for a capture that was moved).
    """
    run = Path(run)
    if not (run / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run} is not a training run ({CONFIG_FILE} missing)")
    cfg = load_config(TrainConfig, run / CONFIG_FILE)
    if capture is not None:
        cfg = dataclasses.replace(cfg, capture=Path(capture))
    if not Path(cfg.capture).is_dir():
        raise FileNotFoundError(f"{run} was trained on {cfg.capture}, which does not exist (any more); "
                                "pass --capture with its new location")  # fmt: skip
    if checkpoint is None:
        found = list_checkpoints(run)
        if not found:
            raise FileNotFoundError(f"{run}: no checkpoint yet (train with `npga train --out {run}`)")
        checkpoint = found[-1]
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    head = load_head_model(cfg.capture)
    coarse = load_distilled(run / DISTILL_FILE) if cfg.use_coarse else None
    nets = build_nets(cfg, head, coarse).to(device)
    nets.load_state_dict(state["nets"])
    nets.eval()
    params = nn.ParameterDict({k: nn.Parameter(v, requires_grad=False) for k, v in state["params"].items()})
    cache = open_or_prepare(cfg.capture, height=cfg.height)
    return Avatar(cfg, params, nets, cache, Split.load(run / SPLIT_FILE), state["step"])
