"""Shared fixtures. Tests build their data here; nothing is downloaded."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from npga.data.cache import FrameCache
from npga.data.prepare import PrepareConfig, prepare
from tests.helpers.small_captures import write_capture


def pytest_configure(config: pytest.Config) -> None:
    # Asking NVML whether there is a GPU, not the CUDA runtime: no worker starts CUDA just to collect tests.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests cleanly where CUDA is unavailable (CI is CPU only)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def _cpu_for_modules_without_gpu_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """The same for a module's shared fixtures (a trained avatar built once per module), which pytest sets up
    before any test's own fixtures: they would otherwise train on the GPU, and build gsplat's kernels there."""
    if any("gpu" in item.keywords for item in request.session.items if item.module is request.module):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CUDA_VISIBLE_DEVICES", "")
        mp.setattr(torch.cuda, "is_available", lambda: False)
        yield


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests not marked `gpu` run on the CPU on a GPU machine too: `device: auto` picks the CPU and CLI
    subprocesses see no GPU. They stay deterministic (bit-for-bit resume, exact references), and no test
    worker pays for a CUDA context or for loading gsplat's kernels."""
    if "gpu" in request.keywords:
        return
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


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


@pytest.fixture(scope="session")
def tiny_cache(tiny_capture: Path, tmp_path_factory: pytest.TempPathFactory) -> FrameCache:
    """The tiny capture's frames prepared at full size, in a cache folder of their own; read-only for tests."""
    return FrameCache.open(prepare(PrepareConfig(capture=tiny_capture, out=tmp_path_factory.mktemp("tiny_cache"))))
