"""The avatar file (`RUN/avatar.npga`): one self-contained, code-free file per trained avatar.

safetensors, because reading one can never run code (a pickle-based file can execute anything it was crafted
to), it loads by memory-mapping, and any language with a safetensors reader can open an avatar without Python.
Format: docs/avatar-format.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from npga.avatar.config import AvatarConfig, build_nets
from npga.avatar.model import Avatar, CodeStats, Motion
from npga.cameras import Camera
from npga.config import from_dict, to_dict
from npga.io.atomic import atomic_path
from npga.io.untrusted import CorruptFile, NewerFormat, UnsafeFile, check_config, first_line, state_problems
from npga.split import Split

FORMAT = "npga-avatar"
FORMAT_VERSION = 1
_META_KEY = "npga"
_MOTION_FIELDS = ("expression", "head_pose", "timesteps")
_REFINED_FIELDS = ("tracked_expression", "tracked_head_pose")  # only in avatars whose training refined the tracking
KIND = "an npga avatar file"
_MAX_CAMERAS = 4096
_MAX_IMAGE_SIDE = 16384  # pixels: an image this size is already 1 GB of float32 RGBA


def save_avatar(avatar: Avatar, path: str | os.PathLike) -> Path:
    """Write `avatar` atomically: readers see the previous file or the new one, never half of one."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {f"gaussians/{k}": v for k, v in avatar.params.items()}
    tensors |= {f"nets/{k}": v for k, v in avatar.nets.state_dict().items()}
    for name, m in avatar.motions.items():
        tensors |= {f"motion/{name}/{f}": getattr(m, f) for f in _MOTION_FIELDS}
        if m.refined:
            tensors |= {f"motion/{name}/{f}": getattr(m, f) for f in _REFINED_FIELDS}
    tensors |= {f"codes/{f.name}": getattr(avatar.codes, f.name) for f in dataclasses.fields(CodeStats)}
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": to_dict(avatar.config),
        "head_model": avatar.head_model,
        "cameras": [
            {
                "serial": c.serial,
                "width": c.width,
                "height": c.height,
                "K": c.K.tolist(),
                "world_2_cam": c.world_2_cam.tolist(),
            }
            for c in avatar.cameras.values()
        ],
        "split": dataclasses.asdict(avatar.split),
        "sequences": list(avatar.motions),
        "provenance": avatar.provenance,
    }
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta)})
    return path


def read_avatar_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of an avatar file, after checking that it is one this npga can read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"avatar file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptFile(path, KIND, f"unreadable as safetensors: {first_line(e)}") from None
    if _META_KEY not in header:
        raise CorruptFile(path, KIND, "a safetensors file without npga metadata")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as e:
        raise CorruptFile(path, KIND, f"metadata is not JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CorruptFile(path, KIND, f"format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptFile(path, KIND, f"format version {version!r}")
    if version > FORMAT_VERSION:
        raise NewerFormat(path, KIND, version, FORMAT_VERSION)
    return meta


def load_avatar(path: str | os.PathLike, device: str | torch.device = "cpu") -> Avatar:
    """The avatar in `path` on `device`, ready to render; one-line ValueErrors name the file and the problem."""
    path = Path(path)
    meta = read_avatar_metadata(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise CorruptFile(path, KIND, f"truncated or damaged tensors: {first_line(e)}") from None
    parts = _checked_parts(path, meta, tensors)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; leave the caller's RNG alone
        nets = build_nets(parts.config)
    nets.load_state_dict(parts.nets)
    nets.eval().requires_grad_(False)
    device = torch.device(device)
    return Avatar(
        config=parts.config,
        params={k: v.to(device) for k, v in parts.params.items()},
        nets=nets.to(device),
        motions={s: m.to(device) for s, m in parts.motions.items()},
        codes=CodeStats(*(t.to(device) for t in dataclasses.astuple(parts.codes))),
        cameras=parts.cameras,
        split=parts.split,
        head_model=meta["head_model"],
        provenance=meta.get("provenance", {}),
    )


@dataclasses.dataclass(frozen=True)
class _Parts:
    """What an avatar file holds, checked; the networks' weights still to be loaded into modules."""

    config: AvatarConfig
    cameras: dict[str, Camera]
    split: Split
    motions: dict[str, Motion]
    codes: CodeStats
    params: dict[str, torch.Tensor]  # per-Gaussian (N, ...)
    nets: dict[str, torch.Tensor]  # the networks' state dict


def _checked_parts(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> _Parts:
    """Everything an avatar is made of, each part checked against the metadata, CONFIG_LIMITS and the file's
    other parts (names, shapes, dtypes, finite values), before any network is built: the one check of an
    avatar file, so a crafted one costs no more memory than its own size."""
    for k, t in tensors.items():
        want = torch.int64 if k.endswith("/timesteps") else torch.float32
        if t.dtype != want:
            raise CorruptFile(path, KIND, f"{k} is {t.dtype}, expected {want}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CorruptFile(path, KIND, f"{k} contains NaN or inf")
    group = lambda prefix: {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        cfg = from_dict(AvatarConfig, meta["config"], where="config")
        check_config(cfg, path, KIND)
        if len(meta["cameras"]) > _MAX_CAMERAS:
            raise UnsafeFile(path, KIND, f"{len(meta['cameras'])} cameras, more than {_MAX_CAMERAS}")
        for c in meta["cameras"]:
            size = (c["width"], c["height"])
            if not all(isinstance(v, int) and 0 < v <= _MAX_IMAGE_SIDE for v in size):
                raise UnsafeFile(
                    path,
                    KIND,
                    f"camera {c['serial']!r} is {size[0]}x{size[1]} pixels (at most {_MAX_IMAGE_SIDE} a side)",
                )
        cameras = {c["serial"]: Camera(**c) for c in meta["cameras"]}
        split = Split(**{k: tuple(v) for k, v in meta["split"].items()})
        head_model = meta["head_model"]
        if not isinstance(head_model, dict):
            raise TypeError(f"head_model is {head_model!r}, not a mapping")
        motions = {
            s: Motion(
                **{f: tensors[f"motion/{s}/{f}"] for f in _MOTION_FIELDS},
                **{f: tensors[f"motion/{s}/{f}"] for f in _REFINED_FIELDS if f"motion/{s}/{f}" in tensors},
            )
            for s in meta["sequences"]
        }
        codes = CodeStats(**group("codes/"))
    except (UnsafeFile, CorruptFile):
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CorruptFile(path, KIND, f"bad metadata or tensors: {type(e).__name__}: {first_line(e)}") from None
    D = cfg.expression_dim
    for s, m in motions.items():
        T = m.expression.shape[0] if m.expression.ndim else -1
        shapes = {"expression": (T, D), "head_pose": (T, 4, 4), "timesteps": (T,)}
        shapes |= {"tracked_expression": (T, D), "tracked_head_pose": (T, 4, 4)} if m.refined else {}
        _check_shapes(path, f"motion/{s}/", {f: getattr(m, f) for f in shapes}, shapes)
    K = codes.std.shape[0] if codes.std.ndim else -1
    _check_shapes(
        path,
        "codes/",
        dataclasses.asdict(codes),
        {"mean": (D,), "directions": (K, D), "std": (K,), "low": (K,), "high": (K,), "min": (D,), "max": (D,)},
    )
    params = group("gaussians/")
    _check_params(path, params, cfg)
    nets = group("nets/")
    problem = state_problems(lambda: build_nets(cfg), nets)
    if problem:
        raise CorruptFile(path, KIND, f"network weights do not match the avatar's config: {problem}")
    return _Parts(cfg, cameras, split, motions, codes, params, nets)


def _check_shapes(path: Path, prefix: str, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple]) -> None:
    for key, shape in shapes.items():
        if tuple(tensors[key].shape) != shape:
            raise CorruptFile(path, KIND, f"{prefix}{key} has shape {tuple(tensors[key].shape)}, expected {shape}")


def _check_params(path: Path, params: dict[str, torch.Tensor], cfg: AvatarConfig) -> None:
    """Every per-Gaussian entry present, with one row per Gaussian and the config's widths."""
    trailing = {"means": (3,), "quats": (4,), "scales": (3,), "opacities": (), "colors": (3,)}
    if cfg.latent_dim:
        trailing["features"] = (cfg.latent_dim,)
    missing = sorted(set(trailing) - set(params))
    if missing:
        raise CorruptFile(path, KIND, f"no Gaussian parameters {missing}")
    n = len(params["means"]) if params["means"].ndim else 0
    _check_shapes(path, "gaussians/", params, {key: (n, *rest) for key, rest in trailing.items()})
