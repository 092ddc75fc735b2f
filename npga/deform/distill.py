"""Distillation: a forward field G that the head model's backward field undoes, `backward(x + G(x, z), z) = x`.

Calling `backward` is expensive (NPHM: a large MLP; the synthetic head: a 60-step fixed-point solve), so it
is not called inside the fitting loop. Instead a pool of posed points x_p around the surface is mapped back
once, x_c = backward(x_p, z), and G is fitted on these exact pairs: G(x_c, z) = x_p - x_c is the unique
zero of the cycle residual r = backward(x_c + G(x_c, z), z) - x_c at every pooled x_c. A second round
pools the points where the Gaussians actually are: canonical surface points pushed forward by the first
fit, mapped back. The report measures the cycle residual itself, on canonical surface points and the
capture's codes.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from tqdm import tqdm

from npga.config import AtLeast1, Fraction, Range, from_dict
from npga.deform.field import FieldConfig, ForwardField
from npga.deform.sampling import sample_codes, sample_near_surface, sample_surface
from npga.headmodel.base import HeadModel, Mesh
from npga.io.atomic import atomic_path, write_text_atomic
from npga.io.untrusted import CONFIG_LIMITS, CorruptFile, UnsafeFile, check_config, load_torch, state_problems

log = logging.getLogger(__name__)
KIND = "a distilled forward field (distill.pt)"


@dataclass(frozen=True)
class DistillConfig:
    field: FieldConfig = field(default_factory=FieldConfig)
    """Architecture of the forward field."""
    pool_size: AtLeast1 = 32768
    """Backward-mapped point pairs per round (the expensive part: one `backward` call each)."""
    rounds: AtLeast1 = 2
    """Pooling rounds; from the second on, canonical surface points are pushed forward by the current fit."""
    steps: int = 1500
    """Optimiser steps per round."""
    batch_size: AtLeast1 = 4096
    """Pairs per optimiser step."""
    lr: float = 2e-3
    """Adam learning rate, decayed by cosine to 1% within each round."""
    shell: float = 0.015
    """Half-width of the band around the surface that is sampled (head units; about the largest motion)."""
    surface_jitter: float = 0.002
    """Standard deviation of the offsets of the points that sample the surface itself."""
    surface_fraction: Fraction = 0.5
    """Share of pooled points on the surface (the rest fill the band)."""
    interpolation_fraction: Fraction = 0.5
    """Share of pooled codes that blend two tracked codes instead of repeating one."""
    mesh_resolution: Annotated[int, Range(2)] = 64
    """Marching-cubes grid of the canonical surface that is sampled."""
    eval_points: AtLeast1 = 8192
    """Surface points (each with a tracked code) on which the report measures the cycle residual."""
    seed: int = 0


def _backward_chunked(head: HeadModel, x_p: torch.Tensor, z: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([head.backward(x_p[i : i + chunk], z[i : i + chunk]) for i in range(0, len(x_p), chunk)])


def _field_chunked(g: ForwardField, x: torch.Tensor, z: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([g(x[i : i + chunk], z[i : i + chunk]) for i in range(0, len(x), chunk)])


def cycle_residual(head: HeadModel, g: ForwardField, x_c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """||backward(x_c + G(x_c, z), z) - x_c|| per point (N,); zero when G inverts the backward field."""
    x_p = x_c + _field_chunked(g, x_c, z)
    return (_backward_chunked(head, x_p, z) - x_c).norm(dim=-1)


def _fit(
    g: ForwardField,
    x_c: torch.Tensor,
    dx: torch.Tensor,
    z: torch.Tensor,
    cfg: DistillConfig,
    generator: torch.Generator,
    desc: str,
) -> float:
    """Regress G(x_c, z) on dx; returns the last batch's RMS error in head units."""
    opt = torch.optim.Adam(g.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))
    )
    rms = float("nan")
    with tqdm(range(cfg.steps), desc=desc, unit="step", leave=False) as bar:
        for step in bar:
            idx = torch.randint(len(x_c), (min(cfg.batch_size, len(x_c)),), generator=generator)
            err = g(x_c[idx], z[idx]) - dx[idx]  # (B, 3)
            loss = err.square().sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 100 == 0 or step == cfg.steps - 1:
                rms = float(loss.detach().sqrt())
                bar.set_postfix(rms=f"{rms:.2e}")
    return rms


def distill(
    head: HeadModel,
    codes: torch.Tensor,
    cfg: DistillConfig,
    mesh: Mesh | None = None,
    device: torch.device | str = "cpu",
) -> tuple[ForwardField, dict[str, Any]]:
    """Fit a forward field for `head` under tracked `codes` (T, D) on `device`; returns it (on the CPU) and a
    report of its cycle residual. Points and codes are drawn on the CPU, so a seed gives the same samples on
    any device."""
    if codes.ndim != 2 or codes.shape[1] != head.expression_dim:
        raise ValueError(f"codes must be (T, {head.expression_dim}) for this head model, got {tuple(codes.shape)}")
    if len(codes) == 0:
        raise ValueError("distill needs at least one tracked expression code")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # network initialisation
    codes = codes.float().cpu()
    mesh = mesh if mesh is not None else head.canonical_mesh(cfg.mesh_resolution, device)
    g = ForwardField(cfg.field, head.expression_dim, head.bounds).to(device)
    pool_x, pool_dx, pool_z = [], [], []
    rms = float("nan")
    for r in range(cfg.rounds):
        z = sample_codes(codes, cfg.pool_size, cfg.interpolation_fraction, gen).to(device)  # (P, D)
        x0 = sample_near_surface(mesh, cfg.pool_size, cfg.shell, cfg.surface_jitter, cfg.surface_fraction, gen)
        x0 = x0.to(device)  # (P, 3)
        # Round 0: posed points around the surface; later rounds: canonical points pushed forward by the fit.
        x_p = x0 if r == 0 else x0 + _field_chunked(g, x0, z)
        x_c = _backward_chunked(head, x_p, z)
        pool_x.append(x_c)
        pool_dx.append(x_p - x_c)
        pool_z.append(z)
        rms = _fit(g, torch.cat(pool_x), torch.cat(pool_dx), torch.cat(pool_z), cfg, gen, f"distill round {r + 1}")
        log.info("distill round %d/%d: %d pairs, fit RMS %.2e", r + 1, cfg.rounds, sum(map(len, pool_x)), rms)
    g.eval()
    report = evaluate_field(head, g, mesh, codes, cfg.eval_points, gen)
    g = g.cpu()
    report.update(fit_rms=rms, pairs=sum(map(len, pool_x)), seconds=time.perf_counter() - start, device=str(device))
    return g, report


def evaluate_field(
    head: HeadModel, g: ForwardField, mesh: Mesh, codes: torch.Tensor, n: int, generator: torch.Generator
) -> dict[str, Any]:
    """Cycle residual statistics on canonical surface points, each under a random tracked code."""
    device = next(g.parameters()).device
    x, _ = sample_surface(mesh, n, generator)
    z = codes[torch.randint(len(codes), (n,), generator=generator)].float()
    x, z = x.to(device), z.to(device)
    res = cycle_residual(head, g, x, z).cpu().numpy()
    largest = float(_field_chunked(g, x, z).norm(dim=-1).max())
    return {
        "cycle_residual": {
            k: float(f(res))
            for k, f in (
                ("median", np.median),
                ("mean", np.mean),
                ("p95", lambda a: np.percentile(a, 95)),
                ("max", np.max),
            )
        },
        "largest_displacement": largest,
        "median_relative": float(np.median(res)) / max(largest, 1e-12),
        "n_points": n,
        "n_codes": len(codes),
    }


def save_distilled(g: ForwardField, report: dict[str, Any], field_path: Path, report_path: Path) -> Path:
    """The field (a weights-only torch file) and its JSON report, each written atomically."""
    with atomic_path(field_path) as tmp:
        torch.save(g.to_checkpoint(), tmp)
    write_text_atomic(report_path, json.dumps(report, indent=2))
    return field_path


def load_distilled(path: str | Path) -> ForwardField:
    """The field of `distill.pt`, every part checked (CONFIG_LIMITS, shapes, dtypes, finite values) before the
    field is built."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no distilled forward field at {path}; run `npga distill` first")
    data = load_torch(path, KIND)
    try:
        cfg = from_dict(FieldConfig, data["config"], where="config")
        dim, bounds, state = data["expression_dim"], data["bounds"], data["state_dict"]
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptFile(path, KIND, f"incomplete: {type(e).__name__}: {e}") from None
    check_config(cfg, path, KIND)
    if not isinstance(dim, int) or not 0 < dim <= CONFIG_LIMITS["expression_dim"]:
        raise UnsafeFile(path, KIND, f"expression_dim = {dim!r} is outside [1, {CONFIG_LIMITS['expression_dim']}]")
    if not (isinstance(bounds, torch.Tensor) and bounds.shape == (2, 3) and bounds.dtype == torch.float32):
        raise CorruptFile(path, KIND, f"bounds are not a (2, 3) float32 tensor: {bounds!r}"[:300])
    if not torch.isfinite(bounds).all():
        raise CorruptFile(path, KIND, "bounds contain NaN or inf")
    problem = state_problems(lambda: ForwardField(cfg, dim, bounds), state if isinstance(state, dict) else {})
    if problem:
        raise CorruptFile(path, KIND, f"weights do not match the field's config: {problem}")
    return ForwardField.from_checkpoint(data)
