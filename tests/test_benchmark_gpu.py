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
    cases = [("32x48", False), ("32x48", True), ("64x96", False), ("64x96", True)]
    assert [(r["precision"], r["size"], r["cnn"]) for r in result["render"]] == [
        (p, *c) for p in ("float32", "bfloat16") for c in cases
    ]
    for r in result["render"]:
        assert all(_time(r[k]) for k in ("fps", "frame_ms", "deform_ms", "rasterize_ms", "still_ms"))
        assert r["fps"] == pytest.approx(1000 / r["frame_ms"])
        assert (r["psnr_vs_float32"] is None) == (r["precision"] == "float32")
        assert r["precision"] == "float32" or 30 < r["psnr_vs_float32"] < math.inf
    assert "compiled_render" not in result  # torch.compile is measured on CUDA only
    assert [(r["cameras"], r["variant"]) for r in result["train_step"]] == [(1, "eager"), (2, "eager"), (4, "eager")]
    for r in result["train_step"] + result["train_step_small"]:
        assert _time(r["step_ms"]) and _time(r["peak_memory_mb"])
        assert set(r["parts_ms"]) == set(PARTS) and all(_time(v) for v in r["parts_ms"].values())
        assert r["parts_sum_ms"] <= r["step_ms"] and max(r["parts_ms"].values()) <= r["step_ms"]
        assert r["unaccounted_ms"] == pytest.approx(r["step_ms"] - r["parts_sum_ms"])
    d = result["densify"]
    assert d["step"] % 100 == 0 and d["gaussians_before"] == 3000 and _time(d["densify_ms"])
    assert _time(result["graph_ms"])
    assert [r["gaussians"] for r in result["train_step"]] == [3000] * 3
    assert [r["gaussians"] for r in result["train_step_small"]] == [1000]
    profile = Path(result["profile"]).read_text()
    assert "training step" in profile and "aten::" in profile


@pytest.mark.slow
def test_train_overhead_trains_with_and_without_the_hooks(tiny_capture, tmp_path, monkeypatch, capsys):
    script = SCRIPT.with_name("train_overhead.py")
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
    runpy.run_path(str(script), run_name="__main__")
    result = json.loads(out.read_text())
    assert "% of the training's wall time" in capsys.readouterr().out
    assert result["steps"] == 12 and all(_time(result[k]) for k in ("build_s", "fit_with_hooks_s", "fit_steps_only_s"))
    assert result["steps_share"] == pytest.approx(result["fit_steps_only_s"] / result["fit_with_hooks_s"])
    work = tmp_path / "train_overhead_work"
    assert (work / "hooks" / "logs" / "train.jsonl").is_file()  # the hooks ran in the first run only
    assert not (work / "bare" / "logs" / "train.jsonl").exists()
    assert (work / "bare" / "checkpoints").is_dir()
