"""What refining the tracking in training buys: the demo avatar trained on the capture's (noisy) tracking, with
`--refine-tracking`, and on the true tracking (the oracle), scored like the ablation's rows.

Rows: "capture tracking" (the preset without refinement), "refined" (`--refine-tracking`), "refined + training refit"
(and `--refit-tracking`: the training frames fitted anew to all their cameras after training) and "oracle"
(`--tracking true`: trained, and so scored, with the codes and poses that rendered the frames). Each is scored on
the held-out cameras (training sequences: each avatar plays them with its own tracking, refined where it was) and
on the held-out sequence three ways: with the capture's tracking (the oracle: the true one), after `npga eval
--refine-tracking` (codes and poses fitted to the training cameras' frames; `--no-refit` skips it) and, on a
synthetic capture, with the true tracking (what a perfect fit would give). On a synthetic capture the table also
gives the training frames' pose error against the truth (mean over frames, after removing the one rigid offset the
gauge allows), the share of the capture-vs-oracle gap that refinement in training closes, and the share of the
capture-vs-truth gap of the held-out sequence that the refit closes. Single runs differ by 0.1-0.2 dB:
`--seeds 0 1 2`.

.venv/bin/python benchmarks/tracking.py [--capture data/demo] [--config configs/demo.yaml] [--steps 1000]
    [--seeds 0 1 2] [--every 2] [--jobs 1] [--threads 2] [--rows ROW ...] [--no-refit]
    [--out benchmarks/out/tracking]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
from ablation import Scoring, held_out_regions, summarize, trained_rows

from npga.avatar.file import load_avatar
from npga.commands.distill import Config as DistillCommand
from npga.commands.distill import main as run_distill
from npga.config import load_config
from npga.data.layout import ParticipantLayout
from npga.data.prepare import open_or_prepare
from npga.data.tracking import Tracking, pose_errors
from npga.runs import RunLayout
from npga.train import TrainConfig, with_steps

MM = 1000.0  # head units of the synthetic head (metre-like) to millimetres


REFINED, REFITTED = "refined", "refined + training refit"


def rows(base: TrainConfig) -> dict[str, TrainConfig]:
    return {
        "capture tracking": dataclasses.replace(base, refine_tracking=False, refit_tracking=False),
        REFINED: dataclasses.replace(base, refine_tracking=True, refit_tracking=False),
        REFITTED: dataclasses.replace(base, refine_tracking=True, refit_tracking=True),
        "oracle": dataclasses.replace(base, tracking="true", refine_tracking=False, refit_tracking=False),
    }


def training_pose_errors(run: Path, capture: Path) -> dict[str, float]:
    """Mean rotation (degrees) and position (mm) error against the truth of every training frame's pose, as the
    avatar plays it and as the capture tracked it, up to one rigid offset for the whole capture (the gauge)."""
    avatar = load_avatar(RunLayout(run).avatar)
    layout = ParticipantLayout(capture)
    motions = [avatar.motions[s] for s in avatar.split.train_sequences]
    truth = np.concatenate([Tracking.load(layout.true_tracking(s)).head_poses for s in avatar.split.train_sequences])
    played = np.concatenate([m.head_pose.double().numpy() for m in motions])
    given = np.concatenate([(m.tracked_head_pose if m.refined else m.head_pose).double().numpy() for m in motions])
    out = {}
    for name, poses in (("played", played), ("capture", given)):
        rotation, position = pose_errors(truth, poses)
        out |= {f"{name} rotation deg": float(np.degrees(rotation.mean())), f"{name} position mm": MM * position.mean()}
    return out


def share_closed(worse: float, better: float, bound: float) -> float:
    """The share of the gap from `worse` to `bound` that `better` closes (nan when there is no gap)."""
    gap = bound - worse
    return (better - worse) / gap if gap > 0 else float("nan")


def targets(table: list[dict]) -> dict[str, float]:
    """The issue's measures from the table's means: the shares of the capture-vs-oracle gaps that refinement in
    training closes, of each row's held-out-sequence gap to its true tracking that the refit closes, and the
    refined training poses' error relative to the capture's."""
    means = {t["row"]: t["mean"] for t in table}
    out = {}
    for name in (REFINED, REFITTED):
        if {"capture tracking", name, "oracle"} <= set(means):
            capture, refined, oracle = means["capture tracking"], means[name], means["oracle"]
            for split in ("cam PSNR", "seq PSNR"):
                out[f"{name}: {split}: oracle gap closed"] = share_closed(capture[split], refined[split], oracle[split])
    for name, m in means.items():
        if "seq PSNR, refit" in m and "seq PSNR, true tracking" in m:
            closed = share_closed(m["seq PSNR"], m["seq PSNR, refit"], m["seq PSNR, true tracking"])
            out[f"{name}: held-out sequence gap to its true tracking closed by the refit"] = closed
    for name in (REFINED, REFITTED):
        r = means.get(name, {})
        if "capture rotation deg" in r:
            for kind, unit in (("rotation", "deg"), ("position", "mm")):
                out[f"{name}: training poses' {kind} error / the capture's"] = (
                    r[f"played {kind} {unit}"] / r[f"capture {kind} {unit}"]
                )
    return out


def print_table(table: list[dict]) -> None:
    heads = ["cam PSNR", "seq PSNR", "seq PSNR, refit", "seq PSNR, true tracking"]
    heads += ["played rotation deg", "played position mm"]
    print(f"\n{'row':<18} {'seeds':>5} " + " ".join(f"{h:>24}" for h in heads))
    for t in table:
        cells = []
        for h in heads:
            mean, std = t["mean"].get(h), t["std"].get(h)
            digits = 2 if "PSNR" in h else 3
            cells.append(
                "n/a" if mean is None else f"{mean:.{digits}f}" + ("" if std is None else f"±{std:.{digits}f}")
            )
        print(f"{t['row']:<18} {len(t['seeds']):>5} " + " ".join(f"{c:>24}" for c in cells))
    for what, share in targets(table).items():
        print(f"{what}: {share:.0%}")


def with_pose_errors(table: list[dict], results: list[dict]) -> list[dict]:
    """`summarize`'s table with each row's pose errors (mean and sample deviation over seeds) added."""
    for t in table:
        runs = [r for r in results if r["row"] == t["row"] and "pose" in r]
        for key in runs[0]["pose"] if runs else ():
            values = [r["pose"][key] for r in runs]
            t["mean"][key] = float(np.mean(values))
            t["std"][key] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--config", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--steps", type=int, default=1000, help="the preset's schedule stretched to N steps")
    parser.add_argument("--every", type=int, default=2, help="score every n-th frame")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=1, help="rows trained at once (after one shared distillation)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per row")
    parser.add_argument("--rows", nargs="+", default=None, help="train only these rows (names as in the table)")
    parser.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score the held-out sequence after `npga eval --refine-tracking`",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/tracking"))
    args = parser.parse_args()
    base = with_steps(dataclasses.replace(load_config(TrainConfig, args.config), capture=args.capture), args.steps)
    if args.rows is not None and (unknown := set(args.rows) - set(rows(base))):
        parser.error(f"unknown rows {sorted(unknown)}; the rows are {list(rows(base))}")
    selected = {name: cfg for name, cfg in rows(base).items() if args.rows is None or name in args.rows}
    runs = [
        (name, dataclasses.replace(cfg, seed=seed, out=args.out / f"{name.replace(' ', '_')}_seed{seed}"))
        for name, cfg in selected.items()
        for seed in args.seeds
    ]
    synthetic = ParticipantLayout(args.capture).true_tracking(base.heldout_sequences[0]).is_file()
    shared_field = RunLayout(args.out / "distilled")  # from the capture's tracking, shared by every row
    if not shared_field.distill.is_file():
        run_distill(DistillCommand(args.capture, shared_field.root, base.distill, base.device))
    cache = open_or_prepare(args.capture, base.height)
    seq = base.heldout_sequences[0]
    regions = held_out_regions(args.capture, cache, seq, args.every)
    scoring = Scoring(args.every, regions, refit=args.refit, true_tracking=args.capture if synthetic else None)

    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []

    def write() -> None:  # after every finished run, so a run killed from outside loses only itself
        table = with_pose_errors(summarize(results, list(selected)), results)
        summary = {"capture": str(args.capture), "config": str(args.config), "steps": args.steps}
        summary |= {"every": args.every, "seeds": args.seeds, "summary": table, "targets": targets(table)}
        summary["rows"] = results
        (args.out / "tracking.json").write_text(json.dumps(summary, indent=2))

    for row in trained_rows(runs, scoring, shared_field, args.jobs, args.threads):
        if synthetic:
            row["pose"] = training_pose_errors(Path(row["run"]), args.capture)
        results.append(row)
        write()
    print_table(with_pose_errors(summarize(results, list(selected)), results))
    print(f"wrote {args.out / 'tracking.json'}")
    if len(results) < len(runs):
        raise SystemExit(f"{len(runs) - len(results)} of {len(runs)} runs failed")


if __name__ == "__main__":
    main()
