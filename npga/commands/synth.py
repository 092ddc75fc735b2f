"""`npga synth`: a synthetic multi-view capture in the NeRSemble layout, with its head model and tracking."""

from __future__ import annotations

from pathlib import Path

from data_tools.synth import SynthConfig, synthesize

Config = SynthConfig


def main(cfg: Config) -> Path:
    out = synthesize(cfg)
    print(f"synthetic capture written to {out}")
    return out
