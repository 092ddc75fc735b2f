"""Captures (multi-view video, calibration, tracking) and the frame cache that training reads.

`Capture.open(folder)` checks and reads a raw NeRSemble v2, benchmark or synthetic participant folder,
`VhapCapture.open(folder)` a VHAP export, `open_capture(folder)` whichever the folder is;
`npga.data.prepare.prepare(PrepareConfig(...))` (`npga prepare`) decodes it once into a `FrameCache`;
trainers call `open_or_prepare(folder)`. (The `prepare` function is not re-exported here, so that
`npga.data.prepare` stays the module.)
"""

from npga.data.cache import FrameCache
from npga.data.capture import Capture
from npga.data.layout import ParticipantLayout
from npga.data.prepare import DEFAULT_HEIGHT, PrepareConfig, open_or_prepare
from npga.data.readers import open_capture
from npga.data.tracking import Tracking
from npga.data.vhap import VhapCapture

__all__ = [
    "DEFAULT_HEIGHT",
    "Capture",
    "FrameCache",
    "ParticipantLayout",
    "PrepareConfig",
    "Tracking",
    "VhapCapture",
    "open_capture",
    "open_or_prepare",
]
