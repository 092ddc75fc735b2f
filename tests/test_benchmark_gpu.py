"""benchmarks/gpu.py in its CPU mode: the JSON it writes has every figure, each a sane time."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
PARTS = ("load", "deform", "rasterize", "loss", "backward", "optimizer", "densify")


def _time(v: float) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


@pytest.mark.slow
def test_gpu_benchmark_small_on_cpu_writes_sane_json(tiny_capture, tmp_path, monkeypatch, capsys):
    out = tmp_path / "gpu.json"
    argv = ["gpu.py", "--device", "cpu", "--small", "--capture", str(tiny_capture), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    result = json.loads(out.read_text())
    assert "train step" in capsys.readouterr().out  # the table is printed
    assert result["device"].startswith("cpu") and result["gaussians"] == 3000
    assert [(r["size"], r["cnn"]) for r in result["render"]] == [
        ("32x48", False), ("32x48", True), ("64x96", False), ("64x96", True)]  # fmt: skip
    for r in result["render"]:
        assert all(_time(r[k]) for k in ("fps", "frame_ms", "deform_ms", "rasterize_ms"))
        assert r["fps"] == pytest.approx(1000 / r["frame_ms"])
    assert [r["cameras"] for r in result["train_step"]] == [1, 2, 4]
    for r in result["train_step"]:
        assert r["gaussians"] == 3000 and _time(r["step_ms"]) and _time(r["peak_memory_mb"])
        assert set(r["parts_ms"]) == set(PARTS) and all(_time(v) for v in r["parts_ms"].values())
        assert r["parts_sum_ms"] <= r["step_ms"] and max(r["parts_ms"].values()) <= r["step_ms"]
        assert r["unaccounted_ms"] == pytest.approx(r["step_ms"] - r["parts_sum_ms"])
    d = result["densify"]
    assert d["step"] % 100 == 0 and d["gaussians_before"] == 3000 and _time(d["densify_ms"])
    assert _time(result["graph_ms"])
