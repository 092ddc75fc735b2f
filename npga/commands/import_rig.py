"""`npga import-rig`: a capture from synchronised per-camera videos and their calibration (npga/data/rig.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from npga.config import OutFolder, Positive
from npga.data.rig import ImportResult, import_rig


@dataclass(frozen=True)
class Config:
    videos: Path
    """Folder with one video `<camera>.mp4` (any container ffmpeg reads) or one image folder `<camera>/` per
    camera; the names must match the calibration's camera names exactly."""
    calibration: Path
    """OpenCV FileStorage .yml/.yaml, JSON `{"cameras": {...}}`, or a COLMAP text model (folder, cameras.txt or
    images.txt); formats: npga/data/rig.py."""
    out: OutFolder
    """Capture folder to create (must not exist or be empty); written atomically."""
    masks: Path | None = None
    """Folder of foreground masks named like the videos (grey, 255 = head); written as alpha maps."""
    background_plates: Path | None = None
    """Folder with one empty-rig image `<camera>.<ext>` per camera; alpha maps by differencing."""
    sequence: str = "IMPORTED"
    """Name of the sequence the videos become (sequences/<NAME>/)."""
    fps: Positive = 25.0
    """Frame rate written for image folders (videos keep their own)."""
    plate_threshold: float = 25.0
    """Background plates: a pixel whose max-over-RGB difference to the plate (5x5 median filtered) exceeds this
    many uint8 levels is foreground."""


def main(cfg: Config) -> ImportResult:
    res = import_rig(
        cfg.videos,
        cfg.calibration,
        cfg.out,
        masks=cfg.masks,
        background_plates=cfg.background_plates,
        sequence=cfg.sequence,
        fps=cfg.fps,
        plate_threshold=cfg.plate_threshold,
    )
    print(
        f"capture written to {res.out}: sequence {res.sequence}, {len(res.cameras)} cameras x {res.n_frames} "
        f"frames at {res.width}x{res.height}"
    )
    if res.undistorted:
        print(f"undistorted the frames of {len(res.undistorted)} camera(s): {', '.join(res.undistorted)}")
    if res.alpha == "none":
        print("no masks or background plates: no alpha maps written; training will run without the silhouette term")
    else:
        print(f"alpha maps from {res.alpha}")
    return res
