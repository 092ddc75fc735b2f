"""Head models by the `type` of their description: the one place that maps a description to a model.

A description is a small JSON-able mapping (`HeadModel.description()`), stored as a capture's
`headmodel.json` and inside every avatar file, so the same head rebuilds wherever either goes. Its
`type` picks the class; paths in it (weights of a learned model) are relative to `base_dir`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from npga.headmodel.base import HeadModel
from npga.headmodel.flame import FlameHead
from npga.headmodel.mononphm import MonoNPHM
from npga.headmodel.synthetic import SyntheticHead
from npga.io.atomic import write_text_atomic

DESCRIPTION_FILE = "headmodel.json"
HEAD_MODEL_TYPES: Mapping[str, Callable[[dict[str, Any], Path | None], HeadModel]] = {
    "synthetic": SyntheticHead.from_description,
    "flame": FlameHead.from_description,
    "mononphm": MonoNPHM.from_description,
}


def head_model_from_description(
    description: Mapping[str, Any], base_dir: Path | None = None, source: str = "head model description"
) -> HeadModel:
    """The head model a description names; `source` (a file, an avatar) prefixes every error."""
    if not isinstance(description, Mapping) or "type" not in description:
        raise ValueError(f"{source}: a head model description is a mapping with a 'type'")
    kind = description["type"]
    if kind not in HEAD_MODEL_TYPES:
        raise ValueError(f"{source}: unknown head model type {kind!r}; known: {sorted(HEAD_MODEL_TYPES)}")
    try:
        return HEAD_MODEL_TYPES[kind](dict(description), base_dir)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{source}: not a readable {kind} head model description ({e})") from e


def load_head_model(path: str | os.PathLike) -> HeadModel:
    """The head model of a capture folder (its `headmodel.json`) or of such a file."""
    path = Path(path)
    file = path / DESCRIPTION_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no head model description at {file}: a capture names its head model there "
            "(`npga synth` writes one; for FLAME-tracked data, e.g. a VHAP export, "
            "`npga prepare --flame-model FLAME.npz` does; "
            f"types: {sorted(HEAD_MODEL_TYPES)})"
        )
    try:
        description = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{file}: not JSON ({e})") from e
    return head_model_from_description(description, file.parent, source=str(file))


def save_description(head: HeadModel, path: str | os.PathLike) -> Path:
    """Write `head.description()` as JSON (a capture's `headmodel.json`)."""
    return write_text_atomic(path, json.dumps(head.description(), indent=2))
