"""benchmarks/ablation.py's table over seeds: means, spreads and each row's change from the one before."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


def _run(row: str, seed: int, seq_psnr: float, mouth: float) -> dict:
    return {
        "row": row,
        "seed": seed,
        "heldout_sequences": {"psnr": seq_psnr, "ssim": 0.9},
        "heldout_cameras": {"psnr": seq_psnr + 1.0, "ssim": 0.95},
        "regions": {"mouth": mouth},
    }


def test_summary_averages_each_row_over_its_seeds_in_table_order():
    summarize = runpy.run_path(str(SCRIPT))["summarize"]
    # Finished out of order, as the worker pool returns them; "+ detail MLP" has no run (it failed).
    results = [
        _run("+ Laplacian", 1, 33.4, 23.0),
        _run("+ coarse field", 0, 33.0, 21.0),
        _run("+ Laplacian", 0, 33.0, 22.0),
        _run("+ coarse field", 1, 32.8, 21.0),
        _run("+ latent features", 0, 33.1, 22.0),
    ]
    table = summarize(results, ["+ coarse field", "+ detail MLP", "+ latent features", "+ Laplacian"])
    assert [t["row"] for t in table] == ["+ coarse field", "+ latent features", "+ Laplacian"]
    coarse, latent, full = table
    assert full["seeds"] == [0, 1]
    assert full["mean"]["seq PSNR"] == pytest.approx(33.2) and full["mean"]["cam PSNR"] == pytest.approx(34.2)
    assert full["std"]["seq PSNR"] == pytest.approx(0.4 / 2**0.5)  # sample deviation of two values 0.4 apart
    assert full["mean"]["mouth"] == pytest.approx(22.5) and coarse["std"]["mouth"] == pytest.approx(0.0)
    assert coarse["seq PSNR vs previous row"] is None
    assert latent["seq PSNR vs previous row"] == pytest.approx(33.1 - 32.9)
    assert full["seq PSNR vs previous row"] == pytest.approx(33.2 - 33.1)


def test_summary_of_one_seed_has_no_spread():
    summarize = runpy.run_path(str(SCRIPT))["summarize"]
    (row,) = summarize([_run("static", 0, 30.0, 18.0)], ["static"])
    assert row["mean"]["seq PSNR"] == 30.0 and row["std"]["seq PSNR"] is None
