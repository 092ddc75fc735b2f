"""`npga export --web`: an avatar as a folder any static file server can serve, drawn by the bundled page.

The folder holds the page (`index.html` and the bundle built from `viewer/`, shipped in `npga/viewer/static/`
so Python users never need node), `avatar.json` (what the page shows: cameras, sequences as whitened
expression coordinates and head poses, the slider range) and `avatar.bin` (the bake's basis: the affine term
as float32, the directions as float16). The page fetches nothing else. Layout: docs/web.md.
"""

from __future__ import annotations

import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from npga.avatar.model import Avatar
from npga.cameras import Camera, frontal_camera
from npga.io.atomic import atomic_dir
from npga.viewer.bake import ATTRIBUTES, WIDTH, Bake

FORMAT = "npga-web-avatar"
VERSION = 1
MANIFEST = "avatar.json"
BLOB = "avatar.bin"
PAGE_FILES = ("index.html", "npga-web.js")
"""The bundle's files in `npga/viewer/static/` (`make web` builds them from `viewer/`)."""


def basis_bytes(bake: Bake) -> bytes:
    """The affine term (N, WIDTH) as little-endian float32, then the k directions (k, N, WIDTH) as float16."""
    affine = bake.basis[0].numpy().astype("<f4")
    directions = bake.basis[1:].numpy().astype("<f2")
    return affine.tobytes() + directions.tobytes()


def _numbers(t: torch.Tensor | np.ndarray) -> list[float]:
    """A flat list of float32-exact numbers, short in JSON."""
    return [float(f"{x:.9g}") for x in np.asarray(t, dtype=np.float32).reshape(-1)]


def _camera(name: str, c: Camera) -> dict:
    return {
        "name": name,
        "width": c.width,
        "height": c.height,
        "fx": float(c.K[0, 0]),
        "fy": float(c.K[1, 1]),
        "cx": float(c.K[0, 2]),
        "cy": float(c.K[1, 2]),
        "world_to_camera": _numbers(c.world_2_cam),  # row-major, OpenCV axes
    }


def _frontal_name(cameras: dict[str, Camera]) -> str | None:
    front = frontal_camera(cameras) if cameras else None
    return next((name for name, c in cameras.items() if c is front), None)


def manifest(avatar: Avatar, bake: Bake, name: str) -> dict:
    """What `avatar.json` holds (docs/web.md)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "gaussians": avatar.n_gaussians,
        "rank": bake.rank,
        "attributes": [{"name": a, "size": n} for a, n in ATTRIBUTES],
        "blob": {"file": BLOB, "bytes": avatar.n_gaussians * WIDTH * (4 + 2 * bake.rank)},
        "background": [float(x) for x in avatar.config.background],
        "cameras": [_camera(serial, c) for serial, c in avatar.cameras.items()],
        "default_camera": _frontal_name(avatar.cameras),
        "sequences": [
            {
                "name": seq,
                "frames": len(bake.coords[seq]),
                "coords": _numbers(bake.coords[seq]),  # (T, rank) row-major
                "head_poses": _numbers(bake.head_poses[seq]),  # (T, 4, 4) row-major
            }
            for seq in bake.coords
        ],
        "sliders": {"count": bake.rank, "min": -3.0, "max": 3.0},
    }


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_web(out: Path, avatar: Avatar, bake: Bake, name: str) -> Path:
    """Write the folder `out`: page, manifest, blob. Returns `out`. An earlier export there is replaced; any other
    non-empty folder is refused (replacing means deleting it)."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_export(out))):
        raise ValueError(f"{out} exists and is not an earlier `npga export --web` folder: refusing to replace it")
    static = resources.files("npga.viewer") / "static"
    with atomic_dir(out) as tmp:
        for file in PAGE_FILES:
            with resources.as_file(static / file) as src:
                shutil.copyfile(src, tmp / file)
        (tmp / BLOB).write_bytes(basis_bytes(bake))
        (tmp / MANIFEST).write_text(json.dumps(manifest(avatar, bake, name), separators=(",", ":")))
    return out
