"""Writing result files atomically: a reader sees the old file or the new one, never half of one.

Every writer writes to a hidden temporary name in the target's folder (`temp_path`:
`.{stem}.partial-{pid}{suffix}`), which is synced to disk and then renamed over the target; on any error the
temporary file is removed and the error raised again. The writer's process id in the name keeps two processes
writing one target from writing into one file; a temporary file whose process is gone (killed mid-write) is
removed by the next write of its target. The final suffix stays last because writers such as np.savez,
cv2.imwrite, ffmpeg and torch.save choose their format, or append an extension, from the name. The temporary file
is created by name like an ordinary file, so the user's umask sets its permissions (mkstemp would make every
result 0600).
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_path(path: str | os.PathLike, pid: int | str | None = None) -> Path:
    """The hidden name process `pid` (default: this one) writes `path` under until it is complete:
    `out/x.npz` -> `out/.x.partial-1234.npz`; `pid="*"` gives the glob pattern of every process's."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial-{os.getpid() if pid is None else pid}{path.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def stale_temp_paths(path: str | os.PathLike) -> list[Path]:
    """Temporary files of `path` that no running process is writing: this process's and dead processes'."""
    path = Path(path)
    prefix, suffix = f".{path.stem}.partial-", path.suffix
    stale = []
    for p in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        pid = p.name[len(prefix) : len(p.name) - len(suffix)]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            stale.append(p)
    return stale


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """The temporary path to write `path` through; it replaces `path` when the block ends without error.

    The block must write and close the file; its folder is created when missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    for old in stale_temp_paths(path):  # an interrupted run's leftover must not pass for what this block writes
        old.unlink(missing_ok=True)
    try:
        yield tmp
        if not tmp.is_file():  # e.g. cv2.imwrite, which reports failure by returning False
            raise OSError(f"{path}: the writer wrote no file")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the data is on disk before the name points at it
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a failed write (a full disk) names no file: name the one being written
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder to fill; it replaces the folder `path` (and everything in it: the caller decides
    whether that may go) when the block ends without error, and is removed when it raises."""
    path = Path(path)
    tmp = temp_path(path)
    for old in stale_temp_paths(path):
        shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
