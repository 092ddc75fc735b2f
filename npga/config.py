"""Typed configs: frozen dataclasses, YAML presets, checked option values, and saving the config next to a run.

Presets in `configs/*.yaml` give values for some fields of a subcommand's config dataclass (nested
dataclasses as nested mappings); the command line overrides them. Unknown keys and values of the wrong type
are errors, so a typo in a preset never silently falls back to a default or reaches the code as a string.

`check_options` checks every value of a parsed config before a command does any work: a number option must be
finite and at least 0 unless its annotation gives another `Range` (`steps: Annotated[int, Range(1)]`), and an
output path (`Annotated[Path, Output("folder")]`) must name a folder or file that can be written. The error names
the option as its flag (`--distill.steps must be at least 0, got -1`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

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


@dataclass(frozen=True)
class Range:
    """The numbers an option may take (each number, for a tuple), in its annotation. `lo=None`: no lower bound;
    `above`: `lo` itself excluded. Every number must be finite."""

    lo: float | None = 0
    hi: float | None = None
    above: bool = False

    def problem(self, x: float) -> str | None:
        """What is wrong with `x` ("must be ..."), None when it is allowed."""
        low = self.lo is not None and (x <= self.lo if self.above else x < self.lo)
        if math.isfinite(x) and not low and (self.hi is None or x <= self.hi):
            return None
        if not math.isfinite(x):
            return "must be a finite number"
        if self.lo is not None and self.hi is not None:
            return f"must be {'above' if self.above else 'at least'} {self.lo:g} and at most {self.hi:g}"
        if self.lo is not None:
            return f"must be {'above' if self.above else 'at least'} {self.lo:g}"
        return f"must be at most {self.hi:g}" if self.hi is not None else "must be a finite number"


NON_NEGATIVE = Range()
"""What a number option without a `Range` may be: counts, sizes, rates, weights, seeds."""
SIGNED = Range(lo=None)
"""Any finite number (angles, offsets)."""
POSITIVE = Range(0, above=True)
FRACTION = Range(0, 1)
AtLeast1 = Annotated[int, Range(1)]
"""A count of steps, frames, pixels, neurons... that cannot be 0."""
Positive = Annotated[float, POSITIVE]
Fraction = Annotated[float, FRACTION]


@dataclass(frozen=True)
class Output:
    """Marks a path option a command writes to: a "folder" (which must not be an existing file), a "file" (which
    must not be an existing folder) or "any" of them; none may be empty ("" and "." would write into the current
    folder), nor lie below a file."""

    kind: Literal["folder", "file", "any"]

    def problem(self, path: Path) -> str | None:
        if str(path) in ("", "."):
            return "is empty: name what to write (not the current folder)"
        if self.kind == "folder" and path.is_file():
            return f"{path} is a file, not a folder"
        if self.kind == "file" and path.is_dir():
            return f"{path} is a folder: name the file to write"
        blocking = next((a for a in path.absolute().parents if a.exists()), None)
        if blocking is not None and not blocking.is_dir():
            return f"{path}: {blocking} is a file, not a folder"
        return None


OutFolder = Annotated[Path, Output("folder")]
OutFile = Annotated[Path, Output("file")]
OutPath = Annotated[Path, Output("any")]


def _metadata(tp: Any) -> list[Any]:
    """The Annotated metadata of `tp`, also inside an Optional or a tuple (`tuple[Annotated[float, SIGNED], ...]`)."""
    if typing.get_origin(tp) is Annotated:
        return list(tp.__metadata__)
    if typing.get_origin(tp) in (typing.Union, types.UnionType, tuple):
        return [m for a in typing.get_args(tp) if a is not Ellipsis for m in _metadata(a)]
    return []


def check_options(cfg: Any, prefix: str = "--") -> None:
    """Raise ValueError naming the first option (as its flag) whose value its annotation does not allow."""
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in dataclasses.fields(cfg):
        value, meta = getattr(cfg, f.name), _metadata(hints[f.name])
        flag = prefix + f.name.replace("_", "-")
        if dataclasses.is_dataclass(value):  # nested options: `--distill.steps`, or no prefix (tyro's name="")
            check_options(value, prefix if any(getattr(m, "name", None) == "" for m in meta) else f"{flag}.")
            continue
        output = next((m for m in meta if isinstance(m, Output)), None)
        if output is not None and value is not None and (problem := output.problem(Path(value))):
            raise ValueError(f"{flag} {problem}")
        limits = next((m for m in meta if isinstance(m, Range)), NON_NEGATIVE)
        numbers = value if isinstance(value, (tuple, list)) else (value,)
        for x in numbers:
            if isinstance(x, (int, float)) and not isinstance(x, bool) and (problem := limits.problem(x)):
                raise ValueError(f"{flag} {problem}, got {value!r}")


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
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ValueError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if value not in tp.__members__:
            raise ValueError(f"{where}: {value!r} is not one of {list(tp.__members__)}")
        return tp[value]
    if tp in (Path, str, bool, int, float) and not _is(tp, value):
        raise ValueError(f"{where}: expected {'a path' if tp is Path else tp.__name__}, got {value!r}")
    if tp is Path:
        return Path(value)
    if tp is float:
        return float(value)
    return value


def _is(tp: type, value: Any) -> bool:
    """Whether a YAML value is one of `tp` (bool, int, float, str, Path); YAML's true is no number, 3 is a float."""
    if tp in (Path, str):
        return isinstance(value, str)
    if tp is bool or isinstance(value, bool):
        return tp is bool and isinstance(value, bool)
    return isinstance(value, int) or (tp is float and isinstance(value, float))


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
