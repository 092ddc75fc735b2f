"""Worker processes that end with the process that started them.

A `ProcessPoolExecutor` worker waits on a queue whose writing end it holds itself, so it never learns that its
parent died: every `kill -9` of `npga train` (or an out-of-memory kill) left its plotting worker, and the
resource tracker that worker keeps open, running for ever. `worker_pool`'s workers ask Linux to kill them when
their parent ends (prctl PR_SET_PDEATHSIG; strictly: when the parent's thread that started them ends, so start
pools from the thread that lives as long as they do); elsewhere a watchdog thread polls `os.getppid()`.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 1.0


def worker_pool(
    workers: int, initializer: Callable[..., object] | None = None, initargs: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """A pool of `workers` fresh interpreters (spawn: no copy of this process's CUDA context or threads) that die
    with this process; `initializer(*initargs)` runs in each after that is arranged."""
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer, initargs),
    )


def _start_worker(parent: int, initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    die_with(parent)
    if initializer is not None:
        initializer(*initargs)


def die_with(parent: int) -> None:
    """End this process when the process `parent` (this one's parent) ends, however it ends."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # it died before the request took effect
                    os._exit(1)
                return
        except (OSError, AttributeError):
            pass  # no prctl: watch instead
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="npga-parent-watch").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(1)
