"""Adaptive density control: gsplat's DefaultStrategy with a cap on the number of Gaussians.

The strategy clones, splits and prunes every entry of the avatar's ParameterDict (latent features
included) together with Adam's moments. The cap keeps memory and step time bounded: once growing would
pass it, only the Gaussians with the largest screen-space gradients grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy


@dataclass(frozen=True)
class DensifyConfig:
    enabled: bool = True
    """Clone, split and prune Gaussians during training."""
    max_gaussians: int = 250_000
    """Cap on the number of Gaussians (the paper's avatars have up to 250k)."""
    grow_grad2d: float = 0.0002
    """Mean screen-space gradient above which a Gaussian is cloned (small) or split (large)."""
    grow_scale3d: float = 0.01
    """Size, relative to the head's extent, that separates cloning (smaller) from splitting."""
    prune_opa: float = 0.005
    """Opacity below which a Gaussian is removed."""
    prune_scale3d: float = 0.1
    """Size, relative to the head's extent, above which a Gaussian is removed."""
    refine_start: int = 500
    """First step that densifies."""
    refine_stop: int = 15_000
    """Last step that densifies."""
    refine_every: int = 100
    """Steps between densifications."""


@dataclass
class CappedDefaultStrategy(DefaultStrategy):
    """DefaultStrategy that never grows beyond `cap` Gaussians."""

    cap: int = 250_000

    @torch.no_grad()
    def _grow_gs(self, params: Any, optimizers: Any, state: dict[str, Any], step: int) -> tuple[int, int]:
        room = self.cap - len(params["means"])
        if room <= 0:
            return 0, 0
        grads = state["grad2d"] / state["count"].clamp_min(1)
        if int((grads > self.grow_grad2d).sum()) > room:  # each clone or split adds one Gaussian
            keep = torch.zeros_like(grads, dtype=torch.bool)
            keep[grads.topk(room).indices] = True
            state["grad2d"] = torch.where(keep, state["grad2d"], torch.zeros_like(state["grad2d"]))
        return super()._grow_gs(params, optimizers, state, step)


def make_strategy(cfg: DensifyConfig) -> CappedDefaultStrategy:
    return CappedDefaultStrategy(
        cap=cfg.max_gaussians,
        grow_grad2d=cfg.grow_grad2d,
        grow_scale3d=cfg.grow_scale3d,
        prune_opa=cfg.prune_opa,
        prune_scale3d=cfg.prune_scale3d,
        refine_start_iter=cfg.refine_start,
        refine_stop_iter=cfg.refine_stop if cfg.enabled else 0,
        refine_every=cfg.refine_every,
    )
