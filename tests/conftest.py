"""Shared fixtures. Tests build their data here; nothing is downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from small_captures import write_capture


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests cleanly where CUDA is unavailable (CI is CPU only)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _copied(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(src, tmp_path / src.name))


@pytest.fixture(scope="session")
def _bench_capture_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_capture(tmp_path_factory.mktemp("bench") / "capture", layout="benchmark")


@pytest.fixture
def bench_capture(_bench_capture_src: Path, tmp_path: Path) -> Path:
    """A small benchmark-layout capture (3 cameras, 2 sequences, 6 frames of 32 x 48), the test's own copy."""
    return _copied(_bench_capture_src, tmp_path)


@pytest.fixture(scope="session")
def _raw_capture_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_capture(tmp_path_factory.mktemp("raw") / "capture", layout="raw", size=(44, 64), sequences=("FREE",))


@pytest.fixture
def raw_capture(_raw_capture_src: Path, tmp_path: Path) -> Path:
    """A small raw NeRSemble v2 capture (shared 2200 x 3208 intrinsics, 44 x 64 videos), the test's own copy."""
    return _copied(_raw_capture_src, tmp_path)


@pytest.fixture(scope="session")
def tiny_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic `tiny` preset (16 cameras, 2 sequences x 4 frames, 48 px tall); read-only for tests."""
    from data_tools.synth import SynthConfig, synthesize

    return synthesize(SynthConfig(out=tmp_path_factory.mktemp("synth") / "capture", preset="tiny"))
