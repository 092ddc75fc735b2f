"""benchmarks/train_overhead.py: the same training timed with its hooks and without them."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from tests.helpers.measurements import is_measurement

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_overhead.py"


@pytest.mark.slow
def test_train_overhead_trains_with_and_without_the_hooks(tiny_capture, tmp_path, monkeypatch, capsys):
    out = tmp_path / "overhead.json"
    argv = [
        "train_overhead.py",
        "--config",
        str(SCRIPT.parents[1] / "configs" / "tiny.yaml"),
        "--capture",
        str(tiny_capture),
        "--device",
        "cpu",
        "--steps",
        "12",
        "--out",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    result = json.loads(out.read_text())
    assert "% of the training's wall time" in capsys.readouterr().out
    assert result["steps"] == 12 and all(
        is_measurement(result[k]) for k in ("build_s", "fit_with_hooks_s", "fit_steps_only_s")
    )
    assert result["steps_share"] == pytest.approx(result["fit_steps_only_s"] / result["fit_with_hooks_s"])
    work = tmp_path / "train_overhead_work"
    assert (work / "hooks" / "logs" / "train.jsonl").is_file()  # the hooks ran in the first run only
    assert not (work / "bare" / "logs" / "train.jsonl").exists()
    assert (work / "bare" / "checkpoints").is_dir()
