"""`npga view` in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

Skipped, with the reason, where Chromium or Playwright is missing (`.ci/run` installs Chromium). WebGL runs
on SwiftShader, so viser's splat renderer works without a GPU.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest
import viser

from npga.avatar.file import load_avatar, save_avatar
from npga.viewer.app import ViewerApp, ViewerOptions
from tests.helpers.chromium import CHROMIUM, LAUNCH_FLAGS
from tests.helpers.viewer_avatar import vivid_avatar

VIEWPORT = {"width": 900, "height": 700}
BACKGROUND = np.array([26, 51, 76])  # vivid_avatar's background (0.1, 0.2, 0.3) in 8 bits

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_FLAGS)  # a fresh temporary profile
        yield b
        b.close()


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory):
    return save_avatar(vivid_avatar(), tmp_path_factory.mktemp("browser") / "vivid.npga")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _screen(page) -> np.ndarray:
    png = np.frombuffer(page.screenshot(), np.uint8)
    return cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float64)  # (H, W, 3)


def _centre(image: np.ndarray) -> np.ndarray:
    """(60, 60, 3) pixels around the middle of the canvas (the viewer's panel sits to the right)."""
    y, x = VIEWPORT["height"] // 2, VIEWPORT["width"] // 2
    return image[y - 30 : y + 30, x - 30 : x + 30]


def _shows_avatar(image: np.ndarray) -> bool:
    """The scene is up (the canvas's left edge shows the avatar's background, not a loading page) and something
    else is in the middle."""
    y = VIEWPORT["height"] // 2
    edge = image[y - 30 : y + 30, 10:60]
    return np.abs(edge - BACKGROUND).mean() < 6 and np.abs(_centre(image) - BACKGROUND).mean() > 40


def _steady_centre(page) -> np.ndarray:
    """The middle of the canvas once two screenshots in a row agree."""
    frames = [_centre(_screen(page))]
    _wait_for(
        lambda: frames.append(_centre(_screen(page))) or np.abs(frames[-1] - frames[-2]).mean() < 1,
        20,
        "a steady image",
    )
    return frames[-1]


CANVAS_CENTRE = """() => {
  const c = [...document.querySelectorAll("canvas")].sort((a, b) => b.width * b.height - a.width * a.height)[0];
  if (!c || c.width < 100) return null;
  const probe = document.createElement("canvas");
  probe.width = probe.height = 60;
  const ctx = probe.getContext("2d");
  ctx.drawImage(c, c.width / 2 - 30, c.height / 2 - 30, 60, 60, 0, 0, 60, 60);
  const d = ctx.getImageData(0, 0, 60, 60).data;
  const mean = [0, 0, 0];
  for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) mean[k] += d[i + k] / 3600;
  return mean;
}"""
"""Mean RGB of the 60 x 60 pixels in the middle of the WebGL canvas, as drawn (viser keeps the drawing buffer),
whatever the page puts over or around it."""
RECORD_SORTS = """
window.__npgaSorts = 0;
const PlainWorker = window.Worker;
window.Worker = class extends PlainWorker {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => { if (e.data && e.data.sortedIndices) window.__npgaSorts += 1; });
  }
};
"""
"""Counts the depth orders viser's splat sorter (a Web Worker) returns: before the first, splats are drawn unsorted."""


def test_the_head_shows_its_settled_colours_as_soon_as_the_canvas_draws_it(browser, avatar_file):
    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    app = ViewerApp(load_avatar(avatar_file), avatar_file, server, ViewerOptions(path="splats"))
    app.start()
    page = browser.new_page(viewport=VIEWPORT)
    page.add_init_script(RECORD_SORTS)
    try:
        start = time.monotonic()
        page.goto(f"http://127.0.0.1:{server.get_port()}")

        def drawn() -> bool:
            mean = page.evaluate(CANVAS_CENTRE)
            sorted_ = page.evaluate("window.__npgaSorts") > 0
            return sorted_ and mean is not None and np.abs(np.array(mean) - BACKGROUND).mean() > 40

        _wait_for(drawn, 30, "the canvas to draw the head, sorted")
        first = _centre(_screen(page)).mean((0, 1))  # what the page shows, the moment the head is drawn
        seconds = time.monotonic() - start
        settled = _steady_centre(page).mean((0, 1))
        # A page that fades its canvas in over the white page shows a pale head first (~95% white).
        assert np.abs(first - settled).max() < 12, (first.round(), settled.round(), f"{seconds:.1f} s after load")
    finally:
        page.close()
        app.stop()
        server.stop()


@pytest.mark.parametrize("path", ["splats", "server"])
def test_npga_view_shows_the_avatar_and_follows_an_expression_slider(browser, avatar_file, path, tmp_path):
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "npga.cli",
        "view",
        str(avatar_file),
        "--port",
        str(port),
        "--path",
        path,
        "--max-side",
        "256",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        _wait_for(lambda: any("npga view:" in line for line in lines) or proc.poll() is not None, 60, "the URL")
        url = re.search(r"http://\S+", next(line for line in lines if "npga view:" in line)).group(0)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        _wait_for(lambda: _shows_avatar(_screen(page)), 30, f"the avatar in the middle of the canvas ({path})")
        page.screenshot(path=str(tmp_path / f"viewer_{path}.png"))
        if os.environ.get("NPGA_VIEWER_SCREENSHOT") and path == "splats":  # the README's picture
            shutil.copy(tmp_path / f"viewer_{path}.png", os.environ["NPGA_VIEWER_SCREENSHOT"])
        before = _steady_centre(page)
        slider = page.locator('[role="slider"][aria-valuemin="-3"]').first  # "PC 1 (std)"
        slider.focus()
        slider.press("End")  # to +3 standard deviations
        _wait_for(lambda: np.abs(_centre(_screen(page)) - before).mean() > 8, 30, f"the image to change ({path})")
        page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        reader.join(timeout=5)
    output = "".join(lines)
    assert "Traceback" not in output, output


def test_four_tabs_each_keep_getting_frames_and_two_closing_disturb_no_other(browser, avatar_file):
    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    app = ViewerApp(load_avatar(avatar_file), avatar_file, server, ViewerOptions(path="server", max_side=128))
    app.start()
    pages = []
    try:
        for _ in range(4):
            pages.append(browser.new_page(viewport={"width": 320, "height": 240}))
            pages[-1].goto(f"http://127.0.0.1:{server.get_port()}")
        _wait_for(lambda: len(app.frame_counts()) == 4 and min(app.frame_counts().values()) > 0, 30, "four tabs")
        ids = list(app.frame_counts())
        clients = server.get_clients()
        app.snap(clients[ids[0]], "c0")  # each tab has its own camera: moving one moves no other
        app.snap(clients[ids[1]], "c1")

        def at(i: int, serial: str) -> bool:
            return np.allclose(clients[ids[i]].camera.position, app.avatar.cameras[serial].center, atol=1e-3)

        _wait_for(lambda: at(0, "c0") and at(1, "c1"), 10, "each tab at its own capture camera")
        app.fps.value = 30.0
        app.play.value = True  # every frame of playback is a new image for every tab
        counts = app.frame_counts()
        time.sleep(8)
        later = app.frame_counts()
        assert all(later[i] >= counts[i] + 5 for i in ids), (counts, later)
        pages[0].close()  # mid-stream
        pages[1].close()
        time.sleep(2)
        counts = app.frame_counts()
        assert len(counts) == 2, counts
        time.sleep(8)
        later = app.frame_counts()
        assert all(later[i] >= counts[i] + 5 for i in counts), (counts, later)
        assert app.last_error is None, app.last_error
    finally:
        app.stop()
        for page in pages[2:]:
            page.close()
        server.stop()
