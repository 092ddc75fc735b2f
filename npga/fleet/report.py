"""The fleet's report: one row per participant from the files its stages wrote, as CSV and as a Markdown table.

Numbers come from the run folders (steps and Gaussians from the training log's last record, the scores from
`npga eval`'s metrics.json) and hours from the status files, so the report can be made at any time, also
while jobs run, and says what is there. Columns: docs/fleet.md.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from npga.evaluate import METRICS_FILE
from npga.fleet.plan import FleetLayout, Plan
from npga.fleet.stages import SKIPPED, Status, participant_state
from npga.io.atomic import write_text_atomic
from npga.io.plots import read_log
from npga.runs import RunLayout

SCORES = ("psnr", "ssim", "lpips")
DIGITS = {"steps": 0, "gaussians": 0, "hours": 2, "psnr": 2, "ssim": 4, "lpips": 4}


def participant_row(layout: FleetLayout, pid: str) -> dict[str, Any]:
    """The participant's state, size, time and scores (None where a stage has not written them yet)."""
    status = Status(layout, pid)
    state, stage = participant_state(layout, pid, status)
    run = RunLayout(layout.run(pid))
    records = read_log(run.log) if run.log.is_file() else []
    last = records[-1] if records else {}
    row: dict[str, Any] = {
        "participant": pid,
        "state": state,
        "stage": stage or "",
        "steps": last.get("step"),
        "gaussians": last.get("n_gaussians"),
        "hours": status.hours,
    }
    metrics_file = run.eval / METRICS_FILE
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    for split, values in metrics.items():
        if isinstance(values, dict) and "psnr" in values:
            row |= {f"{split}_{m}": values.get(m) for m in SCORES}
    submit = status.stage("submit")
    if submit.get("state") == SKIPPED:
        row["submission"] = f"skipped: {submit.get('reason', '')}"
    else:
        row["submission"] = str(layout.submission(pid)) if layout.submission(pid).is_file() else ""
    error = status.error
    row["error"] = f"{error['stage']}: {error['message']}" if error else ""
    return row


def report_rows(layout: FleetLayout, plan: Plan) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one row per participant in the plan's order); splits appear in the order eval wrote them."""
    rows = [participant_row(layout, p.id) for p in plan.participants]
    scores = list(dict.fromkeys(k for row in rows for k in row if k.rsplit("_", 1)[-1] in SCORES))
    columns = ["participant", "state", "stage", "steps", "gaussians", "hours", *scores, "submission", "error"]
    return columns, rows


def mean_sd(values: list[float | None]) -> tuple[float, float | None] | None:
    """Mean and sample standard deviation (n - 1; None for a single value) of the values that are there."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
    return mean, sd


def to_csv(columns: list[str], rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: "" if row.get(c) is None else row[c] for c in columns} for row in rows)
    return out.getvalue()


def to_markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """The table, a last row of mean ± sd over the participants that have each number, and the failures."""
    numeric = [c for c in columns if c in ("steps", "gaussians", "hours") or c.rsplit("_", 1)[-1] in SCORES]
    shown = [c for c in columns if c != "error"]

    def cell(column: str, value: Any) -> str:
        if value is None or value == "":
            return ""
        digits = DIGITS.get(column.rsplit("_", 1)[-1])
        return f"{value:.{digits}f}" if digits is not None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(shown) + " |", "|" + "|".join("---" for _ in shown) + "|"]
    lines += ["| " + " | ".join(cell(c, row.get(c)) for c in shown) + " |" for row in rows]
    summary = []
    for c in shown:
        stats = mean_sd([row.get(c) for row in rows]) if c in numeric else None
        summary.append("" if stats is None else " ± ".join(cell(c, v) for v in stats if v is not None))
    summary[0] = "mean ± sd"
    lines.append("| " + " | ".join(summary) + " |")
    failures = [row for row in rows if row.get("error")]
    if failures:
        lines += ["", "Failures:", ""]
        lines += [f"- {row['participant']}: {row['error']}" for row in failures]
    return "\n".join(lines) + "\n"


def write_report(layout: FleetLayout, plan: Plan) -> tuple[Path, Path, str]:
    """report.csv and report.md in the fleet folder; returns their paths and the Markdown."""
    columns, rows = report_rows(layout, plan)
    markdown = to_markdown(columns, rows)
    write_text_atomic(layout.report_csv, to_csv(columns, rows))
    write_text_atomic(layout.report_md, markdown)
    return layout.report_csv, layout.report_md, markdown
