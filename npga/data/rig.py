"""Import a calibrated multi-camera recording (per-camera videos or image folders) as a capture.

`import_rig` turns synchronised per-camera videos plus a calibration (OpenCV FileStorage, JSON or COLMAP text,
read by `read_calibration`) into a participant folder in the benchmark layout, which `npga.data.capture.Capture`
reads unchanged. Every input is checked before the first frame is written, and the capture is written into a
temporary folder next to the output and renamed at the end, so a bad rig never leaves half a capture behind.
Formats (frames, masks, background plates, calibrations, pixel centres): docs/captures.md.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from npga.data.layout import ParticipantLayout
from npga.geometry import ROTATION_TOL, check_rotation, even_side, quat_to_matrix
from npga.io.atomic import atomic_dir
from npga.io.video import iter_video, probe_video, write_video

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DIST_LENGTHS = (4, 5, 8, 12, 14)  # what OpenCV's distortion model accepts


@dataclass(frozen=True)
class RigCamera:
    """One calibrated camera as read from a calibration file (OpenCV axes, world -> camera)."""

    name: str
    K: np.ndarray  # (3, 3), pixel centres at +0.5 (npga / COLMAP convention)
    dist: np.ndarray | None  # OpenCV coefficients k1 k2 p1 p2 [k3 ...], None or all zero: no distortion
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,)
    size: tuple[int, int] | None = None  # (W, H) the intrinsics were calibrated for, if the file gives it

    @property
    def world_2_cam(self) -> np.ndarray:
        w2c = np.eye(4)
        w2c[:3, :3] = self.R
        w2c[:3, 3] = self.t
        return w2c

    @property
    def distorted(self) -> bool:
        return self.dist is not None and bool(np.any(self.dist != 0))

    @property
    def K_opencv(self) -> np.ndarray:
        """K with the top-left pixel centre at (0, 0), as cv2's undistortion expects."""
        K = self.K.copy()
        K[0, 2] -= 0.5
        K[1, 2] -= 0.5
        return K


# ---- calibration readers -------------------------------------------------------------------------------


def _array(value: object, where: str) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"{where} is not numeric ({e})") from e
    if not np.isfinite(a).all():
        raise ValueError(f"{where} contains NaN or inf")
    return a


def _camera_from_fields(name: str, get: Callable[[str], object | None], where: str, pixel_shift: float) -> RigCamera:
    """Build a camera from a field getter (None when a key is absent), accepting the documented aliases."""

    def first(*keys: str) -> tuple[str, object | None]:
        for k in keys:
            v = get(k)
            if v is not None:
                return k, v
        return keys[0], None

    key, K = first("K", "camera_matrix")
    if K is None:
        raise ValueError(f"{where}: camera {name} has no intrinsics ('K' or 'camera_matrix')")
    K = _array(K, f"{where}: {key} of camera {name}")
    if K.shape != (3, 3):
        raise ValueError(f"{where}: {key} of camera {name} has shape {K.shape}, expected (3, 3)")
    if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0 or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"{where}: {key} of camera {name} is not an intrinsic matrix (fx, fy > 0, last row 0 0 1)")
    K = K.copy()
    K[0, 2] += pixel_shift
    K[1, 2] += pixel_shift

    key, dist = first("dist", "distortion_coefficients")
    if dist is not None:
        dist = _array(dist, f"{where}: {key} of camera {name}").reshape(-1)
        if dist.size not in DIST_LENGTHS:
            raise ValueError(
                f"{where}: {key} of camera {name} has {dist.size} coefficients, expected one of "
                f"{DIST_LENGTHS} (k1 k2 p1 p2 [k3 ...])"
            )

    key, R = first("R", "Rot", "rvec")
    if R is None:
        raise ValueError(f"{where}: camera {name} has no rotation ('R', 'Rot' or 'rvec')")
    R = _array(R, f"{where}: {key} of camera {name}")
    if R.size == 3:
        R = cv2.Rodrigues(R.reshape(3, 1))[0]
    elif R.shape != (3, 3):
        raise ValueError(f"{where}: {key} of camera {name} has shape {R.shape}, expected (3, 3) or a 3-vector")
    check_rotation(R, f"{where}: {key} of camera {name}")

    key, t = first("T", "tvec", "t")
    if t is None:
        raise ValueError(f"{where}: camera {name} has no translation ('T' or 'tvec')")
    t = _array(t, f"{where}: {key} of camera {name}").reshape(-1)
    if t.size != 3:
        raise ValueError(f"{where}: {key} of camera {name} has {t.size} values, expected 3")

    w, h = get("width"), get("height")
    size = None
    if w is not None or h is not None:
        if w is None or h is None:
            raise ValueError(f"{where}: camera {name} gives only one of width and height")
        wh = _array([w, h], f"{where}: width/height of camera {name}").reshape(-1)
        if wh.size != 2 or (wh <= 0).any() or (wh != np.round(wh)).any():
            raise ValueError(f"{where}: width/height of camera {name} must be positive integers, got {w}x{h}")
        size = (int(wh[0]), int(wh[1]))
    return RigCamera(name=name, K=K, dist=dist, R=R, t=t, size=size)


def _fs_value(node: cv2.FileNode) -> object | None:
    if node.empty() or node.isNone():
        return None
    if node.isMap():
        m = node.mat()
        return None if m is None else m
    if node.isSeq():
        return [_fs_value(node.at(i)) for i in range(node.size())]
    if node.isInt() or node.isReal():
        return node.real()
    if node.isString():
        return node.string()
    return None


def read_opencv_yaml(path: Path) -> dict[str, RigCamera]:
    """Cameras of an OpenCV FileStorage file (see the module docstring)."""
    try:
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except cv2.error as e:
        raise ValueError(f"{path}: not a readable OpenCV FileStorage file ({str(e).strip()})") from e
    if not fs.isOpened():
        raise ValueError(f"{path}: not a readable OpenCV FileStorage file")
    try:
        names_node = fs.getNode("names")
        if names_node.empty():
            names_node = fs.getNode("cameras")
        if names_node.empty() or not names_node.isSeq():
            raise ValueError(f"{path}: no top-level sequence 'names' (or 'cameras') listing the camera names")
        names = [names_node.at(i).string() or str(int(names_node.at(i).real())) for i in range(names_node.size())]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: camera names are listed twice in 'names'")
        cams = {}
        for name in names:
            node = fs.getNode(name) if (name[:1].isalpha() or name[:1] == "_") else None
            if node is not None and node.isMap():

                def get(key: str, node: cv2.FileNode = node) -> object | None:
                    return _fs_value(node.getNode(key))
            else:

                def get(key: str, name: str = name) -> object | None:
                    return _fs_value(fs.getNode(f"{key}_{name}"))

            cams[name] = _camera_from_fields(name, get, str(path), pixel_shift=0.5)
        return cams
    finally:
        fs.release()


def read_json(path: Path) -> dict[str, RigCamera]:
    """Cameras of a JSON calibration `{"cameras": {name: {...}}}` (see the module docstring)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), dict) or not data["cameras"]:
        raise ValueError(f"{path}: expected {{'cameras': {{name: {{'K', 'dist', 'R' or 'rvec', 'T' or 'tvec'}}}}}}")
    cams = {}
    for name, fields in data["cameras"].items():
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: camera {name} is not a JSON object")
        cams[str(name)] = _camera_from_fields(str(name), fields.get, str(path), pixel_shift=0.5)
    return cams


# COLMAP model -> (parameter names); distortion coefficients map onto OpenCV's k1 k2 p1 p2.
_COLMAP_MODELS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
}


def _colmap_lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"COLMAP file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a readable text file ({e})") from e
    return [(i + 1, line.strip()) for i, line in enumerate(text.splitlines()) if not line.lstrip().startswith("#")]


def _floats(parts: list[str], where: str) -> np.ndarray:
    try:
        values = [float(v) for v in parts]
    except ValueError as e:
        raise ValueError(f"{where}: not a number ({e})") from e
    return _array(values, where)


def read_colmap(path: Path) -> dict[str, RigCamera]:
    """Cameras of a COLMAP text model (folder, cameras.txt or images.txt; see the module docstring)."""
    folder = path if path.is_dir() else path.parent
    cameras_txt, images_txt = folder / "cameras.txt", folder / "images.txt"
    intrinsics: dict[str, tuple[np.ndarray, np.ndarray | None, tuple[int, int]]] = {}
    for lineno, line in _colmap_lines(cameras_txt):
        if not line:
            continue
        parts = line.split()
        where = f"{cameras_txt}:{lineno}"
        if len(parts) < 4 or parts[1] not in _COLMAP_MODELS:
            raise ValueError(
                f"{where}: expected 'CAMERA_ID MODEL WIDTH HEIGHT PARAMS...' with MODEL one of "
                f"{sorted(_COLMAP_MODELS)}, got {line!r}"
            )
        names = _COLMAP_MODELS[parts[1]]
        if len(parts) != 4 + len(names):
            raise ValueError(f"{where}: model {parts[1]} takes {len(names)} parameters ({' '.join(names)})")
        values = _floats(parts[2:], where)
        W, H = values[:2]
        p = dict(zip(names, values[2:], strict=True))
        fx, fy = p.get("fx", p.get("f")), p.get("fy", p.get("f"))
        K = np.array([[fx, 0, p["cx"]], [0, fy, p["cy"]], [0, 0, 1]])
        dist = np.array([p.get("k1", 0), p.get("k2", 0), p.get("p1", 0), p.get("p2", 0)])
        intrinsics[parts[0]] = (K, dist if dist.any() else None, (int(W), int(H)))

    cams: dict[str, RigCamera] = {}
    lines = iter(_colmap_lines(images_txt))
    for lineno, line in lines:
        if not line:
            continue
        next(lines, None)  # the POINTS2D line of this image (may be empty)
        where = f"{images_txt}:{lineno}"
        parts = line.split(maxsplit=9)
        if len(parts) != 10:
            raise ValueError(f"{where}: expected 'IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME', got {line!r}")
        q, t = _floats(parts[1:5], where), _floats(parts[5:8], where)
        if abs(np.linalg.norm(q) - 1) > ROTATION_TOL:
            raise ValueError(f"{where}: quaternion {q} is not of unit length (|q| = {np.linalg.norm(q):.4g})")
        if parts[8] not in intrinsics:
            raise ValueError(f"{where}: CAMERA_ID {parts[8]} is not in {cameras_txt}")
        image = Path(parts[9].strip().replace("\\", "/"))
        name = image.parent.name if image.parent != Path(".") else image.stem
        K, dist, size = intrinsics[parts[8]]
        cam = RigCamera(name=name, K=K, dist=dist, R=quat_to_matrix(torch.from_numpy(q)).numpy(), t=t, size=size)
        if name in cams:
            old = cams[name]
            if not (np.allclose(old.world_2_cam, cam.world_2_cam, atol=1e-6) and np.array_equal(old.K, cam.K)):
                raise ValueError(
                    f"{where}: image {image} of camera {name} has another pose or camera than an "
                    "earlier image of that camera"
                )
        cams[name] = cam
    if not cams:
        raise ValueError(f"{images_txt}: lists no image")
    return cams


def read_calibration(path: str | os.PathLike) -> dict[str, RigCamera]:
    """{camera name: RigCamera} from an OpenCV FileStorage, JSON or COLMAP text calibration."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"calibration not found: {path}")
    if path.is_dir() or path.name in ("cameras.txt", "images.txt"):
        cams = read_colmap(path)
    elif path.suffix.lower() in (".yml", ".yaml", ".xml"):
        cams = read_opencv_yaml(path)
    elif path.suffix.lower() == ".json":
        cams = read_json(path)
    else:
        raise ValueError(
            f"{path}: unknown calibration format (expected .yml/.yaml/.xml, .json, or a COLMAP "
            "folder / cameras.txt / images.txt)"
        )
    if not cams:
        raise ValueError(f"{path}: lists no camera")
    return cams


# ---- frame sources --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameSource:
    """One camera's frames: a video file or a folder of images."""

    path: Path
    n_frames: int
    width: int
    height: int
    fps: float | None  # None for image folders
    images: tuple[Path, ...] = ()

    def frames(self, grey: bool = False) -> Iterator[np.ndarray]:
        """uint8 (H, W, 3) RGB frames, or (H, W) when `grey`, in order; checks count and size as it goes."""
        if self.images:
            it: Iterator[np.ndarray] = (_read_image(p, grey) for p in self.images)
        else:
            it = iter_video(self.path, grey=grey)
        n = 0
        for frame in it:
            if frame.shape[:2] != (self.height, self.width):
                raise ValueError(
                    f"{self.path}: frame {n} is {frame.shape[1]}x{frame.shape[0]}, expected {self.width}x{self.height}"
                )
            n += 1
            if n > self.n_frames:
                break
            yield frame
        if n != self.n_frames:
            raise ValueError(f"{self.path}: decoded {n} frames, but {self.n_frames} were expected")


def _read_image(path: Path, grey: bool = False) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return img if grey else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"{path}: not a readable image ({e})") from e


def open_source(path: Path) -> FrameSource:
    """Probe a video or an image folder (sizes of all images read from their headers)."""
    if path.is_dir():
        images = tuple(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS))
        if not images:
            raise ValueError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        sizes = [_image_size(p) for p in images]
        for p, s in zip(images, sizes, strict=True):
            if s != sizes[0]:
                raise ValueError(f"{p}: {s[0]}x{s[1]} image, but {images[0]} is {sizes[0][0]}x{sizes[0][1]}")
        return FrameSource(path, len(images), sizes[0][0], sizes[0][1], None, images)
    info = probe_video(path)
    return FrameSource(path, info.n_frames, info.width, info.height, info.fps)


def find_sources(folder: Path, what: str) -> dict[str, Path]:
    """{camera name: video file or image folder} in `folder` (hidden entries ignored)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        name = p.name if p.is_dir() else p.stem
        if name in found:
            raise ValueError(f"{p}: camera {name} has two {what} sources ({found[name].name} and {p.name})")
        found[name] = p
    if not found:
        raise ValueError(f"{folder}: no {what} (one video or image folder per camera)")
    return found


# ---- the import ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    out: Path
    sequence: str
    cameras: tuple[str, ...]
    n_frames: int
    width: int
    height: int
    alpha: str  # "masks", "background plates" or "none"
    undistorted: tuple[str, ...]  # cameras whose frames were undistorted


def _match(calib: dict[str, RigCamera], sources: dict[str, Path], calib_path: Path, folder: Path, what: str) -> None:
    missing = sorted(set(calib) - set(sources))
    if missing:
        raise ValueError(
            f"{calib_path}: camera {missing[0]} has no {what} in {folder} "
            f"(expected {folder / missing[0]}.mp4 or a folder {folder / missing[0]}/)"
        )
    extra = sorted(set(sources) - set(calib))
    if extra:
        raise ValueError(
            f"{sources[extra[0]]}: camera {extra[0]} is not in the calibration {calib_path} (it lists {sorted(calib)})"
        )


def _check_intrinsics(cam: RigCamera, src: FrameSource, calib_path: Path) -> None:
    W, H = src.width, src.height
    if cam.size is not None and cam.size != (W, H):
        raise ValueError(
            f"{calib_path}: camera {cam.name} is calibrated for {cam.size[0]}x{cam.size[1]} images, "
            f"but {src.path} is {W}x{H}"
        )
    cx, cy = cam.K[0, 2], cam.K[1, 2]
    if not (0 < cx < W and 0 < cy < H):
        raise ValueError(
            f"{calib_path}: principal point ({cx:.1f}, {cy:.1f}) of camera {cam.name} lies outside "
            f"the {W}x{H} images of {src.path}; the intrinsics are for another resolution"
        )


def _undistorter(cam: RigCamera, size: tuple[int, int]) -> Callable[[np.ndarray], np.ndarray]:
    if not cam.distorted:
        return lambda img: img
    K = cam.K_opencv
    m1, m2 = cv2.initUndistortRectifyMap(K, cam.dist, None, K, size, cv2.CV_32FC1)
    return lambda img: cv2.remap(img, m1, m2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def plate_alpha(frame: np.ndarray, plate: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 (H, W) alpha from differencing a frame with its empty-rig plate (see the module docstring)."""
    diff = np.abs(frame.astype(np.int16) - plate.astype(np.int16)).max(-1).astype(np.float32)
    diff = cv2.medianBlur(diff, 5)  # removes speckle (noise, compression) without moving edges
    hard = (diff > threshold).astype(np.float32) * 255
    return (cv2.GaussianBlur(hard, (3, 3), 0) + 0.5).astype(np.uint8)


def import_rig(
    videos: str | os.PathLike,
    calibration: str | os.PathLike,
    out: str | os.PathLike,
    masks: str | os.PathLike | None = None,
    background_plates: str | os.PathLike | None = None,
    sequence: str = "IMPORTED",
    fps: float = 25.0,
    plate_threshold: float = 25.0,
    quality: float = 9.5,
) -> ImportResult:
    """Write the capture `out` (see the module docstring); `fps` is used only for image folders."""
    videos, calibration, out = Path(videos), Path(calibration), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and is not empty; choose a new output folder")
    if not sequence or "/" in sequence or sequence.startswith(".") or sequence == "BACKGROUND":
        raise ValueError(f"bad sequence name {sequence!r}")
    if masks is not None and background_plates is not None:
        raise ValueError("give either masks or background plates, not both")
    calib = read_calibration(calibration)
    sources = find_sources(videos, "video")
    _match(calib, sources, calibration, videos, "video")
    names = sorted(calib)
    srcs = {n: open_source(sources[n]) for n in names}
    ref = srcs[names[0]]
    for n in names:
        s = srcs[n]
        if (s.width, s.height) != (ref.width, ref.height):
            raise ValueError(f"{s.path}: {s.width}x{s.height} frames, but {ref.path} has {ref.width}x{ref.height}")
        if s.n_frames != ref.n_frames:
            raise ValueError(
                f"{s.path}: {s.n_frames} frames, but {ref.path} has {ref.n_frames}; "
                "the videos must be synchronised and equally long"
            )
        _check_intrinsics(calib[n], s, calibration)
    W, H = ref.width, ref.height
    if W < 2 or H < 2:
        raise ValueError(f"{ref.path}: frames of {W}x{H} are too small")
    Wc, Hc = even_side(W), even_side(H)  # H.264 needs even sizes: drop the last column / row
    rate = ref.fps if ref.fps else fps

    mask_srcs: dict[str, FrameSource] = {}
    plates: dict[str, np.ndarray] = {}
    if masks is not None:
        masks = Path(masks)
        found = find_sources(masks, "mask")
        _match(calib, found, calibration, masks, "mask")
        for n in names:
            m = open_source(found[n])
            if (m.width, m.height, m.n_frames) != (W, H, ref.n_frames):
                raise ValueError(
                    f"{m.path}: {m.n_frames} masks of {m.width}x{m.height}, but {srcs[n].path} has "
                    f"{ref.n_frames} frames of {W}x{H}"
                )
            mask_srcs[n] = m
    elif background_plates is not None:
        background_plates = Path(background_plates)
        found = find_sources(background_plates, "background plate")
        _match(calib, found, calibration, background_plates, "background plate")
        for n in names:
            if found[n].is_dir() or found[n].suffix.lower() not in IMAGE_EXTENSIONS:
                raise ValueError(f"{found[n]}: a background plate must be one image ({', '.join(IMAGE_EXTENSIONS)})")
            plate = _read_image(found[n])
            if plate.shape[:2] != (H, W):
                raise ValueError(
                    f"{found[n]}: {plate.shape[1]}x{plate.shape[0]} plate, but the frames of camera {n} are {W}x{H}"
                )
            plates[n] = plate

    with atomic_dir(out) as tmp:
        paths = ParticipantLayout(tmp)
        for n in names:
            undistort = _undistorter(calib[n], (W, H))
            crop = (slice(0, Hc), slice(0, Wc))
            frames = (undistort(f)[crop] for f in srcs[n].frames())
            write_video(paths.video(sequence, n), frames, fps=rate, quality=quality)
            if n in mask_srcs:
                alphas = (np.repeat(undistort(a)[crop][..., None], 3, -1) for a in mask_srcs[n].frames(grey=True))
            elif n in plates:
                plate = undistort(plates[n])
                alphas = (
                    np.repeat(plate_alpha(undistort(f), plate, plate_threshold)[crop][..., None], 3, -1)
                    for f in srcs[n].frames()
                )
            else:
                continue
            write_video(paths.alpha_video(sequence, n), alphas, fps=rate, quality=quality)
        paths.camera_params.parent.mkdir(parents=True, exist_ok=True)
        params = {
            "world_2_cam": {n: calib[n].world_2_cam.tolist() for n in names},
            "intrinsics": {n: calib[n].K.tolist() for n in names},
        }
        paths.camera_params.write_text(json.dumps(params, indent=1))
    alpha = "masks" if mask_srcs else "background plates" if plates else "none"
    undistorted = tuple(n for n in names if calib[n].distorted)
    log.info(
        "imported %d cameras x %d frames at %dx%d into %s (alpha: %s)", len(names), ref.n_frames, Wc, Hc, out, alpha
    )
    return ImportResult(out, sequence, tuple(names), ref.n_frames, Wc, Hc, alpha, undistorted)
