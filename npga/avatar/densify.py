"""Adaptive density control: gsplat's DefaultStrategy with a cap, or 3DGS-MCMC, on CPU and CUDA.

Both strategies edit every entry of the avatar's ParameterDict (latent features included) together with
Adam's moments, row for row. `kind: default` is gsplat's DefaultStrategy, capped through its public
interface only (gsplat's private methods change between releases): once growing would pass the cap,
only the Gaussians with the largest mean screen-space gradients grow. `kind: mcmc` follows gsplat's
MCMCStrategy (relocate transparent Gaussians onto opaque ones, add 5% per refinement up to the cap,
perturb positions), with the relocation formula and the covariance in PyTorch on CPU, since gsplat
has them as CUDA kernels only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gsplat.strategy
import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import remove
from torch import nn

from npga.config import AtLeast1, Fraction
from npga.render.projection import quat_scale_to_covar

log = logging.getLogger(__name__)

Params = dict[str, nn.Parameter] | nn.ParameterDict
Optimizers = dict[str, torch.optim.Optimizer]

RELOCATION_N_MAX = 51
"""Copies of one Gaussian beyond which the relocation formula stops changing (gsplat's binomial table)."""


@dataclass(frozen=True)
class DensifyConfig:
    enabled: bool = True
    """Clone, split and prune (default) or relocate and add (mcmc) Gaussians during training."""
    kind: Literal["default", "mcmc"] = "default"
    """default: 3DGS's clone/split/prune by screen-space gradient; mcmc: 3DGS-MCMC relocation and noise."""
    max_gaussians: AtLeast1 = 250_000
    """Cap on the number of Gaussians, for both kinds (the paper's avatars have up to 250k)."""
    grow_grad2d: float = 0.0002
    """default: mean screen-space gradient above which a Gaussian is cloned (small) or split (large)."""
    grow_scale3d: float = 0.01
    """default: size, relative to the head's extent, that separates cloning (smaller) from splitting."""
    prune_opa: Fraction = 0.005
    """default: opacity below which a Gaussian is removed."""
    prune_scale3d: float = 0.1
    """default: size, relative to the head's extent, above which a Gaussian is removed."""
    refine_start: int = 500
    """First step that densifies."""
    refine_stop: int = 15_000
    """Last step that densifies."""
    refine_every: AtLeast1 = 100
    """Steps between densifications."""
    noise_lr: float = 5e5
    """mcmc: position noise, times the means' learning rate, along each Gaussian's covariance (gsplat: 5e5)."""
    min_opacity: Fraction = 0.005
    """mcmc: opacity at or below which a Gaussian is dead and relocated onto a live one (gsplat: 0.005)."""
    grow_rate: float = 0.05
    """mcmc: fraction of Gaussians added at each densification, until the cap (gsplat: 0.05)."""


# ---- default: DefaultStrategy with a cap --------------------------------------------------------------


@dataclass(frozen=True)
class CappedDefaultStrategy:
    """gsplat's DefaultStrategy (`base`) that never grows beyond `cap` Gaussians.

    gsplat adds the current step's gradient to its statistics inside `step_post_backward`, then grows
    every Gaussian whose mean is above `grow_grad2d`. Here the two are apart: `accumulate` adds a rendering's
    gradients through a copy of `base` that cannot refine (a step may add several renderings, or sum the
    ranks' statistics), and `refine` calls `base` with a rendering in which nothing is visible, so it adds
    nothing and refines from the statistics as they are. At a refinement step that would pass the cap,
    `grow_grad2d` is raised to the (room + 1)-th largest mean, so exactly the `room` largest grow. Below the
    cap the calls are `base`'s own, bit for bit. The cap could only be passed by splits by screen size: the
    newest rows are then removed.
    """

    base: DefaultStrategy
    cap: int

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        return self.base.initialize_state(scene_scale=scene_scale)

    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        self.base.check_sanity(params, optimizers)

    def step_pre_backward(
        self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int, info: dict[str, Any]
    ) -> None:
        self.base.step_pre_backward(params, optimizers, state, step, info)

    def step_post_backward(
        self,
        params: Params,
        optimizers: Optimizers,
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        packed: bool = False,
    ) -> None:
        """gsplat's call: this rendering's statistics added (`accumulate`), then `refine`."""
        self.accumulate(params, optimizers, state, step, info, packed)
        self.refine(params, optimizers, state, step, info, packed)

    def accumulate(
        self,
        params: Params,
        optimizers: Optimizers,
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        packed: bool = False,
    ) -> None:
        """Add one rendering's screen-space gradients (`info`: the rasterizer's meta after backward) to the
        statistics in `state` as gsplat's update adds them, without refining: a step of several renderings adds
        each of them, and ranks add theirs into a zero `initialize_state()` to sum them (`STATISTICS`)."""
        if step >= self.base.refine_stop_iter:
            return
        probe = dataclasses.replace(self.base, refine_start_iter=step, reset_every=step + 1)  # updates, never refines
        probe.step_post_backward(params, optimizers, state, step, info, packed=packed)

    def refine(
        self,
        params: Params,
        optimizers: Optimizers,
        state: dict[str, Any],
        step: int,
        info: dict[str, Any],
        packed: bool = False,
    ) -> None:
        """gsplat's refinement at the steps it refines, from the statistics accumulated so far; `info` is any of
        the step's renderings (only its layout is read)."""
        n_before = len(params["means"])
        base = self.base
        info = nothing_visible(info, base.key_for_gradient, packed)
        if step % base.refine_every == 0 and step < base.refine_stop_iter:  # may refine: bound the growth
            threshold = self.growth_threshold(state)
            if threshold > base.grow_grad2d:
                base = dataclasses.replace(base, grow_grad2d=threshold)
        base.step_post_backward(params, optimizers, state, step, info, packed=packed)
        limit = max(self.cap, n_before)  # a set that starts above the cap is not cut, only kept from growing
        if len(params["means"]) > limit:
            log.warning("step %d: growth passed the cap by %d; removing the newest", step, len(params["means"]) - limit)
            remove(
                params, optimizers, state, torch.arange(len(params["means"]), device=params["means"].device) >= limit
            )

    def growth_threshold(self, state: dict[str, Any]) -> float:
        """The `grow_grad2d` under which at most `cap - N` Gaussians grow at this step (cloning or
        splitting one adds one), from the statistics accumulated in `state` as `base` averages them."""
        grads = state["grad2d"] / state["count"].clamp_min(1)  # (N,)
        room = self.cap - len(grads)
        if room >= len(grads) or int((grads > self.base.grow_grad2d).sum()) <= room:
            return self.base.grow_grad2d
        if room <= 0:
            return math.inf
        return float(grads.topk(room + 1).values[-1])  # only the `room` largest are strictly above it


def nothing_visible(info: dict[str, Any], key: str, packed: bool) -> dict[str, Any]:
    """`info` as if no Gaussian were visible: gsplat's update adds nothing from it, so its call only refines."""
    if packed:  # no (camera, Gaussian) pairs
        screen, radii, ids = info[key][:0].detach().clone(), info["radii"][:0], info["gaussian_ids"][:0]
    else:  # every radius 0
        screen, radii, ids = torch.zeros_like(info[key]), torch.zeros_like(info["radii"]), info["gaussian_ids"]
    screen.grad = torch.zeros_like(screen)
    return {**info, key: screen, "radii": radii, "gaussian_ids": ids}


# ---- mcmc: pure formulas -------------------------------------------------------------------------------


def relocation_torch(
    opacities: torch.Tensor,  # (N,) in (0, 1)
    scales: torch.Tensor,  # (N, 3) standard deviations
    ratios: torch.Tensor,  # (N,) copies of each Gaussian after relocation, itself included
    n_max: int = RELOCATION_N_MAX,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacities (N,) and scales (N, 3) that n copies must take to render like the one Gaussian they replace.

    3DGS-MCMC, Eq. 9 (gsplat's CUDA kernel `relocation`): o' = 1 - (1 - o)^(1/n) and
    s' = s o / sum_{j=1..n} (-1)^(j-1) C(n, j) o'^j / sqrt(j); the kernel's double sum over i <= n,
    k < i of C(i-1, k) collapses to this by the hockey-stick identity. Float64 inside: the alternating
    sum cancels.
    """
    o = opacities.double()
    n = ratios.clamp(1, n_max).double()[:, None]  # (N, 1)
    new_o = 1 - (1 - o[:, None]) ** (1 / n)  # (N, 1)
    j = torch.arange(1, n_max + 1, dtype=torch.float64, device=o.device)  # (J,)
    log_comb = torch.lgamma(n + 1) - torch.lgamma(j + 1) - torch.lgamma((n - j).clamp_min(0) + 1)
    comb = torch.where(j <= n, log_comb.exp().round(), 0.0)  # (N, J) C(n, j), exact below 2^53
    sign = 1 - 2 * ((j - 1) % 2)  # (J,) (-1)^(j-1)
    denom = (sign * comb * new_o**j / j.sqrt()).sum(-1)  # (N,)
    new_scales = scales.double() * (o / denom)[:, None]
    return new_o[:, 0].to(opacities.dtype), new_scales.to(scales.dtype)


def relocation(
    opacities: torch.Tensor, scales: torch.Tensor, ratios: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`relocation_torch`, by gsplat's CUDA kernel for CUDA tensors."""
    if not opacities.is_cuda:
        return relocation_torch(opacities, scales, ratios)
    from gsplat.relocation import compute_relocation

    r = range(RELOCATION_N_MAX)
    binoms = torch.tensor([[math.comb(a, b) for b in r] for a in r]).to(opacities)  # (n_max, n_max) C(a, b)
    return compute_relocation(opacities.contiguous(), scales.contiguous(), ratios.int(), binoms)


# ---- mcmc: row edits -----------------------------------------------------------------------------------


@torch.no_grad()
def edit_rows(
    params: Params,
    optimizers: Optimizers,
    param_fn: Callable[[str, torch.Tensor], torch.Tensor],
    moment_fn: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    """Replace each entry p by a new Parameter param_fn(name, p) and each of its Adam moments m by
    moment_fn(m), re-keying the optimizer's state to the new Parameter (Adam's step count is kept)."""
    for name, p in list(params.items()):
        new = nn.Parameter(param_fn(name, p.detach()), requires_grad=p.requires_grad)
        params[name] = new
        if name not in optimizers:
            continue
        opt = optimizers[name]
        moments = opt.state.pop(p, {})
        opt.param_groups[0]["params"] = [new]
        opt.state[new] = {k: v if k == "step" else moment_fn(v) for k, v in moments.items()}


def _relocated(params: Params, src: torch.Tensor, min_opacity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit opacities and log scales (n,), (n, 3) of the sources `src` (n,), each shared by its copies."""
    opacities = torch.sigmoid(params["opacities"][src])
    ratios = torch.bincount(src, minlength=len(params["opacities"]))[src] + 1  # copies sampled + the source
    new_o, new_s = relocation(opacities, torch.exp(params["scales"][src]), ratios)
    new_o = new_o.clamp(min_opacity, 1 - torch.finfo(new_o.dtype).eps)
    return torch.logit(new_o), torch.log(new_s)


@torch.no_grad()
def relocate_dead(params: Params, optimizers: Optimizers, min_opacity: float) -> int:
    """Move every Gaussian of opacity <= min_opacity onto a live one drawn in proportion to opacity; the live
    one and its copies share its opacity and size by `relocation`. Returns how many moved.

    Unlike gsplat (which resets the sources' moments only), both the sources and the moved rows restart
    Adam's moments: a moved row's old moments belong to another Gaussian.
    """
    opacities = torch.sigmoid(params["opacities"])  # (N,)
    dead = opacities <= min_opacity
    alive = (~dead).nonzero()[:, 0]
    if not dead.any() or len(alive) == 0:
        return 0
    dead_idx = dead.nonzero()[:, 0]
    src = alive[torch.multinomial(opacities[alive], len(dead_idx), replacement=True)]  # (D,)
    new = dict(zip(("opacities", "scales"), _relocated(params, src, min_opacity), strict=True))

    def param_fn(name: str, p: torch.Tensor) -> torch.Tensor:
        p = p.clone()
        if name in new:
            p[src] = new[name]
        p[dead_idx] = p[src]
        return p

    def moment_fn(m: torch.Tensor) -> torch.Tensor:
        m = m.clone()
        m[src] = 0
        m[dead_idx] = 0
        return m

    edit_rows(params, optimizers, param_fn, moment_fn)
    return len(dead_idx)


@torch.no_grad()
def add_samples(params: Params, optimizers: Optimizers, n: int, min_opacity: float) -> int:
    """Append n copies of Gaussians drawn in proportion to opacity (with new moments); each drawn Gaussian
    and its copies share its opacity and size by `relocation`. Returns n."""
    if n <= 0:
        return 0
    src = torch.multinomial(torch.sigmoid(params["opacities"]), n, replacement=True)  # (n,)
    new = dict(zip(("opacities", "scales"), _relocated(params, src, min_opacity), strict=True))

    def param_fn(name: str, p: torch.Tensor) -> torch.Tensor:
        p = p.clone()
        if name in new:
            p[src] = new[name]
        return torch.cat([p, p[src]])

    edit_rows(params, optimizers, param_fn, lambda m: torch.cat([m, m.new_zeros((n, *m.shape[1:]))]))
    return n


@torch.no_grad()
def inject_noise(params: Params, scale: float) -> None:
    """Move each mean by Sigma z (z ~ N(0, 1), Sigma its covariance) times `scale`, gated to the nearly
    transparent Gaussians (opacity below ~0.005): MCMC's exploration, which leaves visible ones in place."""
    opacities = torch.sigmoid(params["opacities"])  # (N,)
    gate = torch.sigmoid(100 * ((1 - opacities) - 0.995))  # (N,)
    z = torch.randn_like(params["means"]) * (gate * scale)[:, None]  # (N, 3)
    cov = quat_scale_to_covar(params["quats"], torch.exp(params["scales"]))  # (N, 3, 3)
    params["means"].add_((cov @ z[..., None])[..., 0])


@dataclass(frozen=True)
class MCMCStrategy:
    """gsplat's MCMCStrategy (3DGS-MCMC) on CPU and CUDA, with DefaultStrategy's call signatures.

    Every `refine_every` steps in (refine_start, refine_stop): dead Gaussians are relocated, then
    `grow_rate` more are added, up to `cap`; at every step, nearly transparent Gaussians are nudged
    along their covariance by noise scaled with the means' current learning rate (read from its
    optimizer). The state holds nothing: gsplat's binomial table is rebuilt where needed.
    """

    cap: int = 1_000_000
    noise_lr: float = 5e5
    min_opacity: float = 0.005
    grow_rate: float = 0.05
    refine_start_iter: int = 500
    refine_stop_iter: int = 25_000
    refine_every: int = 100

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        """An empty state (the scene's scale plays no part in MCMC)."""
        return {}

    def check_sanity(self, params: Params, optimizers: Optimizers) -> None:
        gsplat.strategy.MCMCStrategy().check_sanity(params, optimizers)  # the same layout as gsplat's

    def step_pre_backward(
        self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int, info: dict[str, Any]
    ) -> None:
        """Nothing: MCMC does not read screen-space gradients."""

    def accumulate(
        self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int, info: dict[str, Any]
    ) -> None:
        """Nothing: MCMC keeps no statistics."""

    def refine(
        self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int, info: dict[str, Any]
    ) -> None:
        self.step_post_backward(params, optimizers, state, step, info)

    def step_post_backward(
        self, params: Params, optimizers: Optimizers, state: dict[str, Any], step: int, info: dict[str, Any]
    ) -> None:
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            n_moved = relocate_dead(params, optimizers, self.min_opacity)
            n = len(params["means"])
            n_added = add_samples(
                params, optimizers, min(self.cap, int((1 + self.grow_rate) * n)) - n, self.min_opacity
            )
            log.debug("step %d: %d relocated, %d added, %d Gaussians", step, n_moved, n_added, n + n_added)
        inject_noise(params, optimizers["means"].param_groups[0]["lr"] * self.noise_lr)


Strategy = CappedDefaultStrategy | MCMCStrategy

STATISTICS = ("grad2d", "count")
"""The sums in a default strategy's state that each rendering adds to (`accumulate`): a step of several frames
sums them in a state of its own, which ranks that share the step's frames sum over the ranks, then adds it."""


def add_statistics(state: dict[str, Any], step_state: dict[str, Any]) -> None:
    """Add one step's `STATISTICS` (accumulated into a fresh `initialize_state()`) to `state`, in place."""
    for name in STATISTICS:
        add = step_state.get(name)
        if isinstance(add, torch.Tensor):
            state[name] = add if state[name] is None else state[name] + add


def make_strategy(cfg: DensifyConfig) -> Strategy:
    """The strategy of `cfg.kind`; with `enabled` off it never refines (MCMC's position noise stays)."""
    stop = cfg.refine_stop if cfg.enabled else 0
    if cfg.kind == "mcmc":
        return MCMCStrategy(
            cap=cfg.max_gaussians,
            noise_lr=cfg.noise_lr,
            min_opacity=cfg.min_opacity,
            grow_rate=cfg.grow_rate,
            refine_start_iter=cfg.refine_start,
            refine_stop_iter=stop,
            refine_every=cfg.refine_every,
        )
    base = DefaultStrategy(
        grow_grad2d=cfg.grow_grad2d,
        grow_scale3d=cfg.grow_scale3d,
        prune_opa=cfg.prune_opa,
        prune_scale3d=cfg.prune_scale3d,
        refine_start_iter=cfg.refine_start,
        refine_stop_iter=stop,
        refine_every=cfg.refine_every,
    )
    return CappedDefaultStrategy(base=base, cap=cfg.max_gaussians)
