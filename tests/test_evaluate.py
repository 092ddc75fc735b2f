"""Evaluation end to end on the synthetic tiny capture, with renderers whose scores are known."""

import csv
import json

import numpy as np
import pytest
import torch

from npga.data.cache import FrameCache
from npga.data.prepare import PrepareConfig, prepare
from npga.evaluate import evaluate, summarize, write_report
from npga.metrics import LPIPS, composite
from npga.split import Split, make_split


@pytest.fixture(scope="module")
def cache(tiny_capture, tmp_path_factory):
    return FrameCache.open(prepare(PrepareConfig(capture=tiny_capture, out=tmp_path_factory.mktemp("c") / "cache")))


def _ground_truth_renderer(cache, noise: float = 0.0):
    def render(seq, t, cams):
        rgb, alpha = (torch.from_numpy(a) for a in cache.frames(seq, t, [c.serial for c in cams]))
        out = composite(rgb, alpha) + noise
        return out.clamp(0, 1), alpha

    return render


def test_split_defaults_and_errors(cache):
    split = make_split(cache.serials, cache.sequences)
    assert split.heldout_sequences == ("FREE",) and "FREE" not in split.train_sequences
    assert "222200037" in split.heldout_serials and "222200037" not in split.train_serials
    seqs, serials = split.eval_views("heldout_cameras", cache.serials)
    assert seqs == ("EXP-1-jaw",) and set(serials) == {"222200046", "222200037", "222200039"}
    with pytest.raises(ValueError, match="no training sequences"):
        make_split(cache.serials, ("FREE",))
    with pytest.raises(ValueError, match="not in the capture"):
        make_split(cache.serials, cache.sequences, heldout_sequences=("NOPE",))


def test_perfect_and_noisy_renders_score_as_expected(cache, tmp_path):
    split = make_split(cache.serials, cache.sequences)
    no_lpips = LPIPS.__new__(LPIPS)
    no_lpips.model, no_lpips.reason = None, "test"
    perfect = evaluate(_ground_truth_renderer(cache), cache, split, "heldout_cameras", lpips=no_lpips)
    s = summarize(perfect)
    assert s["ssim"] == pytest.approx(1.0) and s["psnr"] > 100 and s["lpips"] is None
    noisy = evaluate(_ground_truth_renderer(cache, noise=-0.1), cache, split, "heldout_sequences", lpips=no_lpips)
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


def test_a_split_without_frames_is_an_error(cache):
    split = Split(train_serials=cache.serials, heldout_serials=(), train_sequences=("EXP-1-jaw",),
                  heldout_sequences=("FREE",))  # fmt: skip
    with pytest.raises(ValueError, match="no frames to evaluate"):
        evaluate(_ground_truth_renderer(cache), cache, split, "heldout_cameras")
