"""What the viewer shows, as one immutable value: the GUI replaces it, the render loop reads it.

Keeping it frozen means a frame is always rendered from one consistent state, whatever the GUI threads
change meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from npga.avatar.model import Avatar

RENDER_MODES = ("RGB", "alpha", "depth", "latent PCA", "Gaussian centres")
"""What a pixel shows. The browser's splat renderer shows RGB, latent PCA and Gaussian centres (per-Gaussian
colours and sizes); alpha and depth need the server render."""
SPLAT_MODES = ("RGB", "latent PCA", "Gaussian centres")


@dataclass(frozen=True)
class ViewState:
    sequence: str
    """The avatar's sequence whose tracked expression and head pose drive it."""
    frame: int = 0
    """Frame of `sequence`."""
    offsets: tuple[float, ...] = ()
    """Slider values: added to the frame's code along the training codes' principal directions, in units of
    the codes' standard deviation along each (first direction first)."""
    mode: str = "RGB"
    """One of RENDER_MODES."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB in [0, 1]."""

    def __post_init__(self) -> None:
        if self.mode not in RENDER_MODES:
            raise ValueError(f"render mode {self.mode!r}: expected one of {RENDER_MODES}")


def expression_of(avatar: Avatar, state: ViewState) -> tuple[torch.Tensor, torch.Tensor]:
    """The expression code (D,) and head pose (4, 4) `state` shows: the tracked frame plus the slider offsets."""
    z, pose = avatar.tracked(state.sequence, state.frame)
    k = len(state.offsets)
    if k > len(avatar.codes.std):
        raise ValueError(f"{k} expression sliders, but the avatar's codes have {len(avatar.codes.std)} directions")
    if k:
        z = z + avatar.codes.offset(torch.tensor(state.offsets, dtype=z.dtype, device=z.device))
    return z, pose
