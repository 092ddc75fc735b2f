"""`npga export AVATAR_OR_RUN --ply OUT.ply`: the avatar posed for one frame (or canonical) for other splat tools;
`npga export AVATAR_OR_RUN --web OUT/`: the whole avatar as a static web page that plays and changes expression.

The pose comes from one of the avatar's sequences, from a tracking file, or is the canonical one. Colours are
the Gaussians' RGB: an avatar's screen-space CNN works on images and cannot be exported. Options and the PLY and
`.splat` layouts: docs/rendering.md; the web page: docs/web.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
from tqdm import tqdm

from npga.avatar.deform import Gaussians
from npga.commands.common import Runtime, RuntimeOptions, open_avatar
from npga.config import OutFolder, OutPath
from npga.drive.reenact import driving_codes
from npga.io.splats import write_ply, write_splat
from npga.viewer.bake import bake_avatar
from npga.viewer.webpage import write_web

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Config:
    avatar: tyro.conf.Positional[Path]
    """Avatar file (`RUN/avatar.npga`) or run folder written by `npga train`."""
    ply: OutPath | None = None
    """Output file (a folder with --all-frames)."""
    web: OutFolder | None = None
    """Output folder for the web page instead (replaced if it exists): every sequence, expression sliders."""
    web_rank: int = 16
    """--web: expression directions baked (the first principal directions of the training codes)."""
    format: Literal["ply", "splat"] = "ply"
    """ply: the 3DGS layout most splat tools open; splat: the compact layout of web viewers."""
    sequence: str | None = None
    """One of the avatar's sequences (default: its first training sequence)."""
    frame: int = 0
    """Frame index within the sequence or tracking file."""
    tracking: Path | None = None
    """A tracking file (`nphm_tracking.npz` layout, e.g. from another capture) to pose the avatar with."""
    canonical: bool = False
    """The canonical Gaussians: no expression, no head pose."""
    all_frames: bool = False
    """Every frame of the sequence (or tracking file), one file each, into the folder --ply."""
    runtime: Runtime = RuntimeOptions(precision="float32")  # float32: the file holds the avatar's own values


def _write(cfg: Config, g: Gaussians, path: Path) -> Path:
    writer = write_splat if cfg.format == "splat" else write_ply
    return writer(path, g.means, g.quats, g.scales, g.opacities, g.colors)


def _export_web(cfg: Config) -> list[Path]:
    if cfg.canonical or cfg.tracking is not None or cfg.sequence is not None or cfg.all_frames:
        raise ValueError(
            "--web exports every sequence: it takes no --canonical, --sequence, --tracking or --all-frames"
        )
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    if avatar.nets.cnn is not None:
        log.warning("%s refines its renders with a screen-space CNN, which the page does not run", file)
    bake = bake_avatar(avatar, cfg.web_rank)
    out = write_web(cfg.web, avatar, bake, file.parent.name if file.name == "avatar.npga" else file.stem)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(
        f"wrote {out}: {avatar.n_gaussians} Gaussians, {bake.rank} expression directions, "
        f"{len(bake.coords)} sequence(s), {size / 1e6:.1f} MB; serve it with `python -m http.server -d {out}`"
    )
    return sorted(out.iterdir())


def main(cfg: Config) -> list[Path]:
    """Returns the files written."""
    if (cfg.ply is None) == (cfg.web is None):
        raise ValueError("give one output: --ply FILE (or folder with --all-frames) or --web FOLDER")
    if cfg.web is not None:
        return _export_web(cfg)
    if cfg.canonical and (cfg.tracking is not None or cfg.sequence is not None or cfg.all_frames):
        raise ValueError("--canonical takes no --sequence, --tracking or --all-frames")
    file, avatar = open_avatar(cfg.avatar, cfg.runtime.device, cfg.runtime.precision)
    if avatar.nets.cnn is not None:
        log.warning(
            "%s refines its renders with a screen-space CNN, which a splat file cannot carry: the "
            "exported colours are the Gaussians' own",
            file,
        )
    if cfg.canonical:
        paths = [_write(cfg, avatar.canonical_gaussians(), cfg.ply)]
    else:
        codes, poses, name = driving_codes(avatar, str(file), cfg.sequence, cfg.tracking)
        frames = range(len(codes)) if cfg.all_frames else [cfg.frame]
        if not all(0 <= t < len(codes) for t in frames):
            raise ValueError(f"frame {cfg.frame} out of range for {name} ({len(codes)} frames)")
        paths = []
        for t in tqdm(frames, desc="export", unit="frame", disable=len(frames) == 1):
            out = cfg.ply / f"frame_{t:05d}.{cfg.format}" if cfg.all_frames else cfg.ply
            paths.append(_write(cfg, avatar.gaussians(codes[t], poses[t]), out))
    where = cfg.ply if cfg.all_frames else paths[0]
    print(f"wrote {len(paths)} {cfg.format} file(s), {avatar.n_gaussians} Gaussians each: {where}")
    return paths
