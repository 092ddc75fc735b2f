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
from npga.split import Split

FORMAT = "npga-avatar"
FORMAT_VERSION = 1
_META_KEY = "npga"
_MOTION_FIELDS = ("expression", "head_pose", "timesteps")
_REFINED_FIELDS = ("tracked_expression", "tracked_head_pose")  # only in avatars whose training refined the tracking


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
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not an npga avatar file (unreadable as safetensors: {e})") from e
    if _META_KEY not in header:
        raise ValueError(f"{path}: not an npga avatar file (a safetensors file without npga metadata)")
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt avatar metadata ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an npga avatar file (format {meta.get('format')!r})")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: avatar format version {version!r} is newer than this npga reads ({FORMAT_VERSION}); upgrade npga"
        )
    return meta


def load_avatar(path: str | os.PathLike, device: str | torch.device = "cpu") -> Avatar:
    """The avatar in `path` on `device`, ready to render; one-line ValueErrors name the file and the problem."""
    path = Path(path)
    meta = read_avatar_metadata(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # safe_open has no __iter__
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: truncated or corrupt avatar file ({e})") from e
    group = lambda prefix: {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        cfg = from_dict(AvatarConfig, meta["config"], where=f"{path}: config")
        split = Split(**{k: tuple(v) for k, v in meta["split"].items()})
        cameras = {c["serial"]: Camera(**c) for c in meta["cameras"]}
        motions = {
            s: Motion(
                **{f: tensors[f"motion/{s}/{f}"] for f in _MOTION_FIELDS},
                **{f: tensors[f"motion/{s}/{f}"] for f in _REFINED_FIELDS if f"motion/{s}/{f}" in tensors},
            )
            for s in meta["sequences"]
        }
        codes = CodeStats(**group("codes/"))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: incomplete avatar file ({type(e).__name__}: {e})") from e
    params = group("gaussians/")
    _check_params(path, params, cfg)
    with torch.random.fork_rng(devices=[]):  # building draws initial weights; leave the caller's RNG alone
        nets = build_nets(cfg)
    problem = _load_weights(nets, group("nets/"))
    if problem:
        raise ValueError(f"{path}: network weights do not match the avatar's config ({problem})")
    nets.eval().requires_grad_(False)
    device = torch.device(device)
    return Avatar(
        config=cfg,
        params={k: v.to(device) for k, v in params.items()},
        nets=nets.to(device),
        motions={s: m.to(device) for s, m in motions.items()},
        codes=CodeStats(*(t.to(device) for t in dataclasses.astuple(codes))),
        cameras=cameras,
        split=split,
        head_model=meta["head_model"],
        provenance=meta.get("provenance", {}),
    )


def _check_params(path: Path, params: dict[str, torch.Tensor], cfg: AvatarConfig) -> None:
    """Every per-Gaussian entry present, with one row per Gaussian and the config's widths."""
    trailing = {"means": (3,), "quats": (4,), "scales": (3,), "opacities": (), "colors": (3,)}
    if cfg.latent_dim:
        trailing["features"] = (cfg.latent_dim,)
    missing = sorted(set(trailing) - set(params))
    if missing:
        raise ValueError(f"{path}: no Gaussian parameters {missing}")
    n = len(params["means"])
    for key, rest in trailing.items():
        if tuple(params[key].shape) != (n, *rest):
            raise ValueError(f"{path}: gaussians/{key} has shape {tuple(params[key].shape)}, expected {(n, *rest)}")


def _load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Load `state` strictly; '' on success, else what does not match (missing, unexpected, mis-shaped keys)."""
    own = module.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k} is {tuple(state[k].shape)}, expected {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if problems:
        return "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
    module.load_state_dict(state)
    return ""
