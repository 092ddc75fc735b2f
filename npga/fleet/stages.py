"""A participant's stages, what makes each one done, and the status file that records what ran.

A stage is done when its outputs are there (the rules: docs/fleet.md), never because a job said so: a rerun, or
a job requeued after a preemption, skips finished work and picks up the rest, and deleting a stage's outputs is
how to run it again. The status file (`participants/ID/status.json`) records what the outputs cannot: which
stage runs or failed and why, the hours each took, the frame cache `prepare` made, why `submit` was skipped.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from npga.data.cache import read_manifest
from npga.evaluate import INFO_FILE
from npga.fleet.plan import FleetLayout
from npga.io.atomic import write_text_atomic
from npga.runs import RunLayout

STAGES = ("prepare", "train", "eval", "submit")
RUNNING, DONE, FAILED, INTERRUPTED, SKIPPED = "running", "done", "failed", "interrupted", "skipped"
PENDING = "pending"  # a participant none of whose stages has started


def planned_steps(layout: FleetLayout, pid: str) -> int:
    """The step count of the participant's training config (a plain read: no trainer is imported)."""
    path = layout.train_config(pid)
    try:
        steps = (yaml.safe_load(path.read_text()) or {}).get("steps")
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a readable training config ({e})") from None
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{path}: steps is {steps!r}, not a positive integer")
    return steps


class Status:
    """A participant's status file, read once and written through after every change."""

    def __init__(self, layout: FleetLayout, pid: str) -> None:
        self.path = layout.status(pid)
        self.data: dict[str, Any] = {"stages": {}, "error": None}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise ValueError(f"{self.path}: not a readable status file ({e}); delete it to start afresh") from None

    def stage(self, stage: str) -> dict[str, Any]:
        return self.data["stages"].get(stage, {})

    @property
    def error(self) -> dict[str, str] | None:
        """{"stage", "message"} of the failure that ended the participant's last job, else None."""
        return self.data.get("error")

    @property
    def hours(self) -> float:
        """The wall time its stages took, summed over every job that ran them."""
        return sum(s.get("seconds", 0.0) for s in self.data["stages"].values()) / 3600

    def start(self, stage: str, job: str | None) -> None:
        entry = self.data["stages"].setdefault(stage, {"seconds": 0.0, "runs": 0})
        entry.update(state=RUNNING, started=_now())
        entry["runs"] += 1
        self.data.update(error=None, job=job, host=socket.gethostname(), pid=os.getpid())
        self.save()

    def end(self, stage: str, state: str, seconds: float, error: str | None = None, **fields: Any) -> None:
        """The stage ended `state` after `seconds`; a failure's one-line `error` becomes the participant's."""
        entry = self.data["stages"].setdefault(stage, {"seconds": 0.0, "runs": 0})
        entry.update(state=state, finished=_now(), **fields)
        entry["seconds"] += seconds
        if error is not None:
            self.data["error"] = {"stage": stage, "message": error}
        self.save()

    def note(self, stage: str, **fields: Any) -> None:
        self.data["stages"].setdefault(stage, {"seconds": 0.0, "runs": 0}).update(fields)
        self.save()

    def set(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        write_text_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def stage_done(layout: FleetLayout, pid: str, stage: str, status: Status) -> bool:
    """Whether the stage's outputs are there (docs/fleet.md lists the rules)."""
    run = RunLayout(layout.run(pid))
    if stage == "prepare":
        return _cache_complete(status.data.get("cache"))
    if stage == "train":
        return run.checkpoint(planned_steps(layout, pid)).is_file() and run.avatar.is_file()
    if stage == "eval":
        return _evaluated_step(run.eval / INFO_FILE) == planned_steps(layout, pid)
    if stage == "submit":
        return status.stage("submit").get("state") == SKIPPED or layout.submission(pid).is_file()
    raise ValueError(f"no stage {stage!r} (stages: {STAGES})")


def _cache_complete(cache: str | None) -> bool:
    try:
        manifest = read_manifest(Path(cache)) if cache else None
    except ValueError:  # a damaged manifest: prepare again (it says what it finds)
        return False
    return manifest is not None and all(e["complete"] for e in manifest["sequences"].values())


def _evaluated_step(info: Path) -> int | None:
    try:
        return json.loads(info.read_text()).get("step")
    except (OSError, ValueError, AttributeError):
        return None


def next_stage(layout: FleetLayout, pid: str, status: Status) -> str | None:
    """The first stage that is not done, None when all are."""
    return next((s for s in STAGES if not stage_done(layout, pid, s, status)), None)


def participant_state(layout: FleetLayout, pid: str, status: Status) -> tuple[str, str | None]:
    """(state, its stage): done (None), failed / interrupted / running at a stage, or pending at the first."""
    stage = next_stage(layout, pid, status)
    if stage is None:
        return DONE, None
    if status.error is not None:
        return FAILED, status.error["stage"]
    state = status.stage(stage).get("state")
    return (state, stage) if state in (RUNNING, INTERRUPTED) else (PENDING, stage)
