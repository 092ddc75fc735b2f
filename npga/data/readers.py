"""Which reader opens a capture folder: a VHAP export (transforms_*.json) or a NeRSemble-layout participant.

Both readers offer the same API (`sequences`, `serials`, `cameras`, `read_frames`, `tracking`, ...), so
`npga prepare` and everything after it never ask which one they have.
"""

from __future__ import annotations

import os

from npga.data.capture import Capture
from npga.data.vhap import VhapCapture, is_vhap_export


def open_capture(root: str | os.PathLike) -> Capture | VhapCapture:
    """The checked capture at `root`, read by the reader its files call for."""
    return VhapCapture.open(root) if is_vhap_export(root) else Capture.open(root)
