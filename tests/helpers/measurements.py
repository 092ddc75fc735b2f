"""What the benchmark scripts' JSON must hold for each figure they measure."""

from __future__ import annotations

import math


def is_measurement(v: object) -> bool:
    """A measured time, rate or memory size: a finite, positive float (not a placeholder 0, None or NaN)."""
    return isinstance(v, float) and math.isfinite(v) and v > 0
