"""The atomic writer: a result file is complete or absent, a failed write leaves the old file and no litter."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from npga.io.atomic import atomic_dir, atomic_path, temp_path, write_bytes_atomic, write_text_atomic
from npga.runs import RunLayout
from npga.train import Trainer


class Interrupted(Exception):
    pass


def test_the_target_changes_only_when_the_write_completes(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("new, first half")
            f.flush()
            assert target.read_text() == "old"  # a reader during the write sees the old file
            f.write(" and second half")
        assert target.read_text() == "old"
    assert target.read_text() == "new, first half and second half"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.parametrize("existed", [True, False])
def test_a_writer_that_raises_leaves_the_old_file_and_no_temp_file(tmp_path, existed):
    target = tmp_path / "frames.npz"
    if existed:
        np.savez(target, x=np.arange(3))
    with pytest.raises(Interrupted), atomic_path(target) as tmp:
        np.savez(tmp, x=np.arange(5))
        raise Interrupted
    assert sorted(p.name for p in tmp_path.iterdir()) == (["frames.npz"] if existed else [])
    if existed:
        with np.load(target) as npz:
            np.testing.assert_array_equal(npz["x"], np.arange(3))


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    """cv2.imwrite says it failed only by returning False: the missing file must not go unnoticed."""
    with pytest.raises(OSError, match="wrote no file"), atomic_path(tmp_path / "grid.png"):
        pass
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_leftover_temp_file_is_not_taken_for_the_new_write(tmp_path):
    target = tmp_path / "grid.png"
    temp_path(target).write_bytes(b"this process's half of a png, from a write that raised")
    temp_path(target, _dead_pid()).write_bytes(b"a killed run's half of a png")
    with pytest.raises(OSError, match="wrote no file"), atomic_path(target):
        pass
    assert list(tmp_path.iterdir()) == []


def test_two_processes_writing_one_target_write_separate_files(tmp_path):
    """A second writer of the same file (another process) neither writes into nor removes the first one's file."""
    target = tmp_path / "metrics.json"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = temp_path(target, other.pid)
        assert theirs != temp_path(target) and theirs.name == f".metrics.partial-{other.pid}.json"
        theirs.write_text("the other process's half")
        write_text_atomic(target, "mine")
        assert target.read_text() == "mine" and theirs.read_text() == "the other process's half"
    finally:
        other.kill()
        other.wait()


def test_writers_that_choose_the_format_by_name_write_the_target(tmp_path):
    """np.savez appends `.npz` and cv2 picks its encoder from the suffix: the temporary name keeps it last."""
    assert temp_path(tmp_path / "a.npz") == tmp_path / f".a.partial-{os.getpid()}.npz"
    with atomic_path(tmp_path / "a.npz") as tmp:
        np.savez(tmp, x=np.arange(4))
    with np.load(tmp_path / "a.npz") as npz:
        np.testing.assert_array_equal(npz["x"], np.arange(4))
    image = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    with atomic_path(tmp_path / "sub" / "b.png") as tmp:
        assert cv2.imwrite(str(tmp), image)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "sub" / "b.png")), image)  # lossless: a PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "sub"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_permissions_follow_the_umask_like_an_ordinary_file(tmp_path, umask):
    old = os.umask(umask)
    try:
        (tmp_path / "ordinary.txt").write_text("x")
        (tmp_path / "ordinary_dir").mkdir()
        write_text_atomic(tmp_path / "a.txt", "x")
        write_bytes_atomic(tmp_path / "b.ply", b"x")
        with atomic_path(tmp_path / "c.npz") as tmp:
            np.savez(tmp, x=np.arange(2))
        with atomic_dir(tmp_path / "capture") as tmp:
            (tmp / "f.json").write_text("{}")
    finally:
        os.umask(old)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)
    assert mode(tmp_path / "ordinary.txt") == 0o666 & ~umask
    for name in ("a.txt", "b.ply", "c.npz"):
        assert mode(tmp_path / name) == mode(tmp_path / "ordinary.txt"), name
    assert mode(tmp_path / "capture") == mode(tmp_path / "ordinary_dir") == 0o777 & ~umask


def test_a_folder_appears_complete_or_not_at_all(tmp_path):
    out = tmp_path / "capture"
    with pytest.raises(Interrupted), atomic_dir(out) as tmp:
        (tmp / "calibration.json").write_text("{}")
        assert not out.exists()
        raise Interrupted
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "stale.txt").write_text("from before")
    with atomic_dir(out) as tmp:
        (tmp / "calibration.json").write_text("{}")
        assert (out / "stale.txt").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["calibration.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["capture"]


def test_a_failed_checkpoint_leaves_no_temp_file(tmp_path, monkeypatch):
    """`Trainer.save_checkpoint` when torch.save fails after writing part of the file (a full disk)."""
    run = RunLayout(tmp_path / "run")
    trainer = SimpleNamespace(run=run, step=7, world=None, state_dict=lambda: {"x": torch.zeros(3)})

    def save_half(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 the first bytes of a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half)
    with pytest.raises(OSError, match="No space left"):
        Trainer.save_checkpoint(trainer)
    assert list(run.checkpoints.iterdir()) == []
    assert not run.avatar.exists()


@pytest.mark.skipif(not hasattr(os, "chown") or os.geteuid() != 0, reason="gives a folder to another group: root")
def test_files_in_a_shared_group_folder_get_the_group_and_mode_of_their_neighbours(tmp_path):
    """A folder a group shares (setgid, group-writable): avatars, cache.json and tracking files written atomically
    belong to the folder's group with the mode of an ordinary file beside them, so the group can use them."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, -1, 4242)  # a group this process is not in
    shared.chmod(0o2775)
    old = os.umask(0o002)
    try:
        (shared / "ordinary.txt").write_text("x")
        (shared / "ordinary_dir").mkdir()
        write_text_atomic(shared / "cache.json", "{}")
        with atomic_path(shared / "avatar.npga") as tmp:
            torch.save({"x": torch.zeros(2)}, tmp)
        with atomic_dir(shared / "capture") as tmp:
            (tmp / "f.json").write_text("{}")
    finally:
        os.umask(old)
    ordinary, folder = (shared / "ordinary.txt").stat(), (shared / "ordinary_dir").stat()
    assert ordinary.st_gid == 4242 and stat.S_IMODE(ordinary.st_mode) == 0o664
    for name in ("cache.json", "avatar.npga"):
        st = (shared / name).stat()
        assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (ordinary.st_gid, stat.S_IMODE(ordinary.st_mode)), name
    st = (shared / "capture").stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (folder.st_gid, stat.S_IMODE(folder.st_mode)) == (4242, 0o2775)
    assert (shared / "capture" / "f.json").stat().st_gid == 4242
