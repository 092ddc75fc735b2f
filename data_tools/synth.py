"""`npga synth`: a synthetic multi-view capture of the analytic head, in the NeRSemble benchmark layout.

16 cameras with the rig's serial numbers on an arc in front of the head, several sequences with different
expression content (FREE mixes everything and is held out by default), small rigid head motion, white
background, alpha maps, tracking and `headmodel.json`. Frames rasterize the forward-deformed canonical mesh,
evaluate the colour field at the canonical point under every pixel, shade, and average 2x2 supersamples for
anti-aliasing. The demo and full presets add what the head model does not explain (`capture_effects`: folds,
wrinkles, the mouth's interior, shading from the deformed surface, gaze, tracking noise); the tracking file
then holds the noisy tracking and `tracking/true_tracking.npz` the codes and poses that rendered the frames.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from tqdm import tqdm

from data_tools.capture_effects import (
    ALL_EFFECTS,
    Effect,
    TrackingNoise,
    deformed_normals,
    fine_displacement,
    gaze_track,
    noisy_tracking,
    shade,
)
from data_tools.mesh_render import rasterize_mesh
from npga import nersemble
from npga.cameras import Camera, look_at
from npga.config import AtLeast1, OutFolder, Positive, Range
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.geometry import centred_intrinsics
from npga.headmodel import EXPRESSIONS, SyntheticHead, save_description
from npga.headmodel.base import Mesh
from npga.io.atomic import atomic_dir
from npga.io.video import to_uint8, write_video
from npga.workers import worker_pool

log = logging.getLogger(__name__)

# Which expression components each sequence exercises; FREE mixes them all.
SEQUENCES: dict[str, tuple[str, ...]] = {
    "EXP-1-jaw": ("jaw_open", "lip_pucker", "mouth_shift"),
    "EXP-2-smile-brows": ("smile", "brow_raise", "brow_furrow", "lip_stretch"),
    "EXP-3-eyes-cheeks": ("blink_left", "blink_right", "cheek_puff", "jaw_open"),
    "FREE": EXPRESSIONS,
}
SIGNED = ("mouth_shift", "brow_raise")  # components that move both ways from rest
CAMERA_DISTANCE = 1.0
HEAD_CENTER = np.array([0.0, -0.02, 0.0])  # where the cameras look


@dataclass(frozen=True)
class Preset:
    height: int
    frames: int
    mesh_resolution: int
    sequences: tuple[str, ...]
    effects: tuple[Effect, ...]


PRESETS: dict[str, Preset] = {
    "tiny": Preset(height=48, frames=4, mesh_resolution=64, sequences=("EXP-1-jaw", "FREE"), effects=()),
    "demo": Preset(height=256, frames=24, mesh_resolution=128, sequences=tuple(SEQUENCES), effects=ALL_EFFECTS),
    "full": Preset(height=802, frames=72, mesh_resolution=192, sequences=tuple(SEQUENCES), effects=ALL_EFFECTS),
}


@dataclass(frozen=True)
class SynthConfig:
    out: OutFolder
    """Participant folder to create (NeRSemble benchmark layout)."""
    preset: Literal["tiny", "demo", "full"] = "demo"
    """tiny: tests (seconds); demo: what `make demo` trains on (256 px tall, ~2 min); full: 802 px tall."""
    seed: int = 0
    """Identity of the synthetic person; another seed gives another person (cross-reenactment)."""
    frames: AtLeast1 | None = None
    """Frames per sequence. Default: the preset's."""
    height: Annotated[int, Range(2)] | None = None
    """Image height in pixels (the width follows NeRSemble's portrait aspect). Default: the preset's."""
    fps: Positive = 25.0
    """Frame rate written into the videos."""
    effects: tuple[Effect, ...] | None = None
    """What the head model does not explain, rendered into the frames (default: the preset's; tiny has none,
    demo and full all): shading (from the deformed surface), wrinkles (crease darkening), mouth (interior and
    teeth), folds (skin folds and lip detail), gaze (eyeball rotation), tracking_noise."""
    tracking_noise: TrackingNoise = TrackingNoise()
    """Error of the written tracking when `tracking_noise` is among the effects."""
    overwrite: bool = False
    """Replace an existing non-empty output folder."""
    jobs: int = 0
    """Processes rendering frames (0: one per CPU core this process may use). The capture is the same for any
    number."""


def rig_cameras(width: int, height: int) -> list[Camera]:
    """16 cameras in rig order on a +-60 degree arc, alternating above and below the eyes, 1 unit away.

    Hold-out serials 222200046, 222200037 and 222200039 end up left, centre and right, as on the real rig.
    """
    fy = 0.84 * height * CAMERA_DISTANCE / 0.30  # a 0.30-unit tall view (head and neck) fills the image
    K = centred_intrinsics(fy, width, height)
    cams = []
    for i, serial in enumerate(nersemble.SERIALS):
        azimuth = math.radians(-60 + 120 * i / (len(nersemble.SERIALS) - 1))
        elevation = math.radians(10.0 if i % 2 == 0 else -8.0)
        eye = HEAD_CENTER + CAMERA_DISTANCE * np.array(
            [math.sin(azimuth) * math.cos(elevation), math.sin(elevation), math.cos(azimuth) * math.cos(elevation)]
        )
        cams.append(Camera(K=K, world_2_cam=look_at(eye, HEAD_CENTER), width=width, height=height, serial=serial))
    return cams


def expression_track(sequence: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth codes (n, D): each active component two random half-sine activations, others at rest.

    A signed component (brow raise / lower, mouth shift left / right) takes a random sign in FREE but both signs,
    one after the other, in the scripted training sequences, as a scripted capture asks for each movement: with
    random signs the demo's training sequences had lowered the brows only, and the raised brows' furrows in FREE
    were an effect no part of the avatar could learn.
    """
    t = np.linspace(0.0, 1.0, n)
    codes = np.zeros((n, len(EXPRESSIONS)))
    for name in SEQUENCES[sequence]:
        k = EXPRESSIONS.index(name)
        for i in range(2):
            center, width = rng.uniform(0.1, 0.9), rng.uniform(0.2, 0.5)
            amp = rng.uniform(0.5, 1.0)
            if name in SIGNED:
                sign = rng.choice([-1.0, 1.0])  # drawn in every sequence, so that later draws stay where they were
                if sequence == "FREE":
                    amp *= sign
                else:  # one way in the first part of the sequence, the other way in the second
                    amp *= (-1.0) ** i
                    center = 0.1 + 0.5 * i + 0.3 * (center - 0.1) / 0.8
            phase = np.clip((t - center) / width + 0.5, 0.0, 1.0)
            codes[:, k] += amp * np.sin(np.pi * phase) ** 2
    return np.clip(codes, -1.0, 1.0)


def head_motion(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Small smooth rigid motion: rotations (n, 3, 3) within a few degrees, translations (n, 3) of millimetres."""
    t = np.linspace(0.0, 2 * np.pi, n)
    yaw = math.radians(rng.uniform(3, 6)) * np.sin(t + rng.uniform(0, 6))
    pitch = math.radians(rng.uniform(2, 4)) * np.sin(0.7 * t + rng.uniform(0, 6))
    rot = np.stack([_rotation(y, p) for y, p in zip(yaw, pitch, strict=True)])
    trans = np.stack([0.004 * np.sin(0.5 * t + rng.uniform(0, 6)) for _ in range(3)], -1)
    return rot, trans


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return Ry @ Rx


def render_view(
    colorize: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    posed: torch.Tensor,
    normals: torch.Tensor,
    canonical: torch.Tensor,
    faces: torch.Tensor,
    cam: Camera,
    supersample: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """One camera: uint8 RGB (H, W, 3) on white and uint8 alpha (H, W).

    `colorize` maps the canonical points (M, 3) and world normals (M, 3) under the covered pixels to RGB.
    """
    W, H = cam.width * supersample, cam.height * supersample
    big = cam.resized(W, H)
    uv, z = big.project(posed.numpy())
    # float32: 1.5x faster than float64 here, the interpolated canonical points within ~2e-5 head units
    verts = torch.from_numpy(np.concatenate([uv, z[:, None]], 1)).float()
    attrs = torch.cat([canonical, normals], 1).float()
    img, mask = rasterize_mesh(verts, faces, attrs, W, H, cull_back=True)
    img = img.double()
    rgb = torch.ones(H, W, 3, dtype=torch.float64)
    if mask.any():
        pts = img[mask]
        rgb[mask] = colorize(pts[:, :3], pts[:, 3:]).double()
    alpha = box_downsample(mask.double(), supersample)
    return to_uint8(box_downsample(rgb, supersample).numpy()), to_uint8(alpha.numpy())


def box_downsample(img: torch.Tensor, s: int) -> torch.Tensor:
    """(H, W, ...) from (H s, W s, ...): the mean of each s x s block, summed from strided views (a reshape and
    mean over the block axes took 6x as long, a tenth of the capture's rendering time)."""
    return sum(img[i::s, j::s] for i in range(s) for j in range(s)) / (s * s)


def frame_geometry(
    head: SyntheticHead,
    mesh: Mesh,
    z: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    effects: tuple[Effect, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed vertices (V, 3) and world normals (V, 3) of one frame: the head model's deformation, plus the
    renderer's fine geometry and the deformed surface's normals when those effects are on."""
    x, n_c, z = mesh.vertices.float(), mesh.normals.float(), z.float()  # (V, 3) canonical; float32 for speed

    def displacement(p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return head.forward_displacement(p, z) + fine_displacement(p, n, z, effects)

    offset = displacement(x, n_c)  # (V, 3)
    normals = n_c.clone()
    if "shading" in effects:
        moving = offset.norm(dim=-1) > 1e-7  # the rest keeps its canonical normal (most of the head's back)
        n_m = n_c[moving]
        normals[moving] = deformed_normals(lambda p: displacement(p, n_m), x[moving], n_m)
    return (x + offset).double() @ rotation.T + translation, normals.double() @ rotation.T


@dataclass(frozen=True)
class _Scene:
    """What rendering any frame needs (sent to each worker process)."""

    head: SyntheticHead
    mesh: Mesh
    cams: list[Camera]
    effects: tuple[Effect, ...]


def render_frame(
    scene: _Scene, code: np.ndarray, rotation: np.ndarray, translation: np.ndarray, gaze: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every camera's (uint8 RGB (H, W, 3), uint8 alpha (H, W)) of one frame: code (D,), head rotation (3, 3),
    translation (3,), gaze (2,)."""
    z = torch.from_numpy(code)
    posed, normals = frame_geometry(
        scene.head, scene.mesh, z, torch.from_numpy(rotation), torch.from_numpy(translation), scene.effects
    )
    colorize = partial(shade, scene.head, z=z, gaze=torch.from_numpy(gaze), effects=scene.effects)
    canonical = scene.mesh.vertices.double()
    return [render_view(colorize, posed, normals, canonical, scene.mesh.faces, cam) for cam in scene.cams]


def render_processes(jobs: int) -> int:
    """The processes `SynthConfig.jobs` asks for: 0 means one per CPU core this process may use."""
    return jobs or len(os.sched_getaffinity(0))


def _write_calibration(paths: ParticipantLayout, cams: list[Camera]) -> None:
    paths.camera_params.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "world_2_cam": {c.serial: c.world_2_cam.tolist() for c in cams},
        "intrinsics": {c.serial: c.K.tolist() for c in cams},
    }
    paths.camera_params.write_text(json.dumps(data, indent=1))


def _tracking(head: SyntheticHead, codes: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> Tracking:
    n = len(codes)
    return Tracking(
        expression=codes.astype(np.float32),
        identity=head.identity_vector,
        rotation=rot.astype(np.float32),
        translation=trans.astype(np.float32),
        scale=np.ones(n, np.float32),
        timesteps=np.arange(n),
    )


def synthesize(cfg: SynthConfig) -> Path:
    """Write the capture into `cfg.out` (atomically: a temporary folder renamed at the end)."""
    preset = PRESETS[cfg.preset]
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise ValueError(f"{out} exists and is not empty; pass --overwrite to replace it")
    n_frames = preset.frames if cfg.frames is None else cfg.frames
    if n_frames < 1:
        raise ValueError(f"frames must be positive, got {n_frames}")
    if cfg.jobs < 0:
        raise ValueError(f"jobs must be 0 (one per core) or more, got {cfg.jobs}")
    height = preset.height if cfg.height is None else cfg.height
    if height < 16:
        raise ValueError(f"height must be at least 16 pixels, got {height}")
    width = (
        int(round(height * nersemble.BENCHMARK_WIDTH / nersemble.BENCHMARK_HEIGHT / 2)) * 2
    )  # NeRSemble's portrait aspect, even for H.264
    effects = preset.effects if cfg.effects is None else cfg.effects
    head = SyntheticHead.from_seed(cfg.seed)
    mesh = head.canonical_mesh(preset.mesh_resolution)
    cams = rig_cameras(width, height)
    rng = np.random.default_rng(cfg.seed + 1000)
    effect_rng = np.random.default_rng(cfg.seed + 2000)  # apart, so that switching effects keeps the codes
    noise = "tracking_noise" in effects

    with atomic_dir(out) as tmp:
        paths = ParticipantLayout(tmp)
        _write_calibration(paths, cams)
        save_description(head, paths.headmodel)
        # Every random draw first, in the order the sequences use them, so the capture does not depend on `jobs`.
        plans = []
        for seq in preset.sequences:
            codes = expression_track(seq, n_frames, rng)
            rot, trans = head_motion(n_frames, rng)
            gaze = gaze_track(n_frames, effect_rng)
            noisy = noisy_tracking(codes, rot, trans, cfg.tracking_noise, effect_rng) if noise else None
            plans.append((seq, codes, rot, trans, gaze, noisy))
        tasks = [
            (codes[t], rot[t], trans[t], gaze[t]) for _, codes, rot, trans, gaze, _ in plans for t in range(n_frames)
        ]
        render = partial(render_frame, _Scene(head, mesh, cams, effects))
        jobs = render_processes(cfg.jobs)
        with ExitStack() as stack:
            if jobs > 1:  # one thread each: the frames are independent, and torch's threads help little here
                pool = stack.enter_context(worker_pool(jobs, initializer=torch.set_num_threads, initargs=(1,)))
                views = pool.map(render, *zip(*tasks, strict=True))
            else:
                views = map(render, *zip(*tasks, strict=True))
            bar = stack.enter_context(tqdm(total=len(tasks), desc=f"synth {cfg.preset}", unit="frame"))
            for seq, codes, rot, trans, _, noisy in plans:
                frames = []  # (T) of per-camera (rgb, alpha)
                for _ in range(n_frames):
                    frames.append(next(views))
                    bar.update(1)
                for c, cam in enumerate(cams):
                    write_video(paths.video(seq, cam.serial), [f[c][0] for f in frames], fps=cfg.fps, quality=9.5)
                    grey = [np.repeat(f[c][1][..., None], 3, -1) for f in frames]
                    write_video(paths.alpha_video(seq, cam.serial), grey, fps=cfg.fps, quality=9.5)
                truth = _tracking(head, codes, rot, trans)
                if noisy is not None:
                    truth.save(paths.true_tracking(seq))
                    _tracking(head, *noisy).save(paths.tracking(seq))
                else:
                    truth.save(paths.tracking(seq))
    log.info(
        "wrote %s: %d sequences x %d frames x %d cameras at %dx%d",
        out,
        len(preset.sequences),
        n_frames,
        len(cams),
        width,
        height,
    )
    return out
