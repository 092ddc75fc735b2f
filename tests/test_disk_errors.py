"""A disk that fails (full, read-only, a file where a folder should be): one line naming the path, never a
truncated result under its final name, never a SIGBUS, and a failing log or plot never stops training."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from npga import cli
from npga.data import cache as cache_module
from npga.data.cache import frames_writer
from npga.io.atomic import write_text_atomic
from npga.runs import RunLayout
from npga.train import JsonlLog


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _run_fake(monkeypatch, main) -> str:
    """The one line `npga fake` ends with when its main is `main`."""
    module = type("M", (), {"Config": SimpleNamespace, "main": staticmethod(main)})
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: module)
    monkeypatch.setattr(cli.tyro, "cli", lambda *a, **k: SimpleNamespace())
    monkeypatch.setattr(cli, "check_options", lambda cfg: None)
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", ("m", "a fake subcommand"))
    monkeypatch.delenv("NPGA_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main(["fake"])
    return str(e.value.code)


def test_a_full_disk_is_one_line_naming_the_file_and_the_free_space(tmp_path, monkeypatch):
    target = tmp_path / "eval" / "metrics.json"

    def write(cfg):
        monkeypatch.setattr(Path, "write_text", _full_disk)  # as a write() on a full disk fails: no file named
        write_text_atomic(target, "{}")

    line = _run_fake(monkeypatch, write)
    assert line.startswith(f"npga fake: error: {target}: No space left on device (")
    assert line.endswith(f" MB free on the disk of {target.parent})") and "\n" not in line
    assert list(target.parent.iterdir()) == []  # no temporary file left


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory"), "Not a directory"),
    ],
)
def test_a_disk_that_refuses_the_write_is_one_line_naming_the_file(tmp_path, monkeypatch, error, problem):
    def write(cfg):
        error.filename = str(tmp_path / "run" / "config.yaml")
        raise error

    assert _run_fake(monkeypatch, write) == f"npga fake: error: {tmp_path / 'run' / 'config.yaml'}: {problem}"


def test_a_frame_file_reserves_its_blocks_before_it_is_written(tmp_path, monkeypatch):
    """prepare writes frames through a memory map: a disk that fills under a sparse map kills the process with
    SIGBUS. The blocks are reserved first, so a full disk is an OSError before any frame is written."""
    calls = []
    real = os.posix_fallocate
    monkeypatch.setattr(
        cache_module.os, "posix_fallocate", lambda fd, off, n: (calls.append((off, n)), real(fd, off, n))
    )
    shape = (3, 8, 10, 4)
    with frames_writer(tmp_path / "cam_1.npy", shape) as arr:
        arr[:] = 7
    assert calls and calls[0][0] == 0 and calls[0][1] >= np.prod(shape)
    np.testing.assert_array_equal(np.load(tmp_path / "cam_1.npy"), np.full(shape, 7, np.uint8))

    monkeypatch.setattr(cache_module.os, "posix_fallocate", _full_disk)
    with pytest.raises(OSError, match="No space left") as e:
        with frames_writer(tmp_path / "cam_2.npy", shape) as arr:
            pytest.fail("no frame may be written on a disk without room for the file")
    assert e.value.filename == str(tmp_path / "cam_2.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam_1.npy"]


def failing_plot(log_path, out_png, title=""):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_log_or_plot_that_fails_warns_once_and_training_goes_on(tmp_path, caplog):
    run = RunLayout(tmp_path / "run")
    trainer = SimpleNamespace(cfg=SimpleNamespace(steps=100, out=run.root), run=run)
    log = JsonlLog(run.log, every=1, plot=failing_plot)
    with caplog.at_level(logging.WARNING):
        for step in range(1, 4):
            log.after_step(trainer, {"step": step, "n_gaussians": 1, "loss": torch.tensor(0.5), "val_psnr": 30.0})
        log.close(trainer)  # the redraws failed in the plotting process and here: no exception
    assert len(run.log.read_text().splitlines()) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not write the curves" in warnings[0]

    run.log.unlink()
    run.log.mkdir()  # the log cannot be appended to
    log = JsonlLog(run.log, every=1, plot=failing_plot)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for step in range(1, 4):
            log.after_step(trainer, {"step": step, "n_gaussians": 1, "loss": torch.tensor(0.5)})
        log.close(trainer)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "could not write the log" in warnings[0]
