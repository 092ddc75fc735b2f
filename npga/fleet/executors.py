"""Where a fleet's jobs run: submitit's executors, one job per participant, and the options that shape them.

Slurm gets one job array (`--array=0-N%max_parallel`) and does the scheduling; its time limit and preemptions
come to the job as submitit's signal, 90 s ahead, and submitit requeues the job. On one machine submitit's
local executor starts each job as a process at once, so `run_local` holds back jobs beyond `max_parallel` and
gives each running job a GPU of its own (CUDA_VISIBLE_DEVICES); the debug executor runs them in this process,
one after the other (a debugger and a traceback see everything).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import submitit

from npga.config import AtLeast1

ExecutorName = Literal["slurm", "local", "debug"]
POLL_S = 1.0  # how often run_local looks for finished jobs


@dataclass(frozen=True)
class JobOptions:
    """How and where each participant's job runs."""

    executor: ExecutorName
    """slurm: a job array on the cluster (from a login node); local: processes on this machine, one GPU each;
    debug: in this process, one after the other."""
    max_parallel: int = 0
    """Jobs running at once (Slurm: the array's %N). 0: all of them on Slurm; locally one per GPU (1 without)."""
    gpus: tuple[int, ...] = ()
    """local: the GPUs to share out, one per running job (default: every GPU this process sees)."""
    timeout_min: AtLeast1 = 24 * 60
    """A job's time limit in minutes (Slurm --time; locally too); training stops at a checkpoint before it and
    the job is requeued to go on."""
    max_requeues: int = 3
    """Time limits a job may run into and be requeued after (Slurm preemptions do not count)."""
    partition: str | None = None
    """Slurm partition."""
    account: str | None = None
    """Slurm account to charge."""
    qos: str | None = None
    """Slurm quality of service."""
    constraint: str | None = None
    """Slurm node features (e.g. a GPU type)."""
    cpus_per_task: AtLeast1 = 8
    """CPU cores per job (Slurm)."""
    mem_gb: AtLeast1 | None = None
    """Memory per job in GB (Slurm; default: the partition's)."""
    setup: tuple[str, ...] = ()
    """Shell lines each Slurm job runs first, e.g. "module load cuda" or "source .venv/bin/activate"."""
    sbatch: tuple[str, ...] = ()
    """Other sbatch options as KEY=VALUE (e.g. mail-type=FAIL)."""
    name: str = "npga-fleet"
    """Job name."""


def slurm_parameters(opts: JobOptions, n_jobs: int) -> dict[str, Any]:
    """`SlurmExecutor.update_parameters` arguments (sbatch's options, as submitit names them) for an array of
    `n_jobs` jobs of one GPU each."""
    extra = {}
    for item in opts.sbatch:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--sbatch {item!r}: expected KEY=VALUE, e.g. mail-type=FAIL")
        extra[key] = value
    params = {
        "job_name": opts.name,
        "time": opts.timeout_min,
        "gpus_per_node": 1,
        "cpus_per_task": opts.cpus_per_task,
        "mem": None if opts.mem_gb is None else f"{opts.mem_gb}G",
        "partition": opts.partition,
        "account": opts.account,
        "qos": opts.qos,
        "constraint": opts.constraint,
        "array_parallelism": opts.max_parallel or n_jobs,
        "setup": list(opts.setup) or None,
        "additional_parameters": extra or None,
    }
    return {k: v for k, v in params.items() if v is not None}


def local_parameters(opts: JobOptions, gpu: int | None) -> dict[str, Any]:
    """`LocalExecutor.update_parameters` arguments for a job on `gpu` (None: on the CPU, no GPU visible)."""
    gpus = [] if gpu is None else [gpu]
    return {"timeout_min": opts.timeout_min, "gpus_per_node": len(gpus), "visible_gpus": gpus}


def make_executor(folder: Path, opts: JobOptions, n_jobs: int) -> submitit.Executor:
    """submitit's executor for the jobs, its files (pickles, logs) in `folder`."""
    if opts.executor == "debug":
        return submitit.DebugExecutor(folder)
    if opts.executor == "local":
        return submitit.LocalExecutor(folder, max_num_timeout=opts.max_requeues)
    try:
        executor = submitit.SlurmExecutor(folder, max_num_timeout=opts.max_requeues)
    except RuntimeError as e:  # submitit's words when there is no srun
        raise ValueError(f"--executor slurm: {e} (run `npga fleet run` on a login node)") from None
    executor.update_parameters(**slurm_parameters(opts, n_jobs))
    return executor


def local_gpus(opts: JobOptions) -> tuple[int, ...]:
    """The GPUs local jobs share: --gpus, else those CUDA_VISIBLE_DEVICES names, else every one torch sees."""
    if opts.gpus:
        return opts.gpus
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [v.strip() for v in visible.split(",") if v.strip()]
        if not all(v.isdigit() for v in entries):
            raise ValueError(f"CUDA_VISIBLE_DEVICES={visible!r} names GPUs by UUID: pass --gpus with their indices")
        return tuple(int(v) for v in entries)
    import torch

    return tuple(range(torch.cuda.device_count()))


def run_local(
    submit: Callable[[str, int | None], submitit.Job],
    participants: Sequence[str],
    max_parallel: int,
    gpus: Sequence[int],
) -> dict[str, submitit.Job]:
    """Start `submit(participant, gpu)` for each participant while fewer than `max_parallel` jobs run, each on a
    GPU no running job holds (None without GPUs); returns when every job has ended."""
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")
    queue, free = list(participants), list(gpus)
    running: dict[str, tuple[submitit.Job, int | None]] = {}
    jobs: dict[str, submitit.Job] = {}
    while queue or running:
        for pid, (job, gpu) in list(running.items()):
            if job.done():
                del running[pid]
                if gpu is not None:
                    free.append(gpu)
        while queue and len(running) < max_parallel and (free or not gpus):
            pid = queue.pop(0)
            gpu = free.pop(0) if gpus else None
            jobs[pid] = submit(pid, gpu)
            running[pid] = (jobs[pid], gpu)
        if running:
            time.sleep(POLL_S)
    return jobs
