"""benchmarks/gpu.py in its CPU mode: the JSON it writes has every figure, each a sane time."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest

from tests.helpers.measurements import is_measurement

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
PARTS = ("load", "deform", "rasterize", "loss", "backward", "optimizer", "densify")


@pytest.mark.slow
def test_gpu_benchmark_small_on_cpu_writes_sane_json(tiny_capture, tmp_path, monkeypatch, capsys):
    out = tmp_path / "gpu.json"
    argv = ["gpu.py", "--device", "cpu", "--small", "--capture", str(tiny_capture), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(SCRIPT), run_name="__main__")
    result = json.loads(out.read_text())
    assert "train step" in capsys.readouterr().out  # the table is printed
    assert result["device"].startswith("cpu") and result["gaussians"] == 3000
    cases = [("32x48", False), ("32x48", True), ("64x96", False), ("64x96", True)]
    assert [(r["precision"], r["size"], r["cnn"]) for r in result["render"]] == [
        (p, *c) for p in ("float32", "bfloat16") for c in cases
    ]
    for r in result["render"]:
        assert all(is_measurement(r[k]) for k in ("fps", "frame_ms", "deform_ms", "rasterize_ms", "still_ms"))
        assert r["fps"] == pytest.approx(1000 / r["frame_ms"])
        assert (r["psnr_vs_float32"] is None) == (r["precision"] == "float32")
        assert r["precision"] == "float32" or 30 < r["psnr_vs_float32"] < math.inf
    assert "compiled_render" not in result  # torch.compile is measured on CUDA only
    assert [(r["cameras"], r["variant"]) for r in result["train_step"]] == [(1, "eager"), (2, "eager"), (4, "eager")]
    for r in result["train_step"] + result["train_step_small"]:
        assert is_measurement(r["step_ms"]) and is_measurement(r["peak_memory_mb"])
        assert set(r["parts_ms"]) == set(PARTS) and all(is_measurement(v) for v in r["parts_ms"].values())
        assert r["parts_sum_ms"] <= r["step_ms"] and max(r["parts_ms"].values()) <= r["step_ms"]
        assert r["unaccounted_ms"] == pytest.approx(r["step_ms"] - r["parts_sum_ms"])
    d = result["densify"]
    assert d["step"] % 100 == 0 and d["gaussians_before"] == 3000 and is_measurement(d["densify_ms"])
    assert is_measurement(result["graph_ms"])
    assert [r["gaussians"] for r in result["train_step"]] == [3000] * 3
    assert [r["gaussians"] for r in result["train_step_small"]] == [1000]
    profile = Path(result["profile"]).read_text()
    assert "training step" in profile and "aten::" in profile
