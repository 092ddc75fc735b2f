"""The mouth network and the head models' mouth regions (issue 30)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from data_tools.capture_effects import mouth_interior
from npga.avatar import DetailConfig, DetailMLP
from npga.avatar.deform import AvatarNets, express
from npga.avatar.mouth import MouthConfig, MouthNet, mouth_weight
from npga.headmodel import EXPRESSIONS, FlameHead, SyntheticHead, load_flame_model
from npga.train.config import LearningRates, TrainConfig, avatar_config
from npga.train.trainer import make_optimizers
from tests.helpers.small_flame import flame_arrays

JAW = EXPRESSIONS.index("jaw_open")


@pytest.fixture(scope="module")
def head() -> SyntheticHead:
    return SyntheticHead.from_seed(0)


def surface_points(head: SyntheticHead, n: int, seed: int = 0) -> torch.Tensor:
    """(M, 3) canonical surface points of the synthetic head (mesh vertices), a random subset of at most n."""
    mesh = head.canonical_mesh(resolution=96)
    g = torch.Generator().manual_seed(seed)
    return mesh.vertices[torch.randperm(len(mesh.vertices), generator=g)[:n]]


def test_mouth_weight_is_one_inside_zero_outside_and_fades_between():
    center, radii = torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0.02, 0.01, 0.04])
    unit = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.7, 0.0, 0.0], [0.0, 0.85, 0.0], [0.0, 0.0, 1.0]])
    x = center + unit * radii  # normalised radii 0, 0.5, 0.7, 0.85, 1
    w = mouth_weight(torch.cat([x, center + torch.tensor([[0.0, 0.0, 0.05]])]), center, radii)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0]), atol=1e-6)


def random_mouth_net(expression_dim: int, seed: int = 0, additive: bool = False, depth: int = 1) -> MouthNet:
    torch.manual_seed(seed)
    cfg = MouthConfig(
        enabled=True, width=16, depth=depth, center=(0.0, 0.0, 0.0), radii=(1.0, 0.5, 0.5), additive=additive
    )
    net = MouthNet(cfg, expression_dim, 14)
    torch.nn.init.normal_(net.net[-1].weight, std=0.5)
    return net


def test_mouth_net_starts_at_zero_and_is_zero_outside_its_region():
    torch.manual_seed(1)
    x = torch.randn(400, 3)
    z = torch.randn(5)
    cfg = MouthConfig(enabled=True, width=16, depth=1, center=(0.0, 0.0, 0.0), radii=(1.0, 0.5, 0.5))
    assert MouthNet(cfg, 5, 14)(x, z).abs().max() == 0
    net = random_mouth_net(5)
    out = net(x, z)
    w = mouth_weight(x, net.center, net.radii)
    assert (out[w == 0] == 0).all() and (w == 0).sum() > 100
    # brute force: the whole network on every point, weighted (the region's subset must be computed alike)
    full = net.net(torch.cat([net.encoding(x), z.expand(len(x), -1)], -1)) * w[:, None]
    assert torch.allclose(out, full, atol=1e-5)
    assert out[w > 0].abs().min() > 0


def test_the_additive_mouth_net_sums_what_each_code_component_does_alone():
    torch.manual_seed(2)
    x, z = torch.randn(300, 3) * 0.4, torch.randn(4)
    net = random_mouth_net(4, additive=True, depth=2)
    w = mouth_weight(x, net.center, net.radii)[:, None]  # (N, 1)

    def whole(code: torch.Tensor) -> torch.Tensor:  # the network of the whole code, by brute force
        return net.net(torch.cat([net.encoding(x), code.expand(len(x), -1)], -1)) * w

    zero = torch.zeros(4)
    expected = whole(zero) + sum(whole(zero.index_put((torch.tensor(k),), z[k])) - whole(zero) for k in range(4))
    assert torch.allclose(net(x, z), expected, atol=1e-5)
    # what one component adds does not depend on the others: the held-out smile with the jaw open gets the jaw's
    # training effect (the network of the whole code does not, so the property is not trivial)
    jaw, smile = torch.tensor([0.9, 0.0, 0.0, 0.0]), torch.tensor([0.0, 0.8, 0.0, 0.0])
    for additive, same in ((True, True), (False, False)):
        net.cfg = replace(net.cfg, additive=additive)
        with_smile, alone = net(x, jaw + smile) - net(x, smile), net(x, jaw) - net(x, zero)
        assert torch.allclose(with_smile, alone, atol=1e-5) == same


def test_mouth_net_clamps_the_code_to_the_training_range():
    net = random_mouth_net(3)
    codes = torch.tensor([[0.0, -1.0, 0.5], [1.0, 0.0, 0.5]])
    net.set_code_range(codes)
    x = torch.randn(50, 3) * 0.3
    beyond, edge = torch.tensor([3.0, -2.0, 0.5]), torch.tensor([1.0, -1.0, 0.5])
    assert torch.equal(net(x, beyond), net(x, edge))
    assert not torch.equal(net(x, edge), net(x, torch.tensor([0.5, -0.5, 0.5])))


def test_the_mouth_changes_only_the_gaussians_in_its_region_and_stays_outside_the_size_priors(head):
    torch.manual_seed(0)
    region = head.mouth_region()
    mouth = MouthConfig(enabled=True, width=16, depth=1, center=region.center, radii=region.radii)
    plain = DetailMLP(DetailConfig(width=16, depth=1), 0, head.expression_dim, head.bounds)
    torch.manual_seed(0)
    with_mouth = DetailMLP(DetailConfig(width=16, depth=1, mouth=mouth), 0, head.expression_dim, head.bounds)
    for net in (plain.net, with_mouth.net, with_mouth.mouth.net):
        torch.nn.init.normal_(net[-1].weight, std=0.1, generator=torch.Generator().manual_seed(2))
    x = surface_points(head, 20000)
    params = {
        "means": x,
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(x), 4),
        "scales": torch.full_like(x, -6.0),
        "opacities": torch.zeros(len(x)),
        "colors": torch.zeros_like(x),
    }
    z = torch.zeros(head.expression_dim)
    z[JAW] = 0.8
    a = express(params, AvatarNets(None, plain, None), z)
    b = express(params, AvatarNets(None, with_mouth, None), z)
    w = mouth_weight(x, torch.tensor(region.center), torch.tensor(region.radii))
    assert torch.equal(a.colors[w == 0], b.colors[w == 0]) and torch.equal(a.means[w == 0], b.means[w == 0])
    assert (a.colors[w > 0] != b.colors[w > 0]).any(-1).all()
    # the residuals the losses' size priors and Laplacians see are the shared network's alone
    assert torch.equal(a.residuals, b.residuals)


def jaw_codes(values) -> torch.Tensor:
    z = torch.zeros(len(values), len(EXPRESSIONS))
    z[:, JAW] = torch.tensor(values)
    return z


def test_synthetic_region_holds_the_captures_mouth_and_nothing_of_the_eyes_or_nose(head):
    region = head.mouth_region()
    center, radii = torch.tensor(region.center), torch.tensor(region.radii)
    x = surface_points(head, 60000).double()
    # the capture's own mouth effect (independent of the region): where the open mouth changes the albedo
    white = torch.ones_like(x)
    changed = (mouth_interior(x, jaw_codes([1.0])[0].double(), white) - white).abs().amax(-1) > 0.05
    assert changed.sum() > 50
    w = mouth_weight(x.float(), center, radii)
    assert (w[changed] == 1).all()
    # the eyes, the nose's tip and the chin lie outside
    for point in ((0.029, 0.027, 0.08), (0.0, -0.005, 0.1), (0.0, -0.075, 0.064)):
        near = (x - torch.tensor(point, dtype=x.dtype)).norm(dim=-1) < 0.006
        assert near.any() and (w[near] == 0).all(), point


def test_flame_region_sits_on_the_front_where_the_jaw_takes_over(tmp_path):
    arrays = flame_arrays(seed=3, n_expression=4, subdivisions=4)
    path = tmp_path / "flame.npz"
    np.savez(path, **arrays)
    head = FlameHead(load_flame_model(path), model_path=path)
    region = head.mouth_region()
    assert region is not None
    # the test model's jaw weight is sigmoid((-0.035 - y) / 0.005) on the front (z > 0): its half-way line
    # is y = -0.035, and the face looks along +z
    cx, cy, cz = region.center
    assert abs(cx) < 0.005 and abs(cy + 0.035) < 0.006 and cz > 0.06
    v = torch.as_tensor(arrays["v_template"]).float()
    w = mouth_weight(v, torch.tensor(region.center), torch.tensor(region.radii))
    assert (w[v[:, 2] < 0] == 0).all()  # nothing of the back of the head
    lip = (v[:, 2] > 0.07) & ((v[:, 1] + 0.035).abs() < 0.004) & (v[:, 0].abs() < 0.01)
    assert lip.any() and (w[lip] == 1).all()


def test_training_without_a_region_warns_and_leaves_the_mouth_out(head, caplog):
    class NoMouth(SyntheticHead):
        def mouth_region(self):
            return None

    cfg = TrainConfig()
    cfg = replace(cfg, detail=replace(cfg.detail, mouth=MouthConfig(enabled=True)))
    with caplog.at_level(logging.WARNING):
        a = avatar_config(cfg, NoMouth(head.identity))
    assert not a.detail.mouth.enabled and "--detail.mouth.center" in caplog.text
    given = replace(cfg.detail.mouth, center=(0.0, 0.1, 0.2), radii=(0.01, 0.01, 0.01))
    b = avatar_config(replace(cfg, detail=replace(cfg.detail, mouth=given)), NoMouth(head.identity))
    assert b.detail.mouth == given
    c = avatar_config(cfg, head)
    assert c.detail.mouth.center == head.mouth_region().center


def test_mouth_net_learns_the_captures_opening_mouth_and_generalises_to_new_jaw_openings(head):
    """Fitted alone to the capture's mouth albedo at four jaw openings, it draws it at two it never saw (the band
    widens with the jaw: position and code together)."""
    region = head.mouth_region()
    cfg = MouthConfig(enabled=True, center=region.center, radii=region.radii)
    center, radii = torch.tensor(region.center), torch.tensor(region.radii)
    x = surface_points(head, 200000)
    x = x[mouth_weight(x, center, radii) == 1]  # (M, 3) where the network has full weight
    white = torch.full_like(x, 0.8).double()

    def target(jaw: float) -> torch.Tensor:  # (M, 3) colour logits' change that the opening mouth makes
        c = mouth_interior(x.double(), jaw_codes([jaw])[0].double(), white).clamp(0.02, 0.98)
        return (torch.logit(c) - torch.logit(white)).float()

    torch.manual_seed(0)
    net = MouthNet(cfg, len(EXPRESSIONS), 3)
    net.set_code_range(jaw_codes([0.0, 1.0]))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    train = [0.0, 0.3, 0.6, 0.9]
    targets = {j: target(j) for j in train}
    for step in range(600):
        j = train[step % len(train)]
        loss = (net(x, jaw_codes([j])[0]) - targets[j]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for j in (0.45, 0.75):
            t = target(j)
            r2 = 1 - (net(x, jaw_codes([j])[0]) - t).square().sum() / (t - t.mean(0)).square().sum()
            assert r2 > 0.8, (j, float(r2))


def test_the_mouth_network_learns_at_its_own_rate_and_every_parameter_once(head):
    region = head.mouth_region()
    mouth = MouthConfig(enabled=True, width=8, depth=1, center=region.center, radii=region.radii)
    detail = DetailMLP(DetailConfig(width=8, depth=1, mouth=mouth), 0, head.expression_dim, head.bounds)
    lr = LearningRates(detail=1e-3, mouth=7e-3)
    _, opt = make_optimizers(torch.nn.ParameterDict(), AvatarNets(None, detail, None), lr)
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(rate) == len(list(detail.parameters()))
    assert {rate[id(p)] for p in detail.mouth.parameters()} == {7e-3}
    assert {rate[id(p)] for n, p in detail.named_parameters() if not n.startswith("mouth.")} == {1e-3}
