"""NeRSemble facts in one place: rig serials, hold-out cameras, benchmark table, sizes.

Readers, splits, submissions and videos import these; nothing else spells a serial or a benchmark size.
"""

from __future__ import annotations

# Rig serials, in the order the benchmark lists them.
SERIALS: tuple[str, ...] = (
    "222200042",
    "222200044",
    "222200046",
    "222200040",
    "222200036",
    "222200048",
    "220700191",
    "222200041",
    "222200037",
    "222200038",
    "222200047",
    "222200043",
    "222200049",
    "222200039",
    "222200045",
    "221501007",
)
# Novel-view-synthesis hold-out cameras of the benchmark: left, centre, right.
HOLDOUT_SERIALS: tuple[str, ...] = ("222200046", "222200037", "222200039")
FRONTAL_SERIAL = HOLDOUT_SERIALS[1]
# The sequence the NPGA paper holds out for self-reenactment.
HELDOUT_SEQUENCE = "FREE"
# Empty-rig background images of the raw dataset live in a pseudo-sequence of this name.
BACKGROUND_SEQUENCE = "BACKGROUND"

# Participants and sequences of the NVS benchmark.
NVS_BENCHMARK_SEQUENCES: dict[int, str] = {
    388: "GLASSES",
    422: "EXP-2-eyes",
    443: "FREE",
    445: "EXP-6-tongue-1",
    475: "HAIR",
}
BENCHMARK_WIDTH, BENCHMARK_HEIGHT = 1100, 1604
"""Benchmark images and submissions (W x H)."""
RAW_WIDTH, RAW_HEIGHT = 2200, 3208
"""Raw dataset v2 videos (W x H, portrait)."""
PAPER_HEIGHT = 802
"""The paper trains and evaluates at 550 x 802: half the benchmark's resolution."""
FPS = 73
