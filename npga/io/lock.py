"""One writer per folder: an exclusive lock on a file inside it, which the operating system drops when the
holder ends, however it ends (`kill -9` included), so a crashed run never leaves a stale lock behind.

Two `npga train` on one run folder (or two `npga prepare` on one frame cache) would interleave checkpoints, logs
and frames; the second one fails at once instead, with a message naming the first one's process id. The lock
file stays in the folder (removing it would let a third process lock a new file while a second holds the old).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

LOCK_NAME = ".lock"


class FolderInUse(ValueError):
    """Another process holds the folder's lock (a ValueError: the CLI reports it as one line)."""


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold `folder`'s lock (creating the folder) for the block; `what` names the folder in the error, e.g. "run".

    A folder this call created and that holds nothing but the lock when the block fails is removed again, so a
    command refused for bad input leaves nothing behind.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderInUse(
                f"{folder}: this {what} is in use by another npga process (pid {holder}); wait for it to end "
                f"or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield path
        except BaseException:
            if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                path.unlink(missing_ok=True)
                with suppress(OSError):
                    folder.rmdir()
            raise
    finally:
        os.close(fd)  # releases the lock
