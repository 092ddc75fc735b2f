"""`npga export --web` in a real browser: the exported folder served on localhost, drawn by headless Chromium
(Debian's /usr/bin/chromium through Playwright, software WebGL), compared pixel by pixel with npga's own render.

Skipped, with the reason, where Chromium or Playwright is missing (`.ci/run` installs Chromium).
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import cv2
import numpy as np
import pytest
import torch

from npga.avatar.file import save_avatar
from npga.cameras import Camera, look_at
from npga.commands import export
from tests.helpers.chromium import CHROMIUM, LAUNCH_FLAGS
from tests.helpers.viewer_avatar import posed_vivid_avatar

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")

MIN_PSNR = 30.0
"""Page against `npga render` of the same code, pose, camera and background. Measured 33.4-35.9 dB on this avatar:
the page draws the bake within ~46 dB of npga's rasterizer, and the bake of this deliberately nonlinear avatar
is 33-40 dB from its networks (a trained demo avatar's page is 50-54.5 dB from `npga render`, docs/web.md)."""


@pytest.fixture(scope="module")
def avatar_and_folder(tmp_path_factory):
    avatar = posed_vivid_avatar()
    tmp = tmp_path_factory.mktemp("web")
    export.main(export.Config(avatar=save_avatar(avatar, tmp / "vivid.npga"), web=tmp / "site"))
    return avatar, tmp / "site"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _serve(folder):
    """A static file server on a free localhost port (`python -m http.server`'s handler)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def page_of(tmp_path_factory):
    """Opens a folder's index.html (with a URL query) in a fresh page; records every URL the page requests."""
    servers = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_FLAGS)

        def open_page(folder, query=""):
            servers.append(_serve(folder))
            base = f"http://127.0.0.1:{servers[-1].server_port}/"
            page = browser.new_page(viewport={"width": 700, "height": 500})
            page.requests = []
            page.on("request", lambda r: page.requests.append(r.url))
            page.goto(base + "index.html" + query)
            page.base = base
            return page

        yield open_page
        browser.close()
    for server in servers:
        server.shutdown()


def _canvas(page) -> torch.Tensor:
    png = np.frombuffer(page.locator("#canvas").screenshot(), np.uint8)
    rgb = cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return torch.from_numpy(rgb).float() / 255  # (H, W, 3)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


# Off-centre principal point, unequal focal lengths, a non-square image: every intrinsic convention shows.
CAMERA = Camera(
    K=np.array([[260.0, 0.0, 110.0], [0.0, 250.0, 70.0], [0.0, 0.0, 1.0]]),
    world_2_cam=look_at(np.array([0.8, 0.4, 2.6]), np.zeros(3)),
    width=200,
    height=160,
    serial="test",
)
HOOK_CAMERA = {
    "name": "test",
    "width": CAMERA.width,
    "height": CAMERA.height,
    "fx": 260.0,
    "fy": 250.0,
    "cx": 110.0,
    "cy": 70.0,
    "world_to_camera": CAMERA.world_2_cam.reshape(-1).tolist(),
}


def test_the_page_draws_tracked_frames_and_slider_expressions_as_npga_renders_them(avatar_and_folder, page_of):
    avatar, folder = avatar_and_folder
    page = page_of(folder)
    assert page.evaluate("window.npga.ready") is not None, page.evaluate("window.npga.error")
    for sequence, frame, sliders in [("A", 2, []), ("B", 1, []), ("A", 3, [2.0, -1.0])]:
        shown = page.evaluate(
            "(v) => window.npga.set(v)",
            {"camera": HOOK_CAMERA, "sequence": sequence, "frame": frame, "sliders": sliders},
        )
        assert (shown["sequence"], shown["frame"], shown["size"]) == (sequence, frame, [200, 160])
        z, head_pose = avatar.tracked(sequence, frame)
        offset = avatar.codes.offset(torch.tensor(sliders)) if sliders else 0.0
        expected = avatar.render_code(z + offset, head_pose, [CAMERA])[0][0]  # (H, W, 3) on the avatar's background
        image = _canvas(page)
        assert _psnr(image, expected) >= MIN_PSNR, (sequence, frame, sliders, _psnr(image, expected))
        if sliders:  # the sliders changed the picture far beyond the tolerance: the check has teeth
            assert _psnr(avatar.render_code(z, head_pose, [CAMERA])[0][0], expected) < 20
    # Its own folder only (the bundle starts its sort worker from a data: URL, which fetches nothing)
    assert all(url.startswith((page.base, "data:", "blob:")) for url in page.requests), page.requests
    assert "sequence A, frame 4 of 5, expression moved by the sliders" in page.locator("#status").inner_text()


def test_the_url_chooses_camera_sequence_frame_and_sliders(avatar_and_folder, page_of):
    page = page_of(avatar_and_folder[1], "?camera=c1&sequence=B&frame=2&sliders=1.5,-0.5")
    shown = page.evaluate("window.npga.ready")
    assert shown["camera"] == "c1" and shown["sequence"] == "B" and shown["frame"] == 2
    assert shown["sliders"][:3] == [1.5, -0.5, 0.0]


def test_the_mouse_turns_the_view_and_the_panel_drives_the_page(avatar_and_folder, page_of):
    page = page_of(avatar_and_folder[1])
    page.evaluate("window.npga.ready")
    page.evaluate("(v) => window.npga.set(v)", {"camera": HOOK_CAMERA})
    before = _canvas(page)
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + 100, box["y"] + 80)
    page.mouse.down()
    page.mouse.move(box["x"] + 160, box["y"] + 90, steps=5)
    page.mouse.up()
    page.evaluate("window.npga.set({})")  # resolves once drawn
    assert _psnr(_canvas(page), before) < 25  # orbited
    page.locator("#camera").select_option("c0")
    page.locator("#sequence").select_option(label="B (3 frames)")
    page.locator("#frame").fill("2")
    page.locator("#sliders input").nth(1).fill("-1.5")
    shown = page.evaluate("window.npga.set({})")
    assert (shown["camera"], shown["size"], shown["sequence"], shown["frame"]) == ("c0", [32, 48], "B", 2)
    assert shown["sliders"] == [0.0, -1.5, 0.0, 0.0]
    page.locator("#play").click()
    assert page.evaluate("window.npga.state()")["playing"]
    assert page.locator("#play").inner_text() == "pause"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "avatar.bin").write_bytes((f / "avatar.bin").read_bytes()[:-100]), "truncated"),
        (lambda f: (f / "avatar.json").write_text('{"format": "something-else"}'), "not an npga web avatar"),
        (lambda f: (f / "avatar.json").write_text("<html>a login page</html>"), "not JSON"),
        (lambda f: (f / "avatar.bin").unlink(), "could not read avatar.bin: HTTP 404"),
    ],
)
def test_a_corrupt_or_foreign_data_file_shows_a_message_not_a_blank_canvas(
    avatar_and_folder, page_of, tmp_path, damage, message
):
    folder = shutil.copytree(avatar_and_folder[1], tmp_path / "site")
    damage(folder)
    page = page_of(folder)
    assert page.evaluate("window.npga.ready") is None
    assert page.locator("#error").is_visible()
    assert message in page.locator("#error").inner_text()
