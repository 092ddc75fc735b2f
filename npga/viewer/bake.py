"""An avatar's expression response baked into a low-rank linear basis, for a page that runs no network.

Each Gaussian's attributes in the head's frame (ATTRIBUTES: centre, orientation, log size, colour, opacity) are
approximated as an affine function of the whitened expression coordinates `a` along the first k principal
directions of the training codes (`CodeStats`): attrs(a) ~ basis[0] + sum_j a_j basis[1 + j]. The basis is the
least-squares fit over every tracked frame of the avatar and over slider moves of up to +-3 standard deviations
along each direction, so both what the page plays and what its sliders reach are fitted. A tracked frame is then
k numbers and a head pose, whatever the number of Gaussians: a 1,000-frame sequence costs kilobytes. What is
approximated: the networks' curvature over that range, and a code's part outside the first k directions.
docs/web.md measures it against `npga render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from npga.avatar.deform import Gaussians
from npga.avatar.model import Avatar

ATTRIBUTES = (("means", 3), ("quats", 4), ("log_scales", 3), ("color_logits", 3), ("opacity_logits", 1))
"""Per-Gaussian columns of the basis, in order (14 numbers): quaternions w x y z; sizes, colours and opacities
before their activations (exp, sigmoid), where the networks add their residuals, so that the fit is linear where
the model is and the page's colours and opacities stay in range."""
_LOGIT_EPS = 1e-6
WIDTH = sum(n for _, n in ATTRIBUTES)
SLIDER_STEPS = (-3.0, -1.5, 1.5, 3.0)
"""Whitened offsets along each direction the fit samples (the page's sliders span -3..3)."""
MAX_FIT_FRAMES = 512
"""Tracked frames the fit samples at most (evenly spaced over all sequences): each costs one network pass."""


@dataclass(frozen=True)
class Bake:
    basis: torch.Tensor  # (1 + k, N, WIDTH) float32: the affine term, then one row per direction
    coords: dict[str, torch.Tensor]  # sequence -> (T, k) whitened coordinates of each tracked frame
    head_poses: dict[str, torch.Tensor]  # sequence -> (T, 4, 4) head -> world similarity

    @property
    def rank(self) -> int:
        return len(self.basis) - 1


def attributes(g: Gaussians) -> torch.Tensor:
    """(N, WIDTH) the baked columns of Gaussians in the head's frame."""
    logit = lambda p: torch.logit(p.float(), eps=_LOGIT_EPS)
    return torch.cat([g.means, g.quats, g.scales.log(), logit(g.colors), logit(g.opacities)[:, None]], 1).float()


def gaussians_of(attrs: torch.Tensor) -> Gaussians:
    """(N, WIDTH) baked columns -> Gaussians, as the page turns them back (normalised, activated)."""
    means, quats, log_scales, color_logits, opacity_logits = attrs.split([n for _, n in ATTRIBUTES], 1)
    return Gaussians(
        means=means,
        quats=F.normalize(quats, dim=-1),
        scales=log_scales.exp(),
        opacities=torch.sigmoid(opacity_logits[:, 0]),
        colors=torch.sigmoid(color_logits),
        features=None,
        residuals=None,
    )


def baked(bake: Bake, a: torch.Tensor) -> Gaussians:
    """The baked Gaussians in the head's frame at whitened coordinates a (k,)."""
    weights = torch.cat([a.new_ones(1), a.to(bake.basis.dtype)])  # (1 + k,)
    return gaussians_of(torch.einsum("j,jnc->nc", weights, bake.basis))


def _fit_frames(avatar: Avatar) -> torch.Tensor:
    """(S, D) tracked codes of all sequences, at most MAX_FIT_FRAMES of them, evenly spaced."""
    codes = torch.cat([m.expression for m in avatar.motions.values()])
    keep = torch.linspace(0, len(codes) - 1, min(len(codes), MAX_FIT_FRAMES)).round().long()
    return codes[keep].to(avatar.device)


def bake_avatar(avatar: Avatar, rank: int) -> Bake:
    """The basis of the first `rank` directions the training codes move along (fewer where they move along
    fewer), fitted by least squares (module docstring)."""
    stats = avatar.codes
    k = min(rank, stats.n_moving)
    codes = _fit_frames(avatar)  # (S1, D)
    slider = torch.tensor(SLIDER_STEPS, device=codes.device)
    moves = (torch.eye(k, device=codes.device)[:, None, :] * slider[None, :, None]).reshape(
        k * len(slider), k
    )  # (S2, k)
    samples = torch.cat([codes, torch.stack([stats.unwhiten(a) for a in moves])]) if k else codes  # (S, D)
    design = torch.cat([samples.new_ones(len(samples), 1), stats.whiten(samples)[:, :k]], 1).double()  # (S, 1+k)
    solve = torch.linalg.pinv(design)  # (1 + k, S): the basis is solve @ attributes, summed sample by sample
    basis = torch.zeros(1 + k, avatar.n_gaussians, WIDTH, dtype=torch.float64, device=codes.device)
    for s, z in enumerate(samples):
        basis += solve[:, s, None, None] * attributes(avatar.expressed(z)).double()
    coords = {name: stats.whiten(m.expression.to(codes.device))[:, :k] for name, m in avatar.motions.items()}
    # The directions as the page stores them (float16): what Python draws of a bake is what the page draws.
    basis = torch.cat([basis[:1].float(), basis[1:].half().float()])
    return Bake(
        basis=basis.cpu(),
        coords={name: c.float().cpu() for name, c in coords.items()},
        head_poses={name: m.head_pose.float().cpu() for name, m in avatar.motions.items()},
    )
