"""`npga export --web` without a browser: the bake against the avatar's own networks, and the folder's files read
back as docs/web.md specifies them (the page's drawing is tests/test_web_browser.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from npga.avatar.deform import AvatarNets, pose
from npga.avatar.file import save_avatar
from npga.avatar.render import render_gaussians
from npga.cameras import stack_cameras
from npga.cli import main
from npga.metrics import psnr
from npga.viewer.bake import bake_avatar, baked
from tests.helpers.small_avatars import random_avatar
from tests.helpers.viewer_avatar import posed_vivid_avatar

WIDTH = 14  # docs/web.md: means 3, quats 4, log scales 3, colour logits 3, opacity logit 1


def _render(avatar, g, head_pose):
    camera = avatar.cameras["c0"].resized(160, 240)
    viewmats, Ks = stack_cameras([camera])
    return render_gaussians(pose(g, head_pose), viewmats, Ks, 160, 240, avatar.background)[0].clamp(0, 1)


def test_a_bake_of_expression_free_networks_is_the_canonical_avatar():
    avatar = random_avatar(torch.Generator().manual_seed(1), cnn=False)
    avatar.nets = AvatarNets(None, None, None)  # nothing depends on the code
    bake = bake_avatar(avatar, 8)
    g, c = baked(bake, torch.tensor([2.0, -1.0, 0.5, 3.0])), avatar.canonical_gaussians()
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(g, name), getattr(c, name), atol=1e-5), name
    assert bake.basis[1:].abs().max() < 1e-6


def test_the_bake_draws_tracked_frames_and_slider_moves_close_to_the_networks():
    avatar = posed_vivid_avatar()
    bake = bake_avatar(avatar, 8)
    assert bake.rank == avatar.codes.n_moving == 4
    mean_only = bake_avatar(avatar, 0)
    scores, rank0 = [], []
    cases = [
        ("A", 0, [0.0] * 4),
        ("A", 4, [0.0] * 4),
        ("B", 2, [0.0] * 4),
        ("A", 3, [2, -1, 0, 0]),
        ("B", 0, [0, 0, -1.5, 0]),
    ]
    for sequence, frame, sliders in cases:
        z, head_pose = avatar.tracked(sequence, frame)
        s = torch.tensor(sliders, dtype=torch.float32)
        exact = _render(avatar, avatar.expressed(z + avatar.codes.offset(s)), head_pose)
        scores.append(float(psnr(_render(avatar, baked(bake, bake.coords[sequence][frame] + s), head_pose), exact)))
        rank0.append(float(psnr(_render(avatar, baked(mean_only, torch.zeros(0)), head_pose), exact)))
    assert min(scores) > 32, scores  # measured 33-40 dB on this deliberately nonlinear avatar (docs/web.md)
    assert np.mean(rank0) < np.mean(scores) - 5, (rank0, scores)  # the expression matters; the basis carries it


def test_the_folder_holds_the_page_and_the_bake_as_documented(tmp_path):
    avatar = posed_vivid_avatar()
    file = save_avatar(avatar, tmp_path / "a.npga")
    main(["export", str(file), "--web", str(tmp_path / "site"), "--web-rank", "3", "--device", "cpu"])
    site = tmp_path / "site"
    assert sorted(p.name for p in site.iterdir()) == ["avatar.bin", "avatar.json", "index.html", "npga-web.js"]
    m = json.loads((site / "avatar.json").read_text())
    n, k = avatar.n_gaussians, 3
    assert (m["format"], m["version"], m["gaussians"], m["rank"]) == ("npga-web-avatar", 1, n, k)
    blob = (site / "avatar.bin").read_bytes()
    assert len(blob) == m["blob"]["bytes"] == n * WIDTH * (4 + 2 * k)
    affine = np.frombuffer(blob, "<f4", n * WIDTH).reshape(n, WIDTH)
    directions = np.frombuffer(blob, "<f2", offset=4 * n * WIDTH).reshape(k, n, WIDTH)
    assert np.isfinite(affine).all() and np.isfinite(directions).all()
    # The affine term is the Gaussians at the training codes' mean (the fit's centre), up to the fit's residual.
    centre = avatar.expressed(avatar.codes.mean)
    assert np.abs(affine[:, :3] - centre.means.numpy()).max() < 0.02
    stats = avatar.codes
    for seq in m["sequences"]:
        motion = avatar.motions[seq["name"]]
        # coordinates: the code's projections on the principal directions in standard deviations, computed here
        centred = (motion.expression - stats.mean).double().numpy()
        expected = centred @ stats.directions.double().numpy()[:k].T / stats.std.double().numpy()[:k]
        assert np.allclose(np.reshape(seq["coords"], (-1, k)), expected, atol=1e-4)
        assert np.allclose(np.reshape(seq["head_poses"], (-1, 4, 4)), motion.head_pose.numpy(), atol=1e-6)
    cams = {c["name"]: c for c in m["cameras"]}
    c0 = avatar.cameras["c0"]
    assert np.allclose(np.reshape(cams["c0"]["world_to_camera"], (4, 4)), c0.world_2_cam, atol=1e-6)
    assert (cams["c0"]["fx"], cams["c0"]["cx"], cams["c0"]["width"]) == (c0.K[0, 0], c0.K[0, 2], c0.width)


def test_an_export_replaces_an_earlier_one_but_no_other_folder(tmp_path):
    file = save_avatar(random_avatar(torch.Generator().manual_seed(0), cnn=False), tmp_path / "a.npga")
    site = tmp_path / "site"
    for _ in range(2):  # the second replaces the first
        main(["export", str(file), "--web", str(site), "--web-rank", "1"])
    (site / "avatar.json").write_text('{"format": "npga-web-avatar", "gaussians": 1}')
    main(["export", str(file), "--web", str(site), "--web-rank", "1"])
    assert json.loads((site / "avatar.json").read_text())["gaussians"] == 50
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit, match="home exists and is not an earlier `npga export --web` folder"):
        main(["export", str(file), "--web", str(home)])
    assert (home / "thesis.tex").read_text() == "years of work"
    (tmp_path / "empty").mkdir()
    main(["export", str(file), "--web", str(tmp_path / "empty"), "--web-rank", "1"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--web", "W", "--ply", "p.ply"], "give one output"),
        ([], "give one output"),
        (["--web", "W", "--sequence", "A"], "--web exports every sequence"),
        (["--web", "W", "--web-rank", "-1"], "--web-rank must be at least 0, got -1"),
    ],
)
def test_bad_web_options_fail_in_one_line(tmp_path, args, message):
    file = save_avatar(random_avatar(torch.Generator().manual_seed(0), cnn=False), tmp_path / "a.npga")
    args = [str(tmp_path / a) if a in ("W", "p.ply") else a for a in args]
    with pytest.raises(SystemExit, match=message):
        main(["export", str(file), *args])
