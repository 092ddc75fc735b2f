import numpy as np
import pytest

from npga.data.layout import ParticipantLayout
from npga.io.video import probe_video, read_video, write_video
from tests.helpers.small_captures import SERIALS


def test_video_round_trip_keeps_size_and_content(tmp_path):
    # Smooth content (codecs are lossy on noise); a size that is no multiple of 16.
    y, x = np.mgrid[0:50, 0:38]
    frames = [
        np.stack([(x * 6 + t * 10) % 256, (y * 5) % 256, np.full_like(x, 40 * t)], -1).astype(np.uint8)
        for t in range(4)
    ]
    n = write_video(tmp_path / "a.mp4", frames, fps=10, quality=10)
    back = read_video(tmp_path / "a.mp4")
    assert n == 4 and back.shape == (4, 50, 38, 3)
    assert np.abs(back.astype(float) - np.stack(frames)).mean() < 4.0


def test_video_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_video(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="bad.mp4"):
        read_video(bad)
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", [np.zeros((5, 4, 3), np.uint8)], fps=10)
    assert not list(tmp_path.glob(".*partial*"))


def test_probe_video_counts_frames_and_names_bad_files(bench_capture, tmp_path):
    info = probe_video(ParticipantLayout(bench_capture).video("FREE", SERIALS[0]))
    assert (info.n_frames, info.width, info.height, info.fps) == (6, 32, 48, 73.0)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(ValueError, match="bad.mp4: not a readable video"):
        probe_video(bad)
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        probe_video(tmp_path / "nope.mp4")
