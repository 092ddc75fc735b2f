"""benchmarks/tracking.py's measures: the shares of each gap that refinement and the refits close."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tracking.py"


@pytest.fixture
def targets(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # it imports its sibling ablation.py, as when run as a script
    return runpy.run_path(str(SCRIPT))["targets"]


def _row(name: str, **mean: float) -> dict:
    return {"row": name, "seeds": [0], "mean": mean, "std": dict.fromkeys(mean)}


def test_targets_are_the_shares_of_each_gap_closed(targets):
    table = [
        _row(
            "capture tracking",
            **{"cam PSNR": 33.0, "seq PSNR": 32.0, "seq PSNR, refit": 32.5},
            **{"seq PSNR, true tracking": 33.0},
        ),
        _row(
            "refined",
            **{"cam PSNR": 33.6, "seq PSNR": 32.2, "seq PSNR, refit": 32.8, "seq PSNR, true tracking": 33.2},
            **{"played rotation deg": 0.06, "capture rotation deg": 0.2},
            **{"played position mm": 0.1, "capture position mm": 0.25},
        ),
        _row(
            "refined + training refit",
            **{"cam PSNR": 33.8, "seq PSNR": 32.1},
            **{"played rotation deg": 0.05, "capture rotation deg": 0.2},
            **{"played position mm": 0.05, "capture position mm": 0.25},
        ),
        _row("oracle", **{"cam PSNR": 34.0, "seq PSNR": 33.0}),
    ]
    out = targets(table)
    # (refined - capture) / (oracle - capture): 0.6 / 1.0 on the cameras, 0.2 / 1.0 on the sequence
    assert out["refined: cam PSNR: oracle gap closed"] == pytest.approx(0.6)
    assert out["refined: seq PSNR: oracle gap closed"] == pytest.approx(0.2)
    assert out["refined + training refit: cam PSNR: oracle gap closed"] == pytest.approx(0.8)
    assert out["refined + training refit: seq PSNR: oracle gap closed"] == pytest.approx(0.1)
    # (refit - as tracked) / (true tracking - as tracked), per row that has both
    assert out["capture tracking: held-out sequence gap to its true tracking closed by the refit"] == pytest.approx(0.5)
    assert out["refined: held-out sequence gap to its true tracking closed by the refit"] == pytest.approx(0.6)
    assert "oracle: held-out sequence gap to its true tracking closed by the refit" not in out
    assert out["refined: training poses' rotation error / the capture's"] == pytest.approx(0.3)
    assert out["refined: training poses' position error / the capture's"] == pytest.approx(0.4)
    assert out["refined + training refit: training poses' rotation error / the capture's"] == pytest.approx(0.25)
    assert out["refined + training refit: training poses' position error / the capture's"] == pytest.approx(0.2)


def test_no_gap_gives_no_share(targets):
    table = [
        _row("capture tracking", **{"cam PSNR": 34.0, "seq PSNR": 33.0}),
        _row("refined", **{"cam PSNR": 34.1, "seq PSNR": 33.0}),
        _row("oracle", **{"cam PSNR": 34.0, "seq PSNR": 32.9}),
    ]
    out = targets(table)
    assert out["refined: cam PSNR: oracle gap closed"] != out["refined: cam PSNR: oracle gap closed"]  # nan
    assert set(out) == {"refined: cam PSNR: oracle gap closed", "refined: seq PSNR: oracle gap closed"}
