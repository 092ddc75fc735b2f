"""What the commands that start from an avatar share: where it runs, loading it, and finding the frames it was
trained on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import tyro

from npga.avatar.file import load_avatar
from npga.avatar.model import Avatar
from npga.avatar.precision import Precision, resolve_precision
from npga.cameras import Camera
from npga.config import DeviceName, resolve_device
from npga.data.cache import FrameCache, read_manifest
from npga.data.tracking import Tracking
from npga.evaluate import Renderer
from npga.runs import avatar_path


@dataclass(frozen=True)
class RuntimeOptions:
    """Where an avatar runs and what its networks draw in: the same two choices in every command that draws one."""

    device: DeviceName = "auto"
    """Where the avatar runs; auto: CUDA when available."""
    precision: Precision = "auto"
    """What the avatar's networks draw in: auto is bfloat16 on a GPU (up to 1.25x faster at 250k Gaussians on an
    H100, -0.005 dB on the demo) and on a CPU with bfloat16 units (AMX or AVX-512 BF16), float32 elsewhere; tf32
    is CUDA only. `npga eval --precision` shows what a format costs in PSNR."""


Runtime = Annotated[RuntimeOptions, tyro.conf.arg(name="")]
"""A command's `RuntimeOptions` field: its flags stay `--device` and `--precision` (no `--runtime.` prefix)."""


def open_avatar(path: Path, device: str, precision: Precision = "float32") -> tuple[Path, Avatar]:
    """(the avatar file, the avatar) for an avatar file or a run folder, its networks drawing in `precision`."""
    file = avatar_path(path)
    avatar = load_avatar(file, resolve_device(device))
    avatar.precision = resolve_precision(precision, avatar.device)
    return file, avatar


def trained_capture(avatar: Avatar, capture: Path | None) -> Path:
    """The capture folder the avatar was trained on, or `capture` when it moved."""
    if capture is not None:
        return Path(capture)
    if not avatar.provenance.get("capture"):
        raise ValueError("the avatar records no capture it was trained on; pass --capture")
    return Path(avatar.provenance["capture"])


def open_training_cache(file: Path, avatar: Avatar, capture: Path | None) -> FrameCache:
    """The frame cache the avatar was trained on; with `capture` (the capture moved), the cache of the same
    size inside it. No capture check runs here: `npga prepare` did them when it made the cache."""
    if not avatar.provenance.get("cache"):
        raise ValueError(f"{file} records no frame cache it was trained on; its ground truth cannot be found")
    recorded = Path(avatar.provenance["cache"])
    if capture is None:
        if read_manifest(recorded) is None:
            raise FileNotFoundError(
                f"{file} was trained on the frames in {recorded}, which do not exist (any more); "
                "pass --capture with the capture's new location"
            )
        return FrameCache.open(recorded)
    cache = Path(capture) / "cache" / recorded.name
    if read_manifest(cache) is None:
        height = recorded.name.split("x")[-1]
        raise FileNotFoundError(
            f"{capture}: no frame cache {cache.name} (the size {file} was trained at); run "
            f"`npga prepare --capture {capture} --height {height}`"
        )
    return FrameCache.open(cache)


def tracked_renderer(avatar: Avatar, cache: FrameCache, fitted: Mapping[str, Tracking] | None = None) -> Renderer:
    """Renders frame `t` of a cached sequence driven by `fitted`'s tracking of it (given one), else by the tracking
    the avatar plays it with (refined in training where it was), else by the capture's own tracking of it (a
    sequence added to the cache after training)."""
    fitted = fitted or {}

    def render(sequence: str, t: int, cameras: Sequence[Camera]) -> tuple[torch.Tensor, torch.Tensor]:
        if sequence not in fitted and sequence in avatar.motions:
            return avatar.render(sequence, t, cameras)
        tr = fitted[sequence] if sequence in fitted else cache.tracking(sequence)
        z, pose = torch.from_numpy(tr.expression[t]), torch.from_numpy(tr.head_to_world(t))
        return avatar.render_code(z, pose, cameras)

    return render
