"""Typed configs: frozen dataclasses, YAML presets, and saving the config next to a run.

Presets in `configs/*.yaml` give values for some fields of a subcommand's config dataclass (nested
dataclasses as nested mappings); the command line overrides them. Unknown keys are errors, so a typo
in a preset never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from npga.io.atomic import write_text_atomic

T = TypeVar("T")
DeviceName = Literal["auto", "cpu", "cuda"]
"""The `device` option of every subcommand; auto: CUDA when available."""


def resolve_device(name: str) -> str:
    """ "cuda" or "cpu" for a DeviceName (torch is imported only here, so `npga --help` stays fast)."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _convert(tp: Any, value: Any, where: str, default: Any = None) -> Any:
    """Turn a YAML value into the annotated type `tp` (dataclasses, tuples, Paths, Literals, Optionals); a
    mapping fills the field's `default` when that is a dataclass."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where, default if dataclasses.is_dataclass(default) else None)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, where) if len(non_none) == 1 else value
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, int):
        return float(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp[value]
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config", base: T | None = None) -> T:
    """Build dataclass `cls` from a (nested) mapping, the fields it leaves out taken from `base` (default: the
    field defaults); unknown keys raise ValueError naming them. A nested mapping fills its field's default, so
    a preset giving eval's `runtime.device` keeps eval's own float32 precision."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} for {cls.__name__}; valid: {sorted(fields)}")
    default = lambda k: fields[k].default if base is None else getattr(base, k)
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}", default(k)) for k, v in data.items()}
    return cls(**kwargs) if base is None else dataclasses.replace(base, **kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain YAML-friendly mapping of a config dataclass (Paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, enum.Enum):
            return v.name
        return v

    return plain(cfg)


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    """Read a YAML preset into `cls`; errors name the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of field names to values")
    return from_dict(cls, data, where=str(path))


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write `cfg` as YAML atomically (runs keep the config they were made with)."""
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
