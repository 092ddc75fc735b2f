"""The submission zip against the official toolkit's checks (names, frame counts, resolution, uint8 RGB)."""

import zipfile

import numpy as np
import pytest

from npga import nersemble
from npga.io.submission import SubmissionWriter, check_benchmark_target, check_submission, submission_entry


def _frames(n: int) -> list[np.ndarray]:
    y = np.linspace(0, 255, nersemble.BENCHMARK_HEIGHT, dtype=np.float32)[:, None, None]
    shape = (nersemble.BENCHMARK_HEIGHT, nersemble.BENCHMARK_WIDTH, 3)
    return [np.broadcast_to(y + 10 * t, shape).clip(0, 255).astype(np.uint8) for t in range(n)]


def test_written_submission_passes_the_checks(tmp_path):
    out = tmp_path / "submission.zip"
    with SubmissionWriter(out) as writer:
        assert writer.add_video(443, "FREE", "222200037", _frames(3)) == 3
    entry = submission_entry(443, "FREE", "222200037")
    assert zipfile.ZipFile(out).namelist() == ["443/FREE/cam_222200037.mp4"]
    assert check_submission(out, {entry: 3}) == []
    problems = check_submission(out, {entry: 4, submission_entry(443, "FREE", "222200046"): 3})
    assert any("3 frames, expected 4" in p for p in problems)
    assert any("cam_222200046.mp4: missing" in p for p in problems)


def test_writer_refuses_bad_targets_and_frames_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "s.zip"
    with pytest.raises(ValueError, match="not in the NeRSemble NVS benchmark"):
        check_benchmark_target(999, "FREE")
    with pytest.raises(ValueError, match="benchmark sequence is 'FREE'"):
        check_benchmark_target(443, "EXP-1-head")
    with pytest.raises(ValueError, match="uint8"):
        with SubmissionWriter(out) as writer:
            writer.add_video(443, "FREE", "222200037", [np.zeros((100, 100, 3), np.uint8)])
    with pytest.raises(ValueError, match="hold-out"):
        with SubmissionWriter(out) as writer:
            writer.add_video(443, "FREE", "222200042", _frames(1))
    assert list(tmp_path.iterdir()) == []
