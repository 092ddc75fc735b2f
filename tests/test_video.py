import numpy as np
import pytest

from npga.io.video import read_video, write_video


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
