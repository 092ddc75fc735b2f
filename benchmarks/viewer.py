"""`npga view` speed: server-render frames per second, and what an expression change costs in browser-splat mode.

    .venv/bin/python benchmarks/viewer.py [--avatar runs/demo/avatar.npga] [--device cpu]
        [--out benchmarks/out/viewer.json] [--screenshot docs/viewer.png]

Server render: `ViewRenderer.render` at 512x512 and 550x802 from the frontal capture camera's pose, two ways:
"playback" (a new expression every frame: deformation + rasterization) and "orbit" (the camera moves, the
expression stays: rasterization only). Best of --repeats after a warm-up, as frames per second.

Browser splats: a real viser server and headless Chromium (Debian's /usr/bin/chromium via Playwright). viser
receives in a Web Worker and posts decoded batches to the page; a wrapper around `Worker`, installed before
the page's scripts run, timestamps each batch and notes its largest binary array. For each expression change
the script sets the first slider and measures the time until the new splat buffer is in the page's main thread
(deformation, packing, sending, receiving, decoding), with its size. The clock is shared: server and browser
run on this machine. Drawing the new splats is the browser's GPU work and is not included. Without Chromium
this part is skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from npga.avatar.file import load_avatar
from npga.avatar.model import Avatar
from npga.cameras import frontal_camera
from npga.viewer.camera import camera_viewport, viewport_camera
from npga.viewer.renderer import ViewRenderer
from npga.viewer.state import ViewState

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]  # fmt: skip
RECORD_MESSAGES = """
window.__npgaMessages = [];
const NativeWorker = window.Worker;
window.Worker = class extends NativeWorker {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (e) => {
      const d = e.data;
      if (!d || d.type !== "message_batch") return;
      let bytes = 0;
      const visit = (x, depth) => {
        if (depth > 5 || x === null || typeof x !== "object") return;
        if (ArrayBuffer.isView(x)) { bytes = Math.max(bytes, x.byteLength); return; }
        for (const k in x) visit(x[k], depth + 1);
      };
      d.messages.forEach((m) => visit(m, 0));
      window.__npgaMessages.push([performance.timeOrigin + performance.now(), bytes]);
    });
  }
};
"""


def server_render_fps(avatar: Avatar, sizes: list[tuple[int, int]], repeats: int) -> list[dict]:
    renderer = ViewRenderer(avatar)
    seq = renderer.state.sequence
    n = len(avatar.motion(seq))
    pose = camera_viewport(frontal_camera(avatar.cameras), renderer.posed().means.mean(0).cpu().numpy())
    sync = torch.cuda.synchronize if avatar.device.type == "cuda" else (lambda: None)
    rows = []
    for w, h in sizes:
        for how in ("playback", "orbit"):
            times = []
            for i in range(repeats + 1):
                shift = np.array([0.002 * i, 0.0, 0.0]) if how == "orbit" else np.zeros(3)
                camera = viewport_camera(pose.wxyz, pose.position + shift, pose.fov, w, h)
                state = renderer.state if how == "orbit" else ViewState(seq, frame=(i + 1) % n)
                sync()
                start = time.perf_counter()
                renderer.render(camera, state)
                sync()
                times.append(time.perf_counter() - start)
            best = min(times[1:])
            rows.append({"size": f"{w}x{h}", "how": how, "ms": 1000 * best, "fps": 1 / best,
                         "median_ms": 1000 * statistics.median(times[1:])})  # fmt: skip
            print(f"server render {w}x{h} {how:8s}: {1 / best:6.1f} fps ({1000 * best:.0f} ms best, "
                  f"{1000 * statistics.median(times[1:]):.0f} ms median)")  # fmt: skip
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def splat_updates(avatar: Avatar, file: Path, changes: int, screenshot: Path | None) -> dict:
    """Time and bytes from an expression slider change on the server to the splat buffer in the browser."""
    import viser
    from playwright.sync_api import sync_playwright

    from npga.viewer.app import ViewerApp, ViewerOptions

    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    app = ViewerApp(avatar, file, server, ViewerOptions(path="splats"))
    app.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.add_init_script(RECORD_MESSAGES)
            page.goto(f"http://127.0.0.1:{server.get_port()}")
            deadline = time.monotonic() + 60
            while not app.frame_counts() and time.monotonic() < deadline:
                page.wait_for_timeout(200)
            previous = None
            for _ in range(60):  # the splats fade in and get sorted: wait for two equal screenshots
                page.wait_for_timeout(1000)
                shot = np.frombuffer(page.screenshot(), np.uint8)
                if previous is not None and len(shot) == len(previous) and np.array_equal(shot, previous):
                    break
                previous = shot
            if screenshot is not None:  # without the browser's "software WebGL" notice
                page.evaluate("document.querySelectorAll('[class*=Notification-root]').forEach(e => e.remove())")
                page.screenshot(path=str(screenshot))
                print(f"wrote {screenshot}")
            big = 32 * avatar.n_gaussians  # the splat buffer: 32 bytes per Gaussian
            latencies, sizes, server_ms = [], [], []
            values = np.linspace(-2.0, 2.0, changes)
            for v in values:
                start_ms = time.time() * 1000
                app.sliders[0].value = float(v)
                arrival = None
                for _ in range(100):
                    page.wait_for_timeout(20)
                    got = page.evaluate(f"window.__npgaMessages.filter(m => m[0] >= {start_ms} && m[1] >= {big})")
                    if got:
                        arrival, size = got[0]
                        break
                if arrival is None:
                    raise RuntimeError("no splat buffer reached the browser within 2 s")
                latencies.append(arrival - start_ms)
                sizes.append(size)
                server_ms.append(app.readout.splat_ms)
                page.wait_for_timeout(300)
            browser.close()
    finally:
        app.stop()
        server.stop()
    result = {"n_gaussians": avatar.n_gaussians, "changes": changes, "latency_ms": latencies,
              "median_latency_ms": statistics.median(latencies), "max_latency_ms": max(latencies),
              "median_server_ms": statistics.median(server_ms), "bytes_received": statistics.median(sizes),
              "buffer_bytes": 32 * avatar.n_gaussians}  # fmt: skip
    print(f"browser splats, {avatar.n_gaussians} Gaussians: expression change -> in the browser "
          f"{result['median_latency_ms']:.0f} ms median ({result['max_latency_ms']:.0f} max) of which server "
          f"{result['median_server_ms']:.0f} ms; {result['bytes_received'] / 1e6:.2f} MB received "
          f"(buffer {result['buffer_bytes'] / 1e6:.2f} MB)")  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", type=Path, default=Path("runs/demo/avatar.npga"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--changes", type=int, default=10, help="expression changes timed in splat mode")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/viewer.json"))
    parser.add_argument("--screenshot", type=Path, default=None, help="save the browser's view (splat mode) here")
    args = parser.parse_args()
    avatar = load_avatar(args.avatar, args.device)
    print(f"{args.avatar}: {avatar.n_gaussians} Gaussians on {args.device}, torch threads {torch.get_num_threads()}")
    report = {"avatar": str(args.avatar), "device": args.device, "machine": platform.processor() or platform.machine(),
              "torch_threads": torch.get_num_threads(),
              "server_render": server_render_fps(avatar, [(512, 512), (550, 802)], args.repeats)}  # fmt: skip
    if args.device == "cpu" and CHROMIUM.exists():
        report["browser_splats"] = splat_updates(avatar, args.avatar, args.changes, args.screenshot)
    else:
        print(f"browser splats: skipped (device {args.device}, Chromium at {CHROMIUM}: {CHROMIUM.exists()})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
