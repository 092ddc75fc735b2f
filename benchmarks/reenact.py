"""Self-reenactment of the demo avatar from a monocular video or from a few of the capture's cameras, and the
tracker's speed.

Monocular (default): the driver video is one held-out camera (the centre one, or `--driver`) of the avatar's
held-out sequence; it is tracked with the avatar itself (the camera's calibrated intrinsics; foreground from the
plain-background estimate, or with `--mask alpha` the capture's alpha matte as `npga track --mask` would take
it), the head's distance smoothed over time as `npga track` does, and the tracked codes and poses (moved from the
driver camera into the rig's world with its calibration) render the *other* held-out cameras, and apart from
them the driver's own (one view fixes the distance worst: the other views show what that costs). With `--views
S1 S2 ...` the sequence is tracked from those cameras at once (`npga track --capture --cameras`, frames from the
avatar's frame cache) and every held-out camera is scored.

Reported: the PSNR against the capture, beside the PSNR of rendering the same cameras with the capture's
ground-truth codes and poses (target: within 1.0 dB), with each half of the truth, and (for scale) with the
capture's own noisy multi-view tracking where it has one; per code component that moves, the correlation of the
tracked code with the truth and the ratio of their spreads, and the RMS error relative to the true spread; pose
errors (the head centre's error split into depth along the driver camera's (first view's) axis and across it);
seconds per tracked frame (first frame apart: it searches for the pose and takes more steps), with the machine's
load.

.venv/bin/python benchmarks/reenact.py [--avatar runs/demo/avatar.npga] [--capture data/demo]
    [--driver SERIAL | --views S1 S2 ... [--from-scratch]] [--frames N] [--mask estimate|alpha]
    [--set FIELD=VALUE ...] [--device cpu|cuda] [--out benchmarks/out/reenact.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import torch

from npga.avatar.file import load_avatar
from npga.avatar.model import Avatar
from npga.cameras import Camera
from npga.commands.common import open_training_cache
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking, TrackingExtras
from npga.drive.fit import TrackConfig, TrackLog, head_frame, track_frames
from npga.drive.foreground import border_color, foreground_mask
from npga.drive.multiview import CaptureViews, track_capture
from npga.io.video import iter_video
from npga.metrics import composite, psnr
from npga.nersemble import FRONTAL_SERIAL

MOVING_SPREAD = 0.05  # a code component whose true standard deviation in the sequence is below this does not move


def _frames(path: Path, size: tuple[int, int], grey: bool = False) -> list[np.ndarray]:
    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in iter_video(path, grey=grey)]


def _poses(tracking: Tracking, n: int) -> torch.Tensor:
    """(n, 4, 4) head -> world of the first n frames."""
    return torch.from_numpy(tracking.head_poses[:n]).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--avatar", type=Path, default=Path("runs/demo/avatar.npga"))
    parser.add_argument("--capture", type=Path, default=Path("data/demo"))
    parser.add_argument("--frames", type=int, default=None, help="track only the first N frames")
    parser.add_argument(
        "--tracking",
        type=Path,
        default=None,
        help="score this `npga track` output of the driver video instead of tracking (no timing)",
    )
    parser.add_argument(
        "--mask",
        choices=["estimate", "alpha"],
        default="estimate",
        help="the driver's foreground: estimated from its plain background, or the capture's alpha matte video "
        "(what `npga track --mask` takes)",
    )
    parser.add_argument(
        "--driver",
        default=FRONTAL_SERIAL,
        help="serial of the held-out camera whose video drives (default: the frontal one); the other held-out "
        "cameras are scored",
    )
    parser.add_argument(
        "--views",
        nargs="+",
        default=None,
        help="track from these cameras of the sequence at once (`npga track --capture --cameras`, frames from the "
        "avatar's frame cache) instead of the --driver video; every held-out camera is scored",
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="with --views: leave the capture's own tracking of the sequence out (`npga track --from-scratch`), "
        "each frame fitted from the previous one",
    )
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="FIELD=VALUE",
        help="TrackConfig fields to change from their defaults, e.g. `--set prior=0 iterations=0,16` (a tuple's "
        "entries separated by commas)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/reenact.json"))
    args = parser.parse_args()
    avatar = load_avatar(args.avatar, args.device)
    layout = ParticipantLayout(args.capture)
    seq = avatar.split.heldout_sequences[0]
    cfg = track_config(args.set)
    load = os.getloadavg()
    if args.views:
        views = tuple(args.views)
        result = multiview_tracking(
            args.avatar, avatar, layout, seq, views, args.from_scratch, args.frames, cfg, args.out
        )
    else:
        result = monocular_tracking(avatar, layout, seq, args, cfg)
    report(avatar, layout, seq, result, load, args, cfg)


def track_config(settings: list[str]) -> TrackConfig:
    """TrackConfig with FIELD=VALUE settings, each value read as its default's type (tuples comma-separated)."""
    changes = {}
    for setting in settings:
        name, sep, value = setting.partition("=")
        if not sep or name not in {f.name for f in dataclasses.fields(TrackConfig)}:
            raise SystemExit(f"--set {setting}: not FIELD=VALUE with FIELD one of TrackConfig's fields")
        default = getattr(TrackConfig, name)
        if isinstance(default, tuple):
            changes[name] = tuple(type(default[0])(v) for v in value.split(","))
        else:
            changes[name] = type(default)(value)
    return TrackConfig(**changes)


@dataclass
class Tracked:
    """What a tracking run gives the scoring: codes and head -> world poses per frame, and how it was made."""

    codes: torch.Tensor  # (T, D)
    poses: torch.Tensor  # (T, 4, 4) head -> world
    ious: list[float]
    times: list[float]  # seconds per frame (nan: not timed)
    input: str  # what was tracked, in words
    scored: list[str]  # serials scored against the capture
    reference: str  # the camera along whose axis the depth error is measured (the driver, or the first view)
    driver: str | None = None  # the monocular driver's camera (scored apart: it saw the frames)
    raw_poses: torch.Tensor | None = None  # (T, 4, 4) before the distance was smoothed


def multiview_tracking(
    file: Path,
    avatar: Avatar,
    layout: ParticipantLayout,
    seq: str,
    views: tuple[str, ...],
    from_scratch: bool,
    frames: int | None,
    cfg: TrackConfig,
    out: Path,
) -> Tracked:
    """The sequence tracked from several of its calibrated cameras at once, as `npga track --capture` does."""
    cache = open_training_cache(file, avatar, layout.root)
    if unknown := set(views) - set(cache.serials):
        raise SystemExit(f"--views {sorted(unknown)}: not cameras of {cache.root} ({', '.join(cache.serials)})")
    start = time.perf_counter()
    path = track_capture(
        CaptureViews(cache, seq, views, from_scratch), avatar, file, out.with_suffix(".tracking.npz"), cfg
    )
    seconds = time.perf_counter() - start
    tracking = Tracking.load(path)
    T = min(tracking.n_frames, frames or tracking.n_frames)
    return Tracked(
        codes=torch.from_numpy(tracking.expression[:T]).float(),
        poses=_poses(tracking, T),
        ious=list(TrackingExtras.load(path).iou[:T]),
        times=[seconds / tracking.n_frames] * T,
        input=f"{seq} from cameras {', '.join(views)} ({tracking.n_frames} frames of the cache"
        + (", from scratch)" if from_scratch else ", from the capture's tracking where it has one)"),
        scored=list(avatar.split.heldout_serials),
        reference=views[0],
    )


def monocular_tracking(
    avatar: Avatar, layout: ParticipantLayout, seq: str, args: argparse.Namespace, cfg: TrackConfig
) -> Tracked:
    """The driver camera's video tracked as `npga track --video` does (or its tracking file read back)."""
    driver_serial = args.driver
    if driver_serial not in avatar.split.heldout_serials:
        raise SystemExit(
            f"--driver {driver_serial} is not a held-out camera of the avatar "
            f"({', '.join(avatar.split.heldout_serials)})"
        )
    others = [s for s in avatar.split.heldout_serials if s != driver_serial]
    calib = json.loads(layout.camera_params.read_text())
    driver_w2c = np.asarray(calib["world_2_cam"][driver_serial])
    video = layout.video(seq, driver_serial)
    driver_frames = list(islice(iter_video(video), args.frames))
    h, w = driver_frames[0].shape[:2]
    K = np.asarray(calib["intrinsics"][driver_serial])  # at the video's size (benchmark layout)
    if args.mask == "alpha":
        mattes = islice(iter_video(layout.alpha_video(seq, driver_serial), grey=True), len(driver_frames))
        inputs = [(f, m / 255.0) for f, m in zip(driver_frames, mattes, strict=True)]
    else:
        background = border_color(driver_frames[:3])
        inputs = [(f, foreground_mask(f, background)) for f in driver_frames]

    times, to_camera, raw_to_camera, ious = [math.nan], [], [], []
    if args.tracking is not None:
        tracked_file = Tracking.load(args.tracking)
        to_camera = list(tracked_file.head_poses[: len(inputs)])
        tracked_codes = torch.from_numpy(tracked_file.expression[: len(to_camera)]).float()
        ious = list(TrackingExtras.load(args.tracking).iou[: len(to_camera)])
    else:
        times, track_log = [], TrackLog.empty(avatar.config.expression_dim)
        start = time.perf_counter()
        for tracked in track_frames(avatar, iter(inputs), K, cfg):
            now = time.perf_counter()
            times.append(now - start)
            start = now
            track_log = track_log.appended(tracked.fit)
        raw_to_camera = list(track_log.head_to_camera)
        track_log = track_log.with_smoothed_distance(cfg.distance_smoothing, head_frame(avatar))  # as `npga track`
        to_camera, ious = list(track_log.head_to_camera), list(track_log.iou)
        tracked_codes = torch.from_numpy(track_log.code).float()
    cam_2_world = np.linalg.inv(driver_w2c)
    return Tracked(
        codes=tracked_codes,
        poses=torch.from_numpy(np.stack([cam_2_world @ p for p in to_camera])).float(),
        ious=[float(v) for v in ious],
        times=times,
        input=f"{seq}/cam_{driver_serial} ({w}x{h}, {len(to_camera)} frames), foreground: {args.mask}",
        scored=others,
        reference=driver_serial,
        driver=driver_serial,
        raw_poses=torch.from_numpy(np.stack([cam_2_world @ p for p in raw_to_camera])).float()
        if raw_to_camera
        else None,
    )


def report(
    avatar: Avatar,
    layout: ParticipantLayout,
    seq: str,
    tracked: Tracked,
    load: tuple[float, ...],
    args: argparse.Namespace,
    cfg: TrackConfig,
) -> None:
    tracked_codes, tracked_poses, times, ious = tracked.codes, tracked.poses, tracked.times, tracked.ious
    T = len(tracked_codes)
    # The codes and poses that rendered the frames (a capture with simulated tracking noise keeps them apart).
    true_file = layout.true_tracking(seq)
    truth = Tracking.load(true_file if true_file.is_file() else layout.tracking(seq))
    true_poses = _poses(truth, T)
    true_codes = torch.from_numpy(truth.expression[:T]).float()

    cams = {s: avatar.cameras[s] for s in tracked.scored + ([tracked.driver] if tracked.driver else [])}
    bg = avatar.background.cpu()
    # Tracked codes and poses, the truth, and each half of the truth (which part of the gap is whose).
    runs = {
        "tracked": (tracked_codes, tracked_poses),
        "ground_truth": (true_codes, true_poses),
        "tracked_codes_true_poses": (tracked_codes, true_poses),
        "true_codes_tracked_poses": (true_codes, tracked_poses),
    }
    if true_file.is_file():  # what the capture's own (multi-view, noisy) tracking gives, for scale
        written = Tracking.load(layout.tracking(seq))
        runs["capture_tracking"] = (torch.from_numpy(written.expression[:T]).float(), _poses(written, T))
    if tracked.raw_poses is not None:  # what smoothing the distance buys
        runs["tracked_without_distance_smoothing"] = (tracked_codes, tracked.raw_poses)
    scores: dict[str, list[float]] = {name: [] for name in runs}
    driver_scores: dict[str, list[float]] = {name: [] for name in runs}  # the driver's own view
    for serial, cam in cams.items():
        size = (cam.width, cam.height)
        gt_rgb = _frames(layout.video(seq, serial), size)[:T]
        gt_alpha = _frames(layout.alpha_video(seq, serial), size, grey=True)[:T]
        for t in range(T):
            gt = composite(
                torch.from_numpy(gt_rgb[t] / 255.0).float(),
                torch.from_numpy(gt_alpha[t] / 255.0).float()[..., None],
                bg,
            )
            for name, (codes, poses) in runs.items():
                rgb, _ = avatar.render_code(codes[t], poses[t], [Camera(cam.K, cam.world_2_cam, *size, serial)])
                (driver_scores if serial == tracked.driver else scores)[name].append(float(psnr(rgb[0].cpu(), gt)))

    spread = torch.from_numpy(truth.expression).float().std(0).clamp_min(1e-6)  # (D,) its motion in the sequence
    code_rms = ((tracked_codes - true_codes).square().mean(0).sqrt() / spread).numpy()  # (D,)
    # Per component: does the tracked code follow the truth (correlation), with the truth's amplitude (spread)?
    scored_spread = true_codes.std(0)  # (D,) over the tracked frames
    moving = [k for k in range(true_codes.shape[1]) if float(scored_spread[k]) > MOVING_SPREAD]
    correlation = {k: float(np.corrcoef(tracked_codes[:, k], true_codes[:, k])[0, 1]) for k in moving}
    spread_ratio = {k: float(tracked_codes[:, k].std() / scored_spread[k]) for k in moving}
    rel = tracked_poses[:, :3, :3].transpose(1, 2) @ true_poses[:, :3, :3]
    angle = torch.rad2deg(torch.acos(((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    shift = (tracked_poses[:, :3, 3] - true_poses[:, :3, 3]).norm(dim=-1)
    # The head centre's error in the driver camera's frame: along its optical axis (depth) and across it.
    centre = avatar.params["means"].detach().mean(0).cpu().double()  # (3,) canonical
    w2c = torch.from_numpy(avatar.cameras[tracked.reference].world_2_cam).double()
    posed = [w2c @ p.double() for p in (tracked_poses, true_poses)]  # (T, 4, 4) head -> driver camera
    in_camera = [p[:, :3, :3] @ centre + p[:, :3, 3] for p in posed]  # (T, 3) the head centre
    error_cam = in_camera[0] - in_camera[1]  # (T, 3)
    depth_error, lateral_error = error_cam[:, 2], error_cam[:, :2].norm(dim=-1)
    warm = times[1:] or times
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "load_average_before": load,
        "gaussians": avatar.n_gaussians,
        "input": tracked.input,
        "track_config": {k: v for k, v in dataclasses.asdict(cfg).items() if v != getattr(TrackConfig, k)},
        "seconds_first_frame": times[0],
        "seconds_per_frame": sum(times) / T,
        "seconds_per_later_frame": sum(warm) / len(warm),
        "psnr_tracked": float(np.mean(scores["tracked"])),
        "psnr_ground_truth_codes": float(np.mean(scores["ground_truth"])),
        "psnr_gap_db": float(np.mean(scores["ground_truth"]) - np.mean(scores["tracked"])),
        "psnr_tracked_codes_true_poses": float(np.mean(scores["tracked_codes_true_poses"])),
        "psnr_true_codes_tracked_poses": float(np.mean(scores["true_codes_tracked_poses"])),
        "psnr_tracked_without_distance_smoothing": float(
            np.mean(scores.get("tracked_without_distance_smoothing", [math.nan]))
        ),
        "psnr_capture_tracking": float(np.mean(scores.get("capture_tracking", [math.nan]))),
        "driver_view": tracked.driver,
        "psnr_driver_view_tracked": float(np.mean(driver_scores["tracked"] or [math.nan])),
        "psnr_driver_view_ground_truth_codes": float(np.mean(driver_scores["ground_truth"] or [math.nan])),
        "distance_smoothing_frames": cfg.distance_smoothing if tracked.raw_poses is not None else None,
        "rendered_cameras": tracked.scored,
        "code_correlation": {str(k): v for k, v in correlation.items()},
        "code_spread_ratio": {str(k): v for k, v in spread_ratio.items()},
        "code_rms_over_spread": {str(i): float(v) for i, v in enumerate(code_rms)},
        "code_rms_over_spread_mean": float(code_rms.mean()),
        "rotation_error_deg_mean": float(angle.mean()),
        "translation_error_mean": float(shift.mean()),
        "depth_error_mean": float(depth_error.mean()),
        "depth_error_abs_mean": float(depth_error.abs().mean()),
        "lateral_error_mean": float(lateral_error.mean()),
        "per_frame": {
            "rotation_error_deg": angle.tolist(),
            "depth_error": depth_error.tolist(),
            "lateral_error": lateral_error.tolist(),
            "iou": [float(v) for v in ious],
        },
        "silhouette_iou_mean": float(np.mean(ious)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        f"{result['device']}, {result['threads']} threads, load {load[0]:.1f}: {tracked.input}, "
        f"{avatar.n_gaussians} Gaussians"
    )
    print(
        f"tracking: first frame {times[0]:.2f} s, later frames {result['seconds_per_later_frame']:.2f} s/frame, "
        f"all {result['seconds_per_frame']:.2f} s/frame"
    )
    print(
        f"self-reenactment PSNR on {tracked.scored}: tracked {result['psnr_tracked']:.2f} dB, ground-truth codes "
        f"{result['psnr_ground_truth_codes']:.2f} dB (gap {result['psnr_gap_db']:.2f} dB); tracked codes with true "
        f"poses {result['psnr_tracked_codes_true_poses']:.2f} dB, true codes with tracked poses "
        f"{result['psnr_true_codes_tracked_poses']:.2f} dB; without smoothing the distance "
        f"{result['psnr_tracked_without_distance_smoothing']:.2f} dB; the capture's own (noisy) tracking "
        f"{result['psnr_capture_tracking']:.2f} dB"
    )
    if tracked.driver is not None:
        print(
            f"seen from the driver's own camera {tracked.driver}: tracked {result['psnr_driver_view_tracked']:.2f} dB, "
            f"ground-truth codes {result['psnr_driver_view_ground_truth_codes']:.2f} dB"
        )
    print(f"code RMS error / spread: mean {code_rms.mean():.2f}, per component {np.round(code_rms, 2).tolist()}")
    print(
        "components that move (true spread > "
        f"{MOVING_SPREAD}): correlation with the truth "
        + ", ".join(f"{k}: {v:.2f}" for k, v in correlation.items())
        + "; tracked spread / true spread "
        + ", ".join(f"{k}: {v:.2f}" for k, v in spread_ratio.items())
    )
    print(
        f"pose: rotation {result['rotation_error_deg_mean']:.2f} deg, translation "
        f"{result['translation_error_mean'] * 1000:.1f} mm; head centre in camera {tracked.reference}: depth "
        f"{result['depth_error_mean'] * 1000:+.1f} mm mean ({result['depth_error_abs_mean'] * 1000:.1f} mm mean "
        f"absolute), across {result['lateral_error_mean'] * 1000:.1f} mm; IoU {result['silhouette_iou_mean']:.3f}"
    )
    print(f"wrote {args.out}")
    if not math.isfinite(result["psnr_tracked"]):
        raise SystemExit("non-finite PSNR")


if __name__ == "__main__":
    main()
