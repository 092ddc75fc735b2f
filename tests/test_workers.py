"""Worker processes (the training curves' plotter, the synthetic capture's renderers) end when their parent is
killed: a `kill -9` of `npga train` must not leave processes behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PARENT = """
import sys, time
from pathlib import Path
from types import SimpleNamespace
import torch
from npga.runs import RunLayout
from npga.train import JsonlLog
from npga.workers import worker_pool
from tests.test_workers import nap, sleepy_plot

run = RunLayout(Path(sys.argv[1]))
trainer = SimpleNamespace(cfg=SimpleNamespace(steps=100, out=run.root), run=run)
log = JsonlLog(run.log, every=1, plot=sleepy_plot)  # as `npga train` plots its curves
log.after_step(trainer, {"step": 1, "n_gaussians": 1, "loss": torch.tensor(0.5), "val_psnr": 30.0})
pool = worker_pool(2, initializer=nap, initargs=(0.0,))  # as `npga synth` renders
futures = [pool.submit(nap, 120.0) for _ in range(4)]
print("ready", flush=True)
time.sleep(120)
"""


def nap(seconds: float) -> None:
    time.sleep(seconds)


def sleepy_plot(log_path, out_png, title="") -> None:
    time.sleep(120)


def _children() -> dict[int, int]:
    """{pid: parent pid} of every live (not zombie) process."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state != "Z":
                out[int(d.name)] = int(ppid)
    return out


def _descendants(pid: int) -> set[int]:
    parents, found, todo = _children(), set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        found |= kids
        todo += kids
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True, env=env
    )
    workers: set[int] = set()
    everything: set[int] = set()
    try:
        assert parent.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while len(workers) < 3 and time.monotonic() < deadline:  # the plotter and two renderers, started
            workers = {p for p in _descendants(parent.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()}
            time.sleep(0.2)
        assert len(workers) == 3
        everything = _descendants(parent.pid)  # the workers and multiprocessing's resource tracker
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while (everything & set(_children())) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not everything & set(_children()), "processes outlived their parent"
    finally:
        parent.kill()
        parent.wait()
        for pid in everything | workers:  # a broken build leaves them: do not leave them running
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
