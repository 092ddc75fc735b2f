"""The fleet folder and its plan file: who the participants are and where each one's config, run and results live.

The only module that spells a file name inside a fleet folder (as `npga/runs.py` is for a run folder). Paths in
the plan are absolute, so a job finds them from whatever folder a cluster starts it in.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from npga.io.atomic import write_text_atomic

PLAN_FORMAT = 1
# A participant id names its folder: letters, digits, '.', '_', '-', not starting with a dot.
PARTICIPANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
CSV_COLUMNS = ("participant", "capture", "preset")  # the last one optional


@dataclass(frozen=True)
class FleetLayout:
    """Paths inside one fleet folder; it computes paths and touches no file."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def plan(self) -> Path:
        return self.root / "fleet.json"

    @property
    def jobs(self) -> Path:
        """submitit's folder: each job's pickles and logs."""
        return self.root / "jobs"

    @property
    def report_csv(self) -> Path:
        return self.root / "report.csv"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    def participant(self, pid: str) -> Path:
        return self.root / "participants" / pid

    def train_config(self, pid: str) -> Path:
        """The participant's complete training config (what `npga train --config` reads)."""
        return self.participant(pid) / "train.yaml"

    def run(self, pid: str) -> Path:
        """The participant's run folder (`npga train --out`)."""
        return self.participant(pid) / "run"

    def status(self, pid: str) -> Path:
        return self.participant(pid) / "status.json"

    def submission(self, pid: str) -> Path:
        return self.participant(pid) / "submission.zip"


@dataclass(frozen=True)
class Participant:
    id: str
    capture: Path


@dataclass(frozen=True)
class Plan:
    """What every job of the fleet does: the participants, and the options of the stages after training."""

    participants: tuple[Participant, ...]
    eval_every: int = 1
    submit: bool = True

    def participant(self, pid: str) -> Participant:
        for p in self.participants:
            if p.id == pid:
                return p
        raise ValueError(f"no participant {pid!r} in the fleet (participants: {[p.id for p in self.participants]})")


def check_participant_id(pid: str, where: str) -> str:
    if not PARTICIPANT_ID.fullmatch(pid):
        raise ValueError(f"{where}: participant id {pid!r} is not a folder name (letters, digits, '.', '_', '-')")
    return pid


def write_plan(layout: FleetLayout, plan: Plan) -> Path:
    data = {
        "format": PLAN_FORMAT,
        "eval_every": plan.eval_every,
        "submit": plan.submit,
        "participants": [{"id": p.id, "capture": str(p.capture)} for p in plan.participants],
    }
    return write_text_atomic(layout.plan, json.dumps(data, indent=2) + "\n")


def read_plan(layout: FleetLayout) -> Plan:
    path = layout.plan
    if not path.is_file():
        raise FileNotFoundError(
            f"{layout.root}: no {path.name}; make the fleet with `npga fleet plan --out {layout.root}`"
        )
    try:
        data = json.loads(path.read_text())
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this npga reads {PLAN_FORMAT}")
        participants = tuple(
            Participant(check_participant_id(str(p["id"]), str(path)), Path(p["capture"])) for p in data["participants"]
        )
        return Plan(participants, eval_every=int(data["eval_every"]), submit=bool(data["submit"]))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a fleet plan ({type(e).__name__}: {e})") from None


def read_participants_csv(path: str | os.PathLike) -> list[tuple[str, Path, Path | None]]:
    """(id, capture, preset or None) of each row of a participants CSV; relative paths are the CSV's folder's."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"participants file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS[:2] if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {missing} (columns: {', '.join(CSV_COLUMNS)}; preset is optional)")
        rows = []
        for line, row in enumerate(reader, start=2):
            pid = check_participant_id((row["participant"] or "").strip(), f"{path}:{line}")
            capture, preset = ((row.get(k) or "").strip() for k in ("capture", "preset"))
            if not capture:
                raise ValueError(f"{path}:{line}: participant {pid} has no capture folder")
            rows.append((pid, path.parent / capture, path.parent / preset if preset else None))
    return rows
