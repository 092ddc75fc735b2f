"""`npga fleet plan|run|status|report`: many participants, each prepared, trained, evaluated and submitted by a
job of its own through submitit (a Slurm job array, or processes on this machine), not a scheduler of ours.

`plan` writes the fleet folder: the plan, and each participant's training config and run folder
(npga/fleet/plan.py). `run` submits one job per participant that is not done; a job runs the stages that are
not done (npga/fleet/stages.py), records each one's outcome in the participant's status file, and on a failure
records the error and ends, leaving the other jobs to go on. On Slurm's time-limit or preemption signal training
stops at the end of its step with a checkpoint and submitit requeues the job, which goes on from there.
`status` and `report` read the fleet's files. Format and rules: docs/fleet.md.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import submitit
import tyro
import yaml

from npga.commands import eval as eval_command
from npga.commands import prepare as prepare_command
from npga.commands import submit as submit_command
from npga.config import AtLeast1, OutFolder, check_options, load_config, save_config, to_dict
from npga.data.prepare import PrepareConfig
from npga.fleet.executors import JobOptions, local_gpus, local_parameters, make_executor, run_local
from npga.fleet.plan import FleetLayout, Participant, Plan, read_participants_csv, read_plan, write_plan
from npga.fleet.report import participant_row, write_report
from npga.fleet.stages import (
    DONE,
    FAILED,
    INTERRUPTED,
    SKIPPED,
    STAGES,
    Status,
    next_stage,
    stage_done,
)
from npga.io.lock import folder_lock
from npga.io.untrusted import first_line
from npga.runs import RunLayout
from npga.train import TrainConfig, Trainer, build_trainer, with_steps

# What a user can cause (a bad file, a bad value): its message alone; anything else with its type.
USER_ERRORS = (ValueError, FileNotFoundError, KeyError, OSError)


@dataclass(frozen=True)
class PlanConfig:
    """Make a fleet folder: the participants, each one's training config and run folder."""

    out: OutFolder
    """The fleet folder (planning it again adds new participants; planned ones must keep their config)."""
    captures: tuple[Path, ...] = ()
    """Participant folders (e.g. DATA/nersemble/*): each is a participant named by its folder."""
    participants: Path | None = None
    """A CSV file with columns participant, capture and optionally preset (a training preset for that
    participant instead of --preset); relative paths are the CSV's folder's."""
    preset: Path | None = None
    """The training preset every participant trains with (what `npga train --config` reads); default: the
    training defaults."""
    steps: AtLeast1 | None = None
    """Train this many steps, the schedule scaled to them (a quick pilot); default: the preset's."""
    eval_every: AtLeast1 = 1
    """Score every n-th frame in the eval stage."""
    submit: bool = True
    """Write a NeRSemble benchmark submission for each participant that is a benchmark participant."""


@dataclass(frozen=True)
class RunConfig:
    """Run every participant's stages that are not done, one job each."""

    fleet: tyro.conf.Positional[Path]
    """The fleet folder (`npga fleet plan --out`)."""
    jobs: Annotated[JobOptions, tyro.conf.arg(name="")]
    participants: tuple[str, ...] = ()
    """Only these participants (default: all)."""


@dataclass(frozen=True)
class StatusConfig:
    """Each participant's state, stage, step and hours, from the fleet's files."""

    fleet: tyro.conf.Positional[Path]
    """The fleet folder."""


@dataclass(frozen=True)
class ReportConfig:
    """One row per participant (steps, Gaussians, hours, scores per split, failures): report.csv and report.md."""

    fleet: tyro.conf.Positional[Path]
    """The fleet folder; the report is written into it."""


@dataclass(frozen=True)
class Config:
    command: Annotated[
        Annotated[PlanConfig, tyro.conf.subcommand("plan", prefix_name=False)]
        | Annotated[RunConfig, tyro.conf.subcommand("run", prefix_name=False)]
        | Annotated[StatusConfig, tyro.conf.subcommand("status", prefix_name=False)]
        | Annotated[ReportConfig, tyro.conf.subcommand("report", prefix_name=False)],
        tyro.conf.arg(name=""),
    ]


def main(cfg: Config) -> Any:
    command = cfg.command
    if isinstance(command, PlanConfig):
        return plan(command)
    if isinstance(command, RunConfig):
        return run(command)
    if isinstance(command, StatusConfig):
        return status(command)
    return report(command)


# ---- plan


def plan(cfg: PlanConfig) -> Path:
    layout = FleetLayout(cfg.out)
    rows = [(Path(c).name, Path(c), None) for c in cfg.captures]
    rows += read_participants_csv(cfg.participants) if cfg.participants is not None else []
    if not rows:
        raise ValueError("no participants: name their folders (--captures DATA/*) or a --participants CSV")
    ids = [pid for pid, _, _ in rows]
    twice = sorted({pid for pid in ids if ids.count(pid) > 1})
    if twice:
        raise ValueError(f"participants {twice} are named more than once")
    configs = {
        pid: _train_config(layout, pid, capture, preset or cfg.preset, cfg.steps) for pid, capture, preset in rows
    }
    planned = read_plan(layout) if layout.plan.is_file() else Plan(())
    if planned.participants and (planned.eval_every, planned.submit) != (cfg.eval_every, cfg.submit):
        raise ValueError(
            f"{layout.plan} plans eval_every={planned.eval_every}, submit={planned.submit}; plan again with "
            "the same options, or into another folder"
        )
    for pid, train in configs.items():
        path = layout.train_config(pid)
        if path.is_file() and yaml.safe_load(path.read_text()) != to_dict(train):
            raise ValueError(
                f"{path}: participant {pid} is planned with another training config; remove "
                f"{layout.participant(pid)} to plan it anew"
            )
    for pid, train in configs.items():
        save_config(train, layout.train_config(pid))
    known = {p.id for p in planned.participants}
    new = tuple(Participant(pid, configs[pid].capture) for pid in ids if pid not in known)
    write_plan(layout, Plan(planned.participants + new, eval_every=cfg.eval_every, submit=cfg.submit))
    print(
        f"fleet {layout.root}: {len(known) + len(new)} participants ({len(new)} new); "
        f"run them with `npga fleet run {layout.root} --executor slurm|local|debug`"
    )
    return layout.root


def _train_config(layout: FleetLayout, pid: str, capture: Path, preset: Path | None, steps: int | None) -> TrainConfig:
    if not Path(capture).is_dir():
        raise FileNotFoundError(f"participant {pid}: no capture folder {capture}")
    train = load_config(TrainConfig, preset) if preset is not None else TrainConfig()
    train = dataclasses.replace(train, capture=Path(capture).absolute(), out=layout.run(pid), resume=False)
    train = with_steps(train, steps) if steps is not None else train
    check_options(train)
    return train


# ---- run


def run(cfg: RunConfig) -> None:
    """Submit a job for each participant that is not done; local and debug jobs are waited for, and the run
    exits with an error naming every participant that did not finish."""
    layout = FleetLayout(cfg.fleet)
    fleet = read_plan(layout)
    pids = [fleet.participant(pid).id for pid in cfg.participants] or [p.id for p in fleet.participants]
    todo = [pid for pid in pids if next_stage(layout, pid, Status(layout, pid)) is not None]
    if not todo:
        print(f"all {len(pids)} participants are done; nothing to run (`npga fleet report {layout.root}`)")
        return
    executor = make_executor(layout.jobs, cfg.jobs, len(todo))
    job = ParticipantJob()
    if cfg.jobs.executor == "slurm":
        with executor.batch():
            jobs = {pid: executor.submit(job, str(layout.root), pid) for pid in todo}
        print(
            f"submitted {len(jobs)} jobs to Slurm ({', '.join(j.job_id for j in jobs.values())}); logs in {layout.jobs}"
        )
        print(f"follow them with `npga fleet status {layout.root}`")
        return
    if cfg.jobs.executor == "debug":
        for pid in todo:  # in this process; exception() runs the job without submitit's post-mortem debugger
            error = executor.submit(job, str(layout.root), pid).exception()
            if error is not None:  # recorded in its status file; the other participants go on
                traceback.print_exception(error)
    else:
        gpus = local_gpus(cfg.jobs)
        max_parallel = cfg.jobs.max_parallel or max(1, len(gpus))

        def submit(pid: str, gpu: int | None) -> submitit.Job:
            executor.update_parameters(**local_parameters(cfg.jobs, gpu))
            return executor.submit(job, str(layout.root), pid)

        run_local(submit, todo, max_parallel, gpus)
    rows = _print_status(layout, pids)
    unfinished = [row for row in rows if row["state"] != DONE]
    if unfinished:
        lines = [
            f"{r['participant']} {r['state']} " + (f"({r['error']})" if r["error"] else f"at {r['stage']}")
            for r in unfinished
        ]
        raise SystemExit(
            f"npga fleet: {len(unfinished)} of {len(rows)} participants did not finish: {'; '.join(lines)}"
        )


class Preempted(KeyboardInterrupt):
    """Training stopped at the end of a step, with a checkpoint, because the scheduler's signal came.

    A KeyboardInterrupt, so the trainer saves its checkpoint as it does for Ctrl-C; `hand_over` then calls the
    signal's handler from before training (submitit's: it requeues the job and ends this process)."""

    def __init__(self, signum: int, handler: Any) -> None:
        super().__init__(f"signal {signum}")
        self.signum, self.handler = signum, handler

    def hand_over(self) -> None:
        if callable(self.handler):
            self.handler(self.signum, None)


class StopOnSignal:
    """A training hook: the scheduler's signal (submitit asks Slurm for SIGUSR2, 90 s before the time limit or a
    preemption) stops training at the end of the step it arrives in, so the checkpoint holds whole steps and
    the requeued job ends where an uninterrupted one would."""

    def __init__(self) -> None:
        name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # submitit's setting of the signal
        self.signum = signal.Signals[f"SIG{name}"]
        self.arrived = False
        self.handler: Any = None
        self.active = threading.current_thread() is threading.main_thread()  # signals reach the main thread only

    def __enter__(self) -> StopOnSignal:
        if self.active:
            self.handler = signal.signal(self.signum, self._note)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.active:
            signal.signal(self.signum, self.handler)

    def _note(self, signum: int, frame: object) -> None:
        self.arrived = True

    def after_step(self, trainer: Trainer, out: dict) -> None:
        if self.arrived:
            raise Preempted(self.signum, self.handler)

    def close(self, trainer: Trainer) -> None:
        pass


class ParticipantJob(submitit.helpers.Checkpointable):
    """One participant's stages, as one submitit job. Requeued as it is (Checkpointable's `checkpoint`): the
    stages judge by their outputs what is left to do, so the requeued job goes on where this one stopped."""

    def __call__(self, fleet: str, pid: str) -> str:
        try:
            return run_participant(FleetLayout(fleet), pid)
        except Preempted as e:
            e.hand_over()
            raise


def _job_id() -> str | None:
    try:
        return submitit.JobEnvironment().job_id
    except RuntimeError:  # not in a submitit job
        return None


def one_line(e: BaseException) -> str:
    """An error as the report shows it: a user's error as `npga` prints it, anything else with its type."""
    message = str(e.args[0]) if isinstance(e, KeyError) and e.args else first_line(e)
    return message if isinstance(e, USER_ERRORS) else f"{type(e).__name__}: {message}"


def run_participant(layout: FleetLayout, pid: str) -> str:
    """Run the participant's stages that are not done, each recorded in its status file; returns "done". A
    failing stage records its one-line error and raises (so the scheduler sees the job fail)."""
    fleet = read_plan(layout)
    participant = fleet.participant(pid)
    with folder_lock(layout.participant(pid), "fleet participant"):  # a second job for it ends here
        status = Status(layout, pid)
        for stage in STAGES:
            if stage_done(layout, pid, stage, status):
                continue
            status.start(stage, _job_id())
            start = time.monotonic()
            try:
                fields = STAGE_RUNNERS[stage](layout, fleet, participant, status)
            except (KeyboardInterrupt, SystemExit):  # a signal: submitit's requeue ends the process with SystemExit
                status.end(stage, INTERRUPTED, time.monotonic() - start)
                raise
            except Exception as e:
                status.end(stage, FAILED, time.monotonic() - start, error=one_line(e))
                raise
            status.end(stage, fields.pop("state", DONE), time.monotonic() - start, **fields)
    return DONE


def _prepare(layout: FleetLayout, fleet: Plan, participant: Participant, status: Status) -> dict:
    train = load_config(TrainConfig, layout.train_config(participant.id))
    cache = prepare_command.main(PrepareConfig(capture=train.capture, height=train.height))
    status.set(cache=str(cache))
    return {}


def _train(layout: FleetLayout, fleet: Plan, participant: Participant, status: Status) -> dict:
    train = load_config(TrainConfig, layout.train_config(participant.id))
    train = dataclasses.replace(train, resume=bool(RunLayout(train.out).list_checkpoints()))
    with folder_lock(train.out, "run"):
        trainer = build_trainer(train)
        from_steps = [*status.stage("train").get("from_steps", []), trainer.step]
        status.note("train", from_steps=from_steps)  # the step each start of training began at
        with StopOnSignal() as stop:
            trainer.hooks.append(stop)
            trainer.fit()
    print(f"avatar: {trainer.run.avatar} ({len(trainer.params['means'])} Gaussians, step {trainer.step})")
    return {}


def _eval(layout: FleetLayout, fleet: Plan, participant: Participant, status: Status) -> dict:
    eval_command.main(eval_command.Config(layout.run(participant.id), every=fleet.eval_every))
    return {}


def _submit(layout: FleetLayout, fleet: Plan, participant: Participant, status: Status) -> dict:
    if not fleet.submit:
        return {"state": SKIPPED, "reason": "the fleet was planned with --no-submit"}
    try:
        submit_command.benchmark_target(participant.capture)
    except ValueError:
        return {"state": SKIPPED, "reason": f"{participant.capture.name} is not a NeRSemble benchmark participant"}
    submit_command.main(submit_command.Config(layout.run(participant.id), out=layout.submission(participant.id)))
    return {}


STAGE_RUNNERS = {"prepare": _prepare, "train": _train, "eval": _eval, "submit": _submit}


# ---- status and report


def _print_status(layout: FleetLayout, pids: list[str]) -> list[dict[str, Any]]:
    rows = [participant_row(layout, pid) for pid in pids]
    width = max(len("participant"), *(len(pid) for pid in pids))
    print(f"{'participant':<{width}}  {'state':<11}  {'stage':<7}  {'steps':>8}  {'hours':>6}  error")
    for row in rows:
        steps = "" if row["steps"] is None else row["steps"]
        print(
            f"{row['participant']:<{width}}  {row['state']:<11}  {row['stage']:<7}  {steps:>8}  "
            f"{row['hours']:>6.2f}  {row['error']}"
        )
    counts = {s: sum(r["state"] == s for r in rows) for s in dict.fromkeys(r["state"] for r in rows)}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return rows


def status(cfg: StatusConfig) -> list[dict[str, Any]]:
    layout = FleetLayout(cfg.fleet)
    return _print_status(layout, [p.id for p in read_plan(layout).participants])


def report(cfg: ReportConfig) -> Path:
    layout = FleetLayout(cfg.fleet)
    csv_path, md_path, markdown = write_report(layout, read_plan(layout))
    print(markdown)
    print(f"report: {md_path} and {csv_path}")
    return md_path
