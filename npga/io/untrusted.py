"""Reading files that may come from strangers (avatars, checkpoints, trackings, calibrations, caches).

Every loader of such a file raises one of three ValueErrors (the CLI prints them as one line), so a user can tell
what to do: `CorruptFile` (damaged, truncated or not this kind of file: get a good copy or re-make it),
`UnsafeFile` (refused: it would run code, or claims sizes beyond what npga loads), `NewerFormat` (written by a
newer npga: upgrade). Checks run before any network or buffer is built, so a crafted file costs at most its own
size in memory. docs/troubleshooting.md lists every message.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

# What an avatar file or a distilled field may claim for a network's size; well above any useful setting, and
# small enough that building the (still empty) modules to compare with the file's tensors is instant.
CONFIG_LIMITS: dict[str, int] = {
    "depth": 64,
    "width": 8192,
    "n_freqs": 32,
    "hidden": 1024,
    "latent_channels": 1024,
    "latent_dim": 4096,
    "expression_dim": 4096,
    "blendshapes": 4096,
}
# A zip member may unpack to at most this many times its packed size (npz and torch files store, not deflate).
_MAX_UNPACK_RATIO = 50


class CorruptFile(ValueError):
    """Damaged, truncated, or not the kind of file expected."""

    def __init__(self, path: str | os.PathLike, kind: str, problem: str) -> None:
        super().__init__(f"{path}: damaged or not {kind} ({problem})")


class UnsafeFile(ValueError):
    """Refused without loading: it would run code, or it claims more than npga loads."""

    def __init__(self, path: str | os.PathLike, kind: str, problem: str) -> None:
        super().__init__(f"{path}: refused as unsafe, not loaded as {kind} ({problem})")


class NewerFormat(ValueError):
    """Written by a newer npga, in a format version this one cannot read."""

    def __init__(self, path: str | os.PathLike, kind: str, version: object, supported: int) -> None:
        super().__init__(
            f"{path}: written by a newer npga ({kind}, format version {version!r}; this npga reads up to "
            f"{supported}); upgrade npga"
        )


def first_line(e: BaseException) -> str:
    """An exception's message as one line without terminal colour codes (torch's are several, with both), cut
    after its first sentence (what follows is advice for the library's own users, e.g. torch's on miniz errors)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    line = (text.splitlines() or [type(e).__name__])[0]
    sentence = line.split(". ")[0]
    return (sentence if len(sentence) >= 20 else line)[:300]


def _check_zip(path: Path, kind: str) -> None:
    """Refuse a zip whose members would unpack to far more than the file holds (a zip bomb)."""
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CorruptFile(path, kind, f"not a readable zip archive: {first_line(e)}") from None
    unpacked = sum(m.file_size for m in members)
    if unpacked > _MAX_UNPACK_RATIO * max(path.stat().st_size, 1 << 16):
        raise UnsafeFile(path, kind, f"its {len(members)} entries unpack to {unpacked} bytes")


def load_torch(path: str | os.PathLike, kind: str, map_location: torch.device | str = "cpu") -> Any:
    """A torch file's contents, loaded without running code from it (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path} (expected {kind})")
    if zipfile.is_zipfile(path):  # torch's own format; older, pickled files go straight to torch
        _check_zip(path, kind)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # whatever a damaged file makes torch raise, the file is at fault
        unsafe = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(e), re.IGNORECASE)
        if unsafe:
            raise UnsafeFile(path, kind, f"it would run code: it names {unsafe.group(1)}") from None
        # torch wraps what its unpickler found in paragraphs of advice (to load with weights_only=False): keep the find
        found = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
        problem = f"not a pickle of tensors: {found.group(1).strip()}" if found else first_line(e)
        if "legacy .tar format" in problem:
            problem = "not a torch zip archive (damaged, or torch's legacy tar format, which cannot be read safely)"
        raise CorruptFile(path, kind, problem or type(e).__name__) from None


def load_npz(path: str | os.PathLike, kind: str) -> dict[str, np.ndarray]:
    """Every array of an .npz file, read without unpickling anything (a pickled array is refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path} (expected {kind})")
    _check_zip(path, kind)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: np.asarray(npz[name]) for name in npz.files}
    except ValueError as e:
        if "pickle" in str(e):
            raise UnsafeFile(path, kind, "it holds pickled objects, which could run code") from None
        raise CorruptFile(path, kind, first_line(e)) from None
    except Exception as e:  # zlib, zip and format errors alike: the file is damaged
        raise CorruptFile(path, kind, first_line(e) or type(e).__name__) from None


def load_npy(path: str | os.PathLike, kind: str) -> np.ndarray:
    """The array of an .npy file, read without unpickling anything (a pickled array is refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path} (expected {kind})")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise CorruptFile(path, kind, "not a .npy array")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):
            raise UnsafeFile(path, kind, "it holds pickled objects, which could run code") from None
        raise CorruptFile(path, kind, first_line(e)) from None
    except Exception as e:  # header and size errors alike: the file is damaged
        raise CorruptFile(path, kind, first_line(e) or type(e).__name__) from None


def check_config(cfg: Any, path: str | os.PathLike, kind: str, where: str = "config") -> None:
    """A (nested) config dataclass read from a file: numbers where numbers belong, finite, and every size within
    CONFIG_LIMITS, before anything is built from it."""
    hints = typing.get_type_hints(type(cfg))
    for field in dataclasses.fields(cfg):
        value, name = getattr(cfg, field.name), f"{where}.{field.name}"
        if dataclasses.is_dataclass(value):
            check_config(value, path, kind, name)
        elif hints[field.name] is int and (not isinstance(value, int) or isinstance(value, bool)):
            raise CorruptFile(path, kind, f"{name} = {value!r} is not an integer")
        elif hints[field.name] is float and not (isinstance(value, int | float) and math.isfinite(value)):
            raise CorruptFile(path, kind, f"{name} = {value!r} is not a finite number")
        elif field.name in CONFIG_LIMITS and isinstance(value, int) and not 0 <= value <= CONFIG_LIMITS[field.name]:
            raise UnsafeFile(path, kind, f"{name} = {value} is outside [0, {CONFIG_LIMITS[field.name]}]")


def state_problems(build: Any, state: Mapping[str, Any]) -> str:
    """What keeps `state` from loading into the module `build()` makes: '' when names, shapes and dtypes all
    match and every value is finite. The module is built on the meta device (no memory), so a file's claims are
    checked before any real buffer exists."""
    with torch.device("meta"):
        own = build().state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    for k, v in own.items():
        if k not in state:
            continue
        s = state[k]
        if not isinstance(s, torch.Tensor):
            problems.append(f"{k} is a {type(s).__name__}, not a tensor")
        elif s.shape != v.shape:
            problems.append(f"{k} is {tuple(s.shape)}, expected {tuple(v.shape)}")
        elif s.dtype != v.dtype:
            problems.append(f"{k} is {s.dtype}, expected {v.dtype}")
        elif s.is_floating_point() and not torch.isfinite(s).all():
            problems.append(f"{k} contains NaN or inf")
    return "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
