"""Evaluation end to end on the synthetic tiny capture, with renderers whose scores are known."""

import csv
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from npga.avatar.model import Motion
from npga.commands.common import tracked_renderer
from npga.data.tracking import Tracking
from npga.evaluate import evaluate, summarize, write_report
from npga.io.video import read_video, to_uint8
from npga.metrics import LPIPS, composite
from npga.split import Split, make_split
from tests.helpers.small_avatars import random_avatar


def _ground_truth_renderer(cache, noise: float = 0.0):
    def render(seq, t, cams):
        rgb, alpha = (torch.from_numpy(a) for a in cache.frames(seq, t, [c.serial for c in cams]))
        out = composite(rgb, alpha) + noise
        return out.clamp(0, 1), alpha

    return render


def test_perfect_and_noisy_renders_score_as_expected(tiny_cache, tmp_path):
    split = make_split(tiny_cache.serials, tiny_cache.sequences)
    no_lpips = LPIPS.__new__(LPIPS)
    no_lpips.model, no_lpips.reason = None, "test"
    perfect = evaluate(_ground_truth_renderer(tiny_cache), tiny_cache, split, "heldout_cameras", lpips=no_lpips)
    s = summarize(perfect)
    assert s["ssim"] == pytest.approx(1.0) and s["psnr"] > 100 and s["lpips"] is None
    noisy = evaluate(
        _ground_truth_renderer(tiny_cache, noise=-0.1), tiny_cache, split, "heldout_sequences", lpips=no_lpips
    )
    s = summarize(noisy)
    assert s["psnr"] == pytest.approx(20.0, abs=0.05)  # an offset of 0.1 everywhere is 20 dB (no pixel is black)
    assert s["n_frames"] == 4 * 16 and len(s["per_camera"]) == 16

    metrics = write_report(tmp_path / "eval", [perfect, noisy])
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("psnr", "ssim", "lpips", "psnr_masked", "ssim_masked", "lpips_masked", "n_frames", "per_camera"):
        assert key in on_disk["heldout_cameras"] and key in on_disk["heldout_sequences"]
    rows = list(csv.DictReader(open(tmp_path / "eval" / "per_frame.csv")))
    assert len(rows) == 3 * 4 + 16 * 4
    assert (tmp_path / "eval" / "heldout_cameras_cam_222200037.png").is_file()
    assert (tmp_path / "eval" / "heldout_sequences.mp4").is_file()
    assert np.isfinite([float(r["psnr"]) for r in rows]).all()


def test_a_split_without_frames_is_an_error(tiny_cache):
    split = Split(
        train_serials=tiny_cache.serials,
        heldout_serials=(),
        train_sequences=("EXP-1-jaw",),
        heldout_sequences=("FREE",),
    )
    with pytest.raises(ValueError, match="no frames to evaluate"):
        evaluate(_ground_truth_renderer(tiny_cache), tiny_cache, split, "heldout_cameras")


def test_a_renderer_with_known_errors_gives_known_scores_images_and_video(tiny_cache, tmp_path):
    """A render darkened by a horizontal ramp whose slope depends on frame and camera: every row of the CSV has
    the PSNR (plain and masked) computed here from the frames, and the PNGs and mp4 show truth | render."""
    split = make_split(tiny_cache.serials, tiny_cache.sequences)
    no_lpips = LPIPS.__new__(LPIPS)
    no_lpips.model, no_lpips.reason = None, "test"
    order = {s: i for i, s in enumerate(tiny_cache.serials)}
    ramp = np.linspace(0.0, 1.0, tiny_cache.width, dtype=np.float32)[None, :, None]  # (1, W, 1)

    def darkening(t: int, serial: str) -> np.ndarray:  # (1, W, 1) fraction of the colour taken away
        return (0.2 + 0.1 * t + 0.02 * order[serial]) * ramp

    def truth(seq: str, t: int, serial: str) -> tuple[np.ndarray, np.ndarray]:
        rgb, alpha = tiny_cache.frames(seq, t, [serial])
        return rgb[0] * alpha[0] + 1.0 - alpha[0], alpha[0]  # on white

    def render(seq, t, cams):
        pred = np.stack([truth(seq, t, c.serial)[0] * (1 - darkening(t, c.serial)) for c in cams])
        return torch.from_numpy(pred), torch.ones(*pred.shape[:3], 1)

    result = evaluate(render, tiny_cache, split, "heldout_cameras", lpips=no_lpips)
    write_report(tmp_path / "eval", [result])
    rows = list(csv.DictReader(open(tmp_path / "eval" / "per_frame.csv")))
    seqs, serials = split.eval_views("heldout_cameras", tiny_cache.serials)
    assert [(r["sequence"], int(r["t"]), r["serial"]) for r in rows] == [
        (s, t, c) for s in seqs for t in range(tiny_cache.n_frames(s)) for c in serials
    ]
    for r in rows:
        gt, alpha = truth(r["sequence"], int(r["t"]), r["serial"])
        pred = gt * (1 - darkening(int(r["t"]), r["serial"]))
        masked = pred * alpha + 1.0 - alpha
        assert float(r["psnr"]) == pytest.approx(-10 * np.log10(np.mean((pred - gt) ** 2)), abs=1e-3)
        assert float(r["psnr_masked"]) == pytest.approx(-10 * np.log10(np.mean((masked - gt) ** 2)), abs=1e-3)
    assert len({round(float(r["psnr"]), 2) for r in rows}) == len(rows)  # every frame and camera differs

    t_mid = tiny_cache.n_frames(seqs[0]) // 2
    for serial in serials:
        grid = cv2.cvtColor(cv2.imread(str(tmp_path / "eval" / f"heldout_cameras_cam_{serial}.png")), cv2.COLOR_BGR2RGB)
        gt, _ = truth(seqs[0], t_mid, serial)
        W = tiny_cache.width
        assert np.abs(grid[:, :W].astype(int) - to_uint8(gt)).max() <= 1
        assert np.abs(grid[:, W : 2 * W].astype(int) - to_uint8(gt * (1 - darkening(t_mid, serial)))).max() <= 1

    video = read_video(tmp_path / "eval" / "heldout_cameras.mp4").astype(np.float32) / 255
    assert len(video) == tiny_cache.n_frames(seqs[0])
    for t, frame in enumerate(video):
        gt, _ = truth(seqs[0], t, serials[0])
        pred = gt * (1 - darkening(t, serials[0]))
        h, w = frame.shape[:2]
        expected, swapped = (np.concatenate(p, 1)[:h, :w] for p in ((gt, pred), (pred, gt)))
        err, err_swapped = np.abs(frame - expected).mean(), np.abs(frame - swapped).mean()
        assert err < 0.02 and err < 0.5 * err_swapped, (t, err, err_swapped)


def test_scores_render_the_avatar_s_own_refined_tracking_and_the_capture_s_for_other_sequences():
    gen = torch.Generator().manual_seed(4)
    avatar = random_avatar(gen)
    a = avatar.motions["A"]
    shifted = a.head_pose.clone()
    shifted[:, :3, 3] += 0.05
    avatar.motions["A"] = Motion(a.expression + 0.3, shifted, a.timesteps, a.expression, a.head_pose)
    other = Tracking(
        expression=np.full((2, 4), 0.2),
        identity=np.zeros(0),
        rotation=np.eye(3)[None].repeat(2, 0),
        translation=np.full((2, 3), 0.01),
        scale=np.ones(2),
        timesteps=np.arange(2),
    )
    cache = SimpleNamespace(tracking=lambda seq: {"NEW": other}[seq])  # only a sequence the avatar lacks is read
    render = tracked_renderer(avatar, cache)
    cam = [avatar.cameras["c1"]]
    refined, _ = avatar.render_code(a.expression[2] + 0.3, shifted[2], cam)
    as_tracked, _ = avatar.render_code(a.expression[2], a.head_pose[2], cam)
    assert torch.equal(render("A", 2, cam)[0], refined) and not torch.equal(refined, as_tracked)
    new, _ = avatar.render_code(torch.full((4,), 0.2), torch.from_numpy(other.head_to_world(1)), cam)
    assert torch.equal(render("NEW", 1, cam)[0], new)
    fitted = tracked_renderer(avatar, cache, {"A": other})  # a fit (`npga eval --refine-tracking`) goes first
    assert torch.equal(fitted("A", 1, cam)[0], new) and torch.equal(fitted("NEW", 1, cam)[0], new)
