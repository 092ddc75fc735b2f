"""Densification: gsplat's DefaultStrategy on our rasterizer, the capped one and the CPU-capable MCMC strategy.

Every Gaussian carries its row id in colours[:, 0] and features[:, 0], and every Adam moment of its row is
set to that id, so after a grow, prune or relocate each row can be traced back to the Gaussian it came from.
Past the first test (gsplat's strategy on the real rasterizer), screen-space gradients come from a fake
rasterizer `info` (2 x 2 pixels, one camera: gsplat's normalisation is then the identity), so the expected
selections can be computed by hand.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections import Counter

import pytest
import torch
from gsplat.strategy import DefaultStrategy
from torch import nn

from npga.avatar.densify import (
    CappedDefaultStrategy,
    DensifyConfig,
    MCMCStrategy,
    add_samples,
    inject_noise,
    make_strategy,
    relocate_dead,
    relocation,
    relocation_torch,
)
from npga.cameras import look_at
from npga.render import rasterize
from npga.render.projection import quat_scale_to_covar


def tagged(n: int, scale: float = 0.004, opacity: float = 0.5, seed: int = 0) -> tuple[nn.ParameterDict, dict]:
    """n Gaussians whose colours[:, 0], features[:, 0] and Adam moments (all entries) hold their row id."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.arange(n, dtype=torch.float32)
    params = nn.ParameterDict(
        {
            "means": torch.randn(n, 3, generator=g) * 0.05,
            "quats": torch.randn(n, 4, generator=g),
            "scales": torch.log(torch.full((n, 3), scale)),
            "opacities": torch.logit(torch.full((n,), opacity)),
            "colors": torch.cat([ids[:, None], torch.rand(n, 2, generator=g)], 1),
            "features": torch.cat([ids[:, None], torch.randn(n, 5, generator=g)], 1),
        }
    )
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    for k, opt in optimizers.items():
        p = params[k]
        rows = ids.reshape(-1, *[1] * (p.dim() - 1)).expand_as(p).clone()
        opt.state[p] = {"step": torch.tensor(1.0), "exp_avg": rows, "exp_avg_sq": rows.clone()}
    return params, optimizers


def moments(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    return opt.state[opt.param_groups[0]["params"][0]]


def fake_info(grads: torch.Tensor, visible: torch.Tensor, radius: int = 1) -> dict:
    """What gsplat's rasterization returns that DefaultStrategy reads: grads (N, 2) of means2d, visible (N,)."""
    means2d = torch.zeros(1, len(grads), 2, requires_grad=True)
    means2d.grad = grads[None].clone()
    radii = (visible[None, :, None] * radius).expand(1, len(grads), 2).to(torch.int32)
    return {"means2d": means2d, "width": 2, "height": 2, "n_cameras": 1, "radii": radii, "gaussian_ids": None}


def run_default(strategy, params, optimizers, steps: int, spike: dict[int, torch.Tensor] | None = None) -> dict:
    """Post-backward calls with gradients drawn per step (seeded by the step, so equal sets get equal ones)."""
    state = strategy.initialize_state(scene_scale=1.0)
    for step in range(steps):
        g = torch.Generator().manual_seed(100 + step)
        n = len(params["means"])
        grads = torch.rand(n, 2, generator=g) * 0.01
        visible = torch.rand(n, generator=g) < 0.8
        if spike and step in spike:
            grads[spike[step]] += 0.2
        info = fake_info(grads, visible)
        strategy.step_pre_backward(params, optimizers, state, step, info)
        strategy.step_post_backward(params, optimizers, state, step, info)
    return state


def ids_of(params: nn.ParameterDict) -> torch.Tensor:
    ids = params["features"][:, 0]
    assert torch.equal(ids, params["colors"][:, 0])  # the two tagged entries still agree row by row
    return ids.long()


def assert_rows_come_from(params: nn.ParameterDict, original: dict[str, torch.Tensor], keys: tuple[str, ...]) -> None:
    ids = ids_of(params)
    for k in keys:
        assert torch.equal(params[k].detach(), original[k][ids]), k


def snapshot(params: nn.ParameterDict) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in params.items()}


# ---- gsplat's DefaultStrategy, unchanged, on the torch rasterizer ----------------------------------------


def test_default_strategy_splits_clones_and_prunes_with_features_aligned():
    """gsplat's DefaultStrategy, unchanged, on CPU tensors and the torch backend, with a latent "features" entry.

    Every Gaussian carries its id in colours and features (learning rate 0 keeps them exact): after
    densification, rows must still agree, large Gaussians appear twice (split), small ones twice (cloned),
    transparent ones never (pruned), and each Adam state must match its parameter's shape.
    """
    g = torch.Generator().manual_seed(0)
    N, W, H = 200, 48, 48
    ids = torch.arange(N, dtype=torch.float32)
    params = torch.nn.ParameterDict(
        {
            "means": torch.randn(N, 3, generator=g) * 0.05,
            "quats": torch.randn(N, 4, generator=g),
            "scales": torch.log(torch.full((N, 3), 0.004)),
            "opacities": torch.logit(torch.full((N,), 0.5)),
            "colors": torch.cat([ids[:, None], torch.rand(N, 2, generator=g)], 1),
            "features": torch.cat([ids[:, None], torch.randn(N, 31, generator=g)], 1),
        }
    )
    large = torch.arange(20)
    transparent = torch.arange(N - 10, N)
    params["scales"].data[large] = math.log(0.03)
    params["opacities"].data[transparent] = math.log(0.001 / 0.999)
    lrs = {"means": 1e-4, "quats": 1e-3, "scales": 1e-3, "opacities": 1e-3, "colors": 0.0, "features": 0.0}
    optimizers = {k: torch.optim.Adam([v], lr=lrs[k]) for k, v in params.items()}
    strategy = DefaultStrategy(
        refine_start_iter=0,
        refine_every=2,
        grow_grad2d=1e-12,
        grow_scale3d=0.01,
        prune_opa=0.005,
        reset_every=10_000,
        verbose=False,
    )
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats = torch.tensor(look_at([0, 0, 0.6], [0, 0, 0]), dtype=torch.float32)[None]
    Ks = torch.tensor([[60.0, 0, 24], [0, 60.0, 24], [0, 0, 1]])[None]
    target = torch.rand(1, H, W, 3, generator=g)
    seen = torch.zeros(N, dtype=torch.bool)
    for step in range(3):  # refines after the step-2 backward
        img, _, info = rasterize(
            params["means"],
            params["quats"],
            torch.exp(params["scales"]),
            torch.sigmoid(params["opacities"]),
            params["colors"],
            viewmats,
            Ks,
            W,
            H,
            packed=False,
        )
        strategy.step_pre_backward(params, optimizers, state, step, info)
        loss = (img - target).abs().mean() + 1e-3 * params["features"].square().mean()
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        seen = seen | (info["radii"] > 0).all(-1)[0]  # these get a screen-space gradient, so they grow
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)

    assert seen[large].all() and not seen[transparent].any()
    n_seen_small = int(seen.sum()) - len(large)
    assert len(params["means"]) == N + n_seen_small + len(large) - len(transparent)
    assert all(len(v) == len(params["means"]) for v in params.values())
    assert torch.equal(params["colors"][:, 0], params["features"][:, 0])  # rows still belong together
    copies = Counter(params["features"][:, 0].long().tolist())
    for i in range(N):
        expected = 0 if i in transparent else 2 if seen[i] else 1
        assert copies[i] == expected, i
    split = torch.isin(params["features"][:, 0].long(), large)
    assert (torch.exp(params["scales"][split]).amax(-1) < 0.03 / 1.5).all()  # children of a split: 1.6x smaller
    assert (torch.exp(params["scales"][~split]).amax(-1) < 0.005).all()  # clones keep their size
    for k, opt in optimizers.items():
        st = opt.state[opt.param_groups[0]["params"][0]]
        assert st["exp_avg"].shape == params[k].shape and st["exp_avg_sq"].shape == params[k].shape


# ---- default strategy with a cap ---------------------------------------------------------------------


def test_cap_grows_exactly_the_largest_mean_gradients():
    """cap - N Gaussians grow, and they are the top of a brute-force ranking of the mean gradient over the
    visible steps, the refinement step's own gradient included (it reorders the ranking on purpose)."""
    n, cap = 100, 112
    params, optimizers = tagged(n)
    params["scales"].data[:30] = math.log(0.03)  # these split, the rest clone
    base = DefaultStrategy(refine_start_iter=0, refine_every=3, grow_grad2d=1e-3, reset_every=10_000)
    strategy = CappedDefaultStrategy(base, cap=cap)
    spike = torch.randperm(n, generator=torch.Generator().manual_seed(7))[:15]
    run_default(strategy, params, optimizers, steps=4, spike={3: spike})  # refines at step 3

    sums, counts, sums_before, counts_before = [0.0] * n, [0] * n, [0.0] * n, [0] * n
    for step in range(4):  # the same draws as run_default, by hand
        g = torch.Generator().manual_seed(100 + step)
        grads = (torch.rand(n, 2, generator=g) * 0.01).double()
        visible = torch.rand(n, generator=g) < 0.8
        if step == 3:
            grads[spike] += 0.2
        for i in range(n):
            if visible[i]:
                norm = math.hypot(float(grads[i, 0]), float(grads[i, 1]))
                sums[i] += norm
                counts[i] += 1
                if step < 3:
                    sums_before[i] += norm
                    counts_before[i] += 1

    def top(s: list[float], c: list[int]) -> set[int]:
        return set(sorted(range(n), key=lambda i: -s[i] / max(c[i], 1))[: cap - n])

    expected = top(sums, counts)
    assert expected != top(sums_before, counts_before)  # the last gradient matters
    assert len(params["means"]) == cap
    copies = Counter(ids_of(params).tolist())
    assert {i for i, c in copies.items() if c == 2} == expected
    assert all(copies[i] == 1 for i in range(n) if i not in expected)


def test_cap_not_reached_is_bit_identical_to_default_strategy():
    """Below the cap the capped strategy is DefaultStrategy, to the bit, through clones, splits and prunes;
    it overrides no private method of gsplat (it is no subclass of it at all)."""

    def fresh():
        params, optimizers = tagged(120)
        params["scales"].data[:20] = math.log(0.03)
        params["opacities"].data[-10:] = math.log(0.001 / 0.999)
        return params, optimizers

    base = DefaultStrategy(refine_start_iter=0, refine_every=2, grow_grad2d=0.006, reset_every=10_000)
    runs = []
    for strategy in (base, CappedDefaultStrategy(base, cap=10_000)):
        params, optimizers = fresh()
        torch.manual_seed(0)  # split draws positions
        state = run_default(strategy, params, optimizers, steps=7)
        runs.append((params, optimizers, state))
    (p0, o0, s0), (p1, o1, s1) = runs
    assert len(p0["means"]) > 120 and not torch.isin(ids_of(p0), torch.arange(110, 120)).any()  # grew, pruned
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
        for m in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(moments(o0[k])[m], moments(o1[k])[m]), k
    assert torch.equal(s0["grad2d"], s1["grad2d"]) and torch.equal(s0["count"], s1["count"])
    assert not issubclass(CappedDefaultStrategy, DefaultStrategy)
    assert not any(n.startswith("_") and not n.startswith("__") for n in vars(CappedDefaultStrategy))


def test_default_rows_and_moments_stay_paired():
    """Clones keep the original (moments kept) and add a copy (new moments); splits leave two children with
    new moments; transparent ones go; untouched rows keep their own moments. The state saves and loads with
    weights_only=True."""
    n = 80
    params, optimizers = tagged(n)
    large, transparent = torch.arange(10), torch.arange(n - 8, n)
    params["scales"].data[large] = math.log(0.03)
    params["opacities"].data[transparent] = math.log(0.001 / 0.999)
    original = snapshot(params)
    cfg = DensifyConfig(refine_start=0, refine_every=2, grow_grad2d=0.006, max_gaussians=10_000)
    strategy = make_strategy(cfg)
    strategy.check_sanity(params, optimizers)
    state = run_default(strategy, params, optimizers, steps=3)  # refines at step 2

    ids = ids_of(params)
    copies = Counter(ids.tolist())
    assert all(copies[i] == 0 for i in transparent.tolist())
    assert any(copies[i] == 2 for i in large.tolist()) and any(copies[i] == 2 for i in range(10, n - 8))
    assert_rows_come_from(params, original, ("quats", "colors", "features"))
    for k, opt in optimizers.items():
        m = moments(opt)["exp_avg"].reshape(len(ids), -1)
        assert m.shape[0] == len(params[k])
        for row, i in enumerate(ids.tolist()):
            own = bool((m[row] == i).all())
            new = bool((m[row] == 0).all())
            if copies[i] == 1:
                assert (m[row] == i).all(), (k, row)
            elif i in large.tolist():
                assert new, (k, row)
            else:
                assert own or new, (k, row)
        for i in range(1, n):
            if copies[i] == 2 and i not in large.tolist():  # one clone keeps the moments, one starts afresh
                rows = (ids == i).nonzero()[:, 0]
                assert sorted(float(m[r, 0]) for r in rows) == [0.0, float(i)], (k, i)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert torch.equal(loaded["count"], state["count"]) and loaded["scene_scale"] == 1.0


def test_cap_holds_when_growth_is_not_by_gradient():
    """Splits by screen size (not gated by the gradient threshold) would pass the cap: the newest rows are
    removed, from parameters, moments and the strategy's state alike, and every row stays paired."""
    n, cap = 40, 50
    params, optimizers = tagged(n)
    original = snapshot(params)
    base = DefaultStrategy(
        refine_start_iter=0, refine_every=1, grow_grad2d=1.0, refine_scale2d_stop_iter=100, reset_every=10_000
    )
    strategy = CappedDefaultStrategy(base, cap=cap)
    state = strategy.initialize_state(scene_scale=1.0)
    hidden = torch.arange(n) < 10
    for step in range(2):
        info = fake_info(torch.full((n, 2), 1e-3), ~hidden, radius=5)  # radius 5 of 2 pixels: all too big
        strategy.step_post_backward(params, optimizers, state, step, info)
    assert len(params["means"]) == cap
    assert all(len(v) == cap for v in state.values() if isinstance(v, torch.Tensor))
    assert_rows_come_from(params, original, ("quats", "colors", "features"))
    ids = ids_of(params)
    assert torch.equal(ids[:10], torch.arange(10))  # the hidden ones, untouched and first
    for opt in optimizers.values():
        m = moments(opt)["exp_avg"].reshape(cap, -1)
        assert torch.equal(m[:10], ids[:10, None].float().expand_as(m[:10])) and (m[10:] == 0).all()


# ---- MCMC: formulas ----------------------------------------------------------------------------------


def relocation_by_kernel_loop(o: float, n: int) -> tuple[float, float]:
    """gsplat's CUDA relocation kernel, transcribed loop for loop in float64: new opacity, scale factor."""
    n = min(max(n, 1), 51)
    new_o = 1.0 - (1.0 - o) ** (1.0 / n)
    denom = 0.0
    for i in range(1, n + 1):
        for k in range(i):
            denom += math.comb(i - 1, k) * (-1.0) ** k / math.sqrt(k + 1) * new_o ** (k + 1)
    return new_o, o / denom


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 30, 51, 70])
def test_relocation_formula_against_the_kernel_loop(n):
    o = torch.tensor([0.006, 0.05, 0.3, 0.5, 0.9, 0.999])
    s = torch.rand(len(o), 3, generator=torch.Generator().manual_seed(n)) * 0.1 + 0.001
    new_o, new_s = relocation_torch(o, s, torch.full((len(o),), n))
    for i in range(len(o)):
        ref_o, ref_factor = relocation_by_kernel_loop(float(o[i]), n)
        assert float(new_o[i]) == pytest.approx(ref_o, rel=1e-6, abs=1e-7)
        assert new_s[i].double() == pytest.approx((s[i].double() * ref_factor), rel=1e-5)
    if n == 1:  # one copy is the Gaussian itself
        assert torch.equal(new_o, o) and torch.equal(new_s, s)
    else:  # n copies composite to the old opacity
        assert (1 - (1 - new_o.double()) ** min(n, 51)).tolist() == pytest.approx(o.tolist(), rel=1e-5)
    assert torch.equal(relocation(o, s, torch.full((len(o),), n))[0], new_o)  # CPU dispatches to the same


def test_covariance_against_rotation_by_hand():
    """R diag(s^2) R^T with R from Rodrigues' formula of the quaternion's axis and angle (any norm)."""
    g = torch.Generator().manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(6, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.rand(6, generator=g, dtype=torch.float64) * 2 * math.pi
    norm = torch.rand(6, 1, generator=g, dtype=torch.float64) * 3 + 0.1
    quats = norm * torch.cat([torch.cos(angle / 2)[:, None], torch.sin(angle / 2)[:, None] * axis], 1)
    scales = torch.rand(6, 3, generator=g, dtype=torch.float64) + 0.01
    for i in range(6):
        a = axis[i]
        K = torch.tensor([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]], dtype=torch.float64)
        R = torch.eye(3, dtype=torch.float64) + math.sin(angle[i]) * K + (1 - math.cos(angle[i])) * K @ K
        expected = R @ torch.diag(scales[i] ** 2) @ R.T
        assert torch.allclose(quat_scale_to_covar(quats[i], scales[i]), expected, atol=1e-12)
    assert quat_scale_to_covar(quats, scales).shape == (6, 3, 3)


# ---- MCMC: row edits and the strategy ------------------------------------------------------------------


def expected_opacity_and_scale(o: float, s: torch.Tensor, copies: int) -> tuple[float, torch.Tensor]:
    new_o, factor = relocation_by_kernel_loop(o, copies)
    return min(max(new_o, 0.005), 1 - 1.2e-7), s * factor


def assert_shared_by_copies(params, original, ids: torch.Tensor) -> None:
    """Each Gaussian and its copies carry the formula's opacity and scale for their number of copies."""
    copies = Counter(ids.tolist())
    o = torch.sigmoid(params["opacities"]).detach()
    s = torch.exp(params["scales"]).detach()
    for row, i in enumerate(ids.tolist()):
        o_ref, s_ref = expected_opacity_and_scale(
            float(torch.sigmoid(original["opacities"][i])), torch.exp(original["scales"][i]), copies[i]
        )
        assert float(o[row]) == pytest.approx(o_ref, rel=1e-4), row
        assert torch.allclose(s[row], s_ref, rtol=1e-4), row


def test_relocate_dead_moves_them_onto_live_ones_with_rows_paired():
    n = 40
    params, optimizers = tagged(n)
    g = torch.Generator().manual_seed(1)
    params["opacities"].data = torch.logit(torch.rand(n, generator=g) * 0.7 + 0.2)
    params["scales"].data = torch.log(torch.rand(n, 3, generator=g) * 0.01 + 0.001)
    params["opacities"].data[:10] = math.log(0.001 / 0.999)
    original = snapshot(params)
    torch.manual_seed(0)
    assert relocate_dead(params, optimizers, min_opacity=0.005) == 10
    ids = ids_of(params)
    assert len(ids) == n and torch.equal(ids[10:], torch.arange(10, n)) and (ids[:10] >= 10).all()
    assert (torch.sigmoid(params["opacities"]) > 0.005).all()
    assert_rows_come_from(params, original, ("means", "quats", "colors", "features"))
    assert_shared_by_copies(params, original, ids)
    copies = Counter(ids.tolist())
    for opt in optimizers.values():
        m = moments(opt)["exp_avg"].reshape(n, -1)
        for row, i in enumerate(ids.tolist()):
            assert (m[row] == (i if copies[i] == 1 else 0)).all(), row  # moved rows and their sources restart


def test_add_samples_appends_copies_with_rows_paired():
    n, extra = 40, 15
    params, optimizers = tagged(n)
    g = torch.Generator().manual_seed(2)
    params["opacities"].data = torch.logit(torch.rand(n, generator=g) * 0.7 + 0.2)
    original = snapshot(params)
    torch.manual_seed(0)
    assert add_samples(params, optimizers, extra, min_opacity=0.005) == extra
    ids = ids_of(params)
    assert len(ids) == n + extra and torch.equal(ids[:n], torch.arange(n))
    assert_rows_come_from(params, original, ("means", "quats", "colors", "features"))
    assert_shared_by_copies(params, original, ids)
    for opt in optimizers.values():
        m = moments(opt)["exp_avg"].reshape(n + extra, -1)
        assert torch.equal(m[:n], ids[:n, None].float().expand_as(m[:n])) and (m[n:] == 0).all()


def test_noise_moves_transparent_gaussians_along_their_covariance():
    n = 20
    params, _ = tagged(n)
    params["quats"].data = torch.tensor([2.0, 0, 0, 0]).repeat(n, 1)  # unnormalised identity
    params["scales"].data = torch.log(torch.tensor([0.02, 0.01, 1e-6])).repeat(n, 1)
    params["opacities"].data[: n // 2] = math.log(0.001 / 0.999)
    params["means"].data.zero_()  # the displacement, without rounding against the positions
    before = params["means"].detach().clone()
    torch.manual_seed(3)
    z = torch.randn(n, 3)
    torch.manual_seed(3)
    inject_noise(params, scale=50.0)
    gate = torch.sigmoid(100 * ((1 - torch.sigmoid(params["opacities"].detach())) - 0.995))
    expected = z * gate[:, None] * 50.0 * torch.tensor([0.02, 0.01, 1e-6]) ** 2
    moved = params["means"].detach() - before
    assert torch.allclose(moved, expected, rtol=1e-5, atol=1e-12)
    assert (moved[: n // 2, :2].abs() > 1e-7).all() and (moved[n // 2 :].abs() < 1e-12).all()


def test_mcmc_strategy_grows_to_the_cap_relocates_and_keeps_rows_paired():
    n, cap = 60, 80
    params, optimizers = tagged(n)
    g = torch.Generator().manual_seed(4)
    params["opacities"].data = torch.logit(torch.rand(n, generator=g) * 0.7 + 0.2)
    params["opacities"].data[:8] = math.log(0.001 / 0.999)
    original = snapshot(params)
    cfg = DensifyConfig(kind="mcmc", max_gaussians=cap, refine_start=0, refine_every=1, refine_stop=100)
    strategy = make_strategy(cfg)
    assert isinstance(strategy, MCMCStrategy)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=3.0)
    torch.manual_seed(0)
    sizes, expected = [], [n]
    for step in range(10):
        strategy.step_pre_backward(params, optimizers, state, step, {})
        strategy.step_post_backward(params, optimizers, state, step, {})
        sizes.append(len(params["means"]))
        if step == 1:
            assert (torch.sigmoid(params["opacities"]) > 0.005).all()  # the dead ones were relocated
            assert (ids_of(params)[:8] >= 8).all()
        if step > 0:
            expected.append(min(cap, int(1.05 * expected[-1])))
    assert sizes == expected and sizes[-1] == cap
    assert_rows_come_from(params, original, ("quats", "colors", "features"))
    for k, opt in optimizers.items():
        assert moments(opt)["exp_avg"].shape == params[k].shape
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == {}


def test_mcmc_noise_scales_with_the_means_learning_rate():
    """The noise reads the means' current learning rate from its optimizer: zero rate, no noise."""
    params, optimizers = tagged(10, opacity=0.001)
    strategy = make_strategy(DensifyConfig(kind="mcmc"))
    before = params["means"].detach().clone()
    optimizers["means"].param_groups[0]["lr"] = 0.0
    strategy.step_post_backward(params, optimizers, {}, 1, {})
    assert torch.equal(params["means"].detach(), before)
    optimizers["means"].param_groups[0]["lr"] = 1e-4
    strategy.step_post_backward(params, optimizers, {}, 2, {})
    assert not torch.equal(params["means"].detach(), before)


def test_config_kinds():
    assert isinstance(make_strategy(DensifyConfig()), CappedDefaultStrategy)
    off = make_strategy(dataclasses.replace(DensifyConfig(kind="mcmc"), enabled=False))
    assert isinstance(off, MCMCStrategy) and off.refine_stop_iter == 0
    assert make_strategy(DensifyConfig(enabled=False)).base.refine_stop_iter == 0


# ---- against gsplat's CUDA kernels ---------------------------------------------------------------------


@pytest.mark.gpu
def test_relocation_and_covariance_match_gsplat_cuda():
    from gsplat import quat_scale_to_covar_preci

    g = torch.Generator().manual_seed(0)
    m = 2000
    o = torch.rand(m, generator=g) * 0.99 + 0.005
    s = torch.rand(m, 3, generator=g) * 0.1 + 1e-3
    ratios = torch.randint(1, 60, (m,), generator=g)
    ours_o, ours_s = relocation_torch(o, s, ratios)
    cuda_o, cuda_s = relocation(o.cuda(), s.cuda(), ratios.cuda())  # gsplat's kernel, float32 sums
    torch.testing.assert_close(cuda_o.cpu(), ours_o, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda_s.cpu(), ours_s, rtol=1e-3, atol=1e-8)

    quats, scales = torch.randn(m, 4, generator=g), torch.rand(m, 3, generator=g) + 0.01
    covars, _ = quat_scale_to_covar_preci(quats.cuda(), scales.cuda(), compute_preci=False)
    torch.testing.assert_close(covars.cpu(), quat_scale_to_covar(quats, scales), rtol=1e-4, atol=1e-6)

    params, optimizers = tagged(50)  # the strategy runs on CUDA too, with rows paired
    params = nn.ParameterDict({k: nn.Parameter(v.detach().cuda()) for k, v in params.items()})
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    params["opacities"].data[:5] = -10.0
    strategy = make_strategy(DensifyConfig(kind="mcmc", max_gaussians=60, refine_start=0, refine_every=1))
    for step in range(1, 4):
        strategy.step_post_backward(params, optimizers, {}, step, {})
    assert len(params["means"]) == int(1.05 * int(1.05 * int(1.05 * 50))) and torch.equal(
        params["features"][:, 0], params["colors"][:, 0]
    )
