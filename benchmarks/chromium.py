"""Debian's headless Chromium as the browser benchmarks launch it through Playwright (no `playwright install`).

The benchmarks run as scripts (`python benchmarks/X.py`), which cannot import the test helpers; the browser tests
keep the same settings in tests/helpers/chromium.py."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-gl=angle",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
"""WebGL on SwiftShader (software), so splat renderers work without a GPU."""
