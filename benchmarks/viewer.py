"""`npga view` speed: server-render frames per second, what an expression change costs in browser-splat mode, and
the viewer under load (many tabs at once).

    .venv/bin/python benchmarks/viewer.py [--avatar runs/demo/avatar.npga] [--device cpu]
        [--out benchmarks/out/viewer.json] [--screenshot docs/viewer.png]
        [--parts render splats load] [--clients 8] [--seconds 60]

Server render: `ViewRenderer.render` at 512x512 and 550x802 from the frontal capture camera's pose, two ways:
"playback" (a new expression every frame: deformation + rasterization) and "orbit" (the camera moves, the
expression stays: rasterization only). Best of --repeats after a warm-up, as frames per second.

Browser splats: a real viser server; for each expression change the script sets the first slider and times
until the new splat buffer (its size is recorded) has arrived, at three receivers:
- "socket": a websocket client speaking viser's protocol that draws nothing: what a browser whose WebGL runs
  on a graphics chip sees (deformation, packing, sending, receiving);
- "browser socket": headless Chromium (Debian's /usr/bin/chromium via Playwright): viser receives in a Web
  Worker, which a wrapper around `Worker`, installed before the page's scripts run, patches to timestamp
  each websocket message;
- "browser page": the same browser's main thread, once the worker has decoded the batch and posted it.
Without a graphics chip, Chromium draws WebGL in software (SwiftShader) on the same two cores as the server:
drawing ~40k splats keeps its GPU process busy (the share of the cores it used is reported), which slows the
server and delays the page. The clock is shared: all of it runs on this machine. Without Chromium the
browser receivers are skipped.

Load: --clients tabs on one viewer for --seconds, once with every tab on the server render and once on browser
splats (--load-paths), each turning its camera along an orbit (10 camera messages a second for 2 s, then 1 s
at rest for a full-size image, out of step with the others) while one of them moves an expression slider every
second (a new expression for every tab); meanwhile another tab opens and vanishes every second, a random 0-0.3
s after its first camera message (mid-frame, or before the frame). The tabs are `npga.viewer.probe.ProbeTab`s,
websocket clients speaking viser's protocol, not browser pages: a headless Chromium page draws WebGL in
software, and one page's splat scene already keeps most of this machine's two cores busy, so eight pages would
measure Chromium. Reported per path: each tab's answers per second (server-rendered images, or splat buffers
of a new expression; min and median over tabs), the wait from each ask (a camera message or expression change
for the server render, an expression change for splats) to the next answer; the server's RSS before the tabs
connect, every 5 s, and after they have all gone; what the app, viser and the thread count keep of the tabs
after they have gone (all zero when nothing leaks); any error the viewer reported.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import random
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import viser
from chromium import CHROMIUM, LAUNCH_FLAGS
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from npga.avatar.file import load_avatar
from npga.avatar.model import Avatar
from npga.cameras import frontal_camera, orbit_cameras, rig_up
from npga.viewer.app import ViewerApp, ViewerOptions
from npga.viewer.camera import ViewportPose, camera_viewport, viewport_camera
from npga.viewer.probe import ProbeTab
from npga.viewer.renderer import ViewRenderer
from npga.viewer.state import ViewState

RECORD_SOCKET = """
window.__npgaSocket = [];
const PlainWorker = window.Worker;
window.Worker = class extends PlainWorker {
  constructor(url, opts) {
    const target = new URL(url, location.href).href;
    const load = opts && opts.type === "module" ? `import(${JSON.stringify(target)});`
                                                  : `importScripts(${JSON.stringify(target)});`;
    const patch = `const PlainSocket = self.WebSocket;
self.WebSocket = class extends PlainSocket {
  constructor(...a) {
    super(...a);
    this.addEventListener("message", (e) => self.postMessage(
      {type: "npga_socket", t: performance.timeOrigin + performance.now(), n: e.data.byteLength || 0}));
  }
};
${load}`;
    super(URL.createObjectURL(new Blob([patch], {type: "text/javascript"})), opts);
    this.addEventListener("message", (e) => {  // first listener: viser's own never sees these
      if (!e.data || e.data.type !== "npga_socket") return;
      window.__npgaSocket.push([e.data.t, e.data.n]);
      e.stopImmediatePropagation();
    });
  }
};
"""
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


def server_render_fps(avatar: Avatar, sizes: list[tuple[int, int]], repeats: int, precision: str) -> list[dict]:
    renderer = ViewRenderer(avatar, precision=precision)
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
            rows.append(
                {
                    "size": f"{w}x{h}",
                    "how": how,
                    "ms": 1000 * best,
                    "fps": 1 / best,
                    "median_ms": 1000 * statistics.median(times[1:]),
                }
            )
            print(
                f"server render {w}x{h} {how:8s}: {1 / best:6.1f} fps ({1000 * best:.0f} ms best, "
                f"{1000 * statistics.median(times[1:]):.0f} ms median)"
            )
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Arrivals = Callable[[float], dict[str, tuple[float, int]]]
"""Given a start time (ms since the epoch): receiver -> (time, bytes) of the first splat buffer it got since."""


def time_changes(
    app: ViewerApp, changes: int, arrivals: Arrivals, receivers: tuple[str, ...], pause: Callable[[float], None]
) -> dict:
    """Set the first expression slider `changes` times; per receiver the milliseconds until the buffer came."""
    latency: dict[str, list[float]] = {r: [] for r in receivers}
    sizes, server_ms = [], []
    for value in np.linspace(-2.0, 2.0, changes):
        start_ms = time.time() * 1000
        app.sliders[0].value = float(value)
        deadline, got = time.monotonic() + 10, {}
        while set(got) != set(receivers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no splat buffer reached {sorted(set(receivers) - set(got))} within 10 s")
            pause(0.01)
            got = arrivals(start_ms)
        for r in receivers:
            latency[r].append(got[r][0] - start_ms)
        sizes.append(got[receivers[0]][1])
        server_ms.append(app.readout.splat_ms)
        pause(0.3)
    report = {r: {"median_ms": statistics.median(v), "max_ms": max(v), "ms": v} for r, v in latency.items()}
    return {**report, "median_server_ms": statistics.median(server_ms), "bytes_received": statistics.median(sizes)}


def _viewer(avatar: Avatar, file: Path, precision: str) -> tuple[viser.ViserServer, ViewerApp]:
    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    app = ViewerApp(avatar, file, server, ViewerOptions(path="splats", precision=precision))
    app.start()
    return server, app


def socket_updates(avatar: Avatar, file: Path, changes: int, precision: str) -> dict:
    """Expression change -> splat buffer at a websocket client that draws nothing."""
    server, app = _viewer(avatar, file, precision)
    got: list[tuple[float, int]] = []
    url, protocol = f"ws://127.0.0.1:{server.get_port()}", f"viser-v{viser.__version__}"
    big = 32 * avatar.n_gaussians
    try:
        with connect(url, subprotocols=[protocol], max_size=None) as ws:  # type: ignore[list-item]

            def receive() -> None:
                with contextlib.suppress(ConnectionClosed):
                    for message in ws:
                        got.append((time.time() * 1000, len(message)))

            threading.Thread(target=receive, daemon=True).start()
            while not any(n >= big for _, n in got):  # the scene as the page opens
                time.sleep(0.05)

            def arrivals(start_ms: float) -> dict[str, tuple[float, int]]:
                first = next((m for m in list(got) if m[0] >= start_ms and m[1] >= big), None)
                return {"socket": first} if first else {}

            return time_changes(app, changes, arrivals, ("socket",), time.sleep)
    finally:
        app.stop()
        server.stop()


def _gpu_process_cpu_seconds() -> float:
    """CPU seconds so far of Chromium's GPU processes (where software WebGL runs)."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if b"--type=gpu-process" in Path(f"/proc/{pid}/cmdline").read_bytes():
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
    return ticks / os.sysconf("SC_CLK_TCK")


def browser_updates(avatar: Avatar, file: Path, changes: int, precision: str, screenshot: Path | None) -> dict:
    """Expression change -> splat buffer at headless Chromium's websocket (in viser's worker) and page."""
    from playwright.sync_api import sync_playwright

    server, app = _viewer(avatar, file, precision)
    big = 32 * avatar.n_gaussians
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.add_init_script(RECORD_SOCKET)
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

            def arrivals(start_ms: float) -> dict[str, tuple[float, int]]:
                first = f"l => l.find(m => m[0] >= {start_ms} && m[1] >= {big})"
                found = page.evaluate(f"[({first})(window.__npgaSocket), ({first})(window.__npgaMessages)]")
                return {k: tuple(v) for k, v in zip(("browser socket", "browser page"), found, strict=True) if v}

            cpu, wall = _gpu_process_cpu_seconds(), time.monotonic()
            report = time_changes(
                app,
                changes,
                arrivals,
                ("browser socket", "browser page"),
                lambda seconds: page.wait_for_timeout(1000 * seconds),
            )
            report["gpu_process_cores"] = (_gpu_process_cpu_seconds() - cpu) / (time.monotonic() - wall)
            browser.close()
            return report
    finally:
        app.stop()
        server.stop()


def splat_updates(avatar: Avatar, file: Path, changes: int, precision: str, screenshot: Path | None) -> dict:
    """Milliseconds and bytes from an expression change on the server to the splat buffer at each receiver."""
    report = {
        "n_gaussians": avatar.n_gaussians,
        "changes": changes,
        "buffer_bytes": 32 * avatar.n_gaussians,
        **socket_updates(avatar, file, changes, precision),
    }
    line = f"browser splats, {avatar.n_gaussians} Gaussians, expression change -> "
    if CHROMIUM.exists():
        browser = browser_updates(avatar, file, changes, precision, screenshot)
        report.update({k: v for k, v in browser.items() if k not in ("median_server_ms", "bytes_received")})
        report["browser_median_server_ms"] = browser["median_server_ms"]
    else:
        print(f"browser: skipped (no Chromium at {CHROMIUM})")
    for receiver in ("socket", "browser socket", "browser page"):
        if receiver in report:
            line += f"{receiver} {report[receiver]['median_ms']:.0f} ms ({report[receiver]['max_ms']:.0f} max), "
    line += f"server {report['median_server_ms']:.0f} ms"
    if "browser_median_server_ms" in report:
        line += (
            f" ({report['browser_median_server_ms']:.0f} ms beside the browser, whose software WebGL used "
            f"{report['gpu_process_cores']:.1f} cores)"
        )
    print(f"{line}; {report['bytes_received'] / 1e6:.2f} MB per change")
    return report


def _rss_mb() -> float:
    """This process's resident memory (the viewer's server runs in it), in MB, once freed heap memory is handed
    back to the system (glibc's malloc_trim): what is in use, not what the allocator keeps for later."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _settle(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _drive(tab: ProbeTab, poses: list[ViewportPose], phase: float, stop: threading.Event, sliders: bool) -> None:
    """Move `tab`'s camera along `poses` for 2 s, rest 1 s, and again (starting `phase` s into the cycle);
    with `sliders`, also set a random expression slider every second."""
    rng = random.Random(phase)
    start, step, last_slider = time.monotonic() - phase, 0, 0.0
    while not stop.is_set():
        now = time.monotonic()
        if (now - start) % 3.0 < 2.0:
            step += 1
            tab.move(poses[step % len(poses)])
        if sliders and now - last_slider >= 1.0:
            tab.set(f"PC {rng.randint(1, 2)} (std)", round(rng.uniform(-2.0, 2.0), 2))
            last_slider = now
        stop.wait(0.1)


def _churn(url: str, pose: ViewportPose, stop: threading.Event) -> int:
    """Open a tab and drop it 0-0.3 s after its first camera message, once a second; how many."""
    rng, opened = random.Random(0), 0
    while not stop.wait(1.0):
        tab = ProbeTab(url, pose)
        time.sleep(rng.uniform(0.0, 0.3))
        tab.close()
        opened += 1
    return opened


def _waits(asks: list[float], answers: list[float], start: float, end: float) -> np.ndarray:
    """Seconds from each ask (a time.monotonic() in [start, end)) to the first answer after it: an upper bound on
    its wait, as that answer may have been made for an earlier ask; inf where none came."""
    asks_ = np.asarray([t for t in asks if start <= t < end])
    answers_ = np.sort(np.asarray(answers))
    later = np.searchsorted(answers_, asks_, side="right")
    waits = np.full(len(asks_), np.inf)
    found = later < len(answers_)
    waits[found] = answers_[later[found]] - asks_[found]
    return waits


def load(avatar: Avatar, file: Path, path: str, clients: int, seconds: float, precision: str) -> dict:
    """`clients` tabs on one viewer whose tabs draw by `path` ("server" or "splats") for `seconds` (see the
    module's docstring)."""
    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    app = ViewerApp(avatar, file, server, ViewerOptions(path=path, precision=precision))  # type: ignore[arg-type]
    app.start()
    url = f"ws://127.0.0.1:{server.get_port()}"
    up = rig_up(list(avatar.cameras.values()))
    poses = [
        camera_viewport(c, app.head_centre)
        for c in orbit_cameras(frontal_camera(avatar.cameras), app.head_centre, up, 40, 30.0)
    ]

    def answers(tab: ProbeTab) -> list[float]:  # an image of the tab's view, or the splats of a new expression
        return list(tab.images if path == "server" else tab.splats)

    def asks(tab: ProbeTab) -> list[float]:  # a camera move (server render only) or any tab's expression change
        return sorted((tab.moves if path == "server" else []) + tabs[0].sets)

    try:
        warm = ProbeTab(url, poses[0])  # the first answers: lazily built state, allocator pools
        _settle(lambda: len(answers(warm)) >= 1, 60)
        warm.close()
        _settle(lambda: not app.tabs(), 10)
        threads_before, rss_before = set(threading.enumerate()), _rss_mb()
        tabs = [ProbeTab(url, poses[0], 320, 240) for _ in range(clients)]
        stop = threading.Event()
        drivers = [
            threading.Thread(target=_drive, args=(tab, poses, 3.0 * i / clients, stop, i == 0), daemon=True)
            for i, tab in enumerate(tabs)
        ]
        churned: list[int] = []
        churner = threading.Thread(target=lambda: churned.append(_churn(url, poses[0], stop)), daemon=True)
        for thread in (*drivers, churner):
            thread.start()
        time.sleep(3.0)  # every tab connected and answered once
        start, rss_during = time.monotonic(), []
        while time.monotonic() < start + seconds:  # the server's memory every 5 s: flat, or growing with time
            time.sleep(min(5.0, start + seconds - time.monotonic()))
            rss_during.append(_rss_mb())
        end = time.monotonic()
        # The answers to the window's last asks, come what may (an unanswered ask counts as an infinite wait).
        _settle(lambda: all(np.isfinite(_waits(asks(t), answers(t), start, end)).all() for t in tabs), 30)
        rates = [sum(start <= t < end for t in answers(tab)) / (end - start) for tab in tabs]
        asked = [len(_waits(asks(tab), [], start, end)) / (end - start) for tab in tabs]
        waits = np.concatenate([_waits(asks(tab), answers(tab), start, end) for tab in tabs])
        stop.set()
        for thread in (*drivers, churner):
            thread.join(timeout=30)
        for tab in tabs:  # all at once, whatever the server is rendering or sending
            tab.close()
        _settle(lambda: not app.tabs() and not server.get_clients(), 30)
        pool = "ThreadPoolExecutor"  # viser's callback pool: it keeps up to 32 idle workers, whoever asked
        _settle(lambda: not [t for t in set(threading.enumerate()) - threads_before if pool not in t.name], 10)
        report = {
            "path": path,
            "clients": clients,
            "seconds": seconds,
            "tab_viewport": [320, 240],
            "answers_per_s_min": min(rates),
            "answers_per_s_median": statistics.median(rates),
            "answers_per_s": rates,
            "asks_per_s": statistics.median(asked),
            "wait_median_s": float(np.median(waits)),
            "wait_p95_s": float(np.percentile(waits, 95)),
            "wait_max_s": float(waits.max()),
            "churned_tabs": churned[0] if churned else 0,
            "rss_mb_before": rss_before,
            "rss_mb_during": rss_during,
            "rss_mb_after": _rss_mb(),
            "tabs_left_in_app": len(app.tabs()),
            "clients_left_in_viser": len(server.get_clients()),
            "threads_left": sorted(t.name for t in set(threading.enumerate()) - threads_before if pool not in t.name),
            "pool_threads_added": sum(pool in t.name for t in set(threading.enumerate()) - threads_before),
            "error": app.last_error,
        }
    finally:
        app.stop()
        server.stop()
    r, answer = report, "image" if path == "server" else "splat buffer"
    ask = "camera message or expression change" if path == "server" else "expression change"
    print(f"load, {path} path: {clients} tabs for {seconds:.0f} s, +{r['churned_tabs']} opened and dropped mid-frame")
    print(f"  {answer}s / s per tab: {r['answers_per_s_min']:.2f} min, {r['answers_per_s_median']:.2f} median")
    print(f"  asks / s per tab ({ask}): {r['asks_per_s']:.1f}")
    print(
        f"  ask -> next {answer}: {r['wait_median_s']:.2f} s median, {r['wait_p95_s']:.2f} s p95, "
        f"{r['wait_max_s']:.2f} s max"
    )
    during = " ".join(f"{v:.0f}" for v in r["rss_mb_during"])
    print(f"  server RSS: {r['rss_mb_before']:.0f} MB before, {r['rss_mb_after']:.0f} after (every 5 s: {during})")
    print(
        f"  left once all tabs went: {r['tabs_left_in_app']} in the app, {r['clients_left_in_viser']} in viser, "
        f"threads {r['threads_left']} (+{r['pool_threads_added']} idle in viser's pool of 32)"
    )
    print(f"  error reported by the viewer: {r['error']}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", type=Path, default=Path("runs/demo/avatar.npga"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--changes", type=int, default=10, help="expression changes timed in splat mode")
    parser.add_argument(
        "--parts", nargs="+", default=["render", "splats", "load"], choices=["render", "splats", "load"]
    )
    parser.add_argument("--clients", type=int, default=8, help="load: tabs at once")
    parser.add_argument(
        "--load-paths",
        nargs="+",
        default=["server", "splats"],
        choices=["server", "splats"],
        help="load: how tabs draw",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="load: how long they move")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/viewer.json"))
    parser.add_argument("--screenshot", type=Path, default=None, help="save the browser's view (splat mode) here")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="the networks' number format (npga view --precision)",
    )
    args = parser.parse_args()
    avatar = load_avatar(args.avatar, args.device)
    print(f"{args.avatar}: {avatar.n_gaussians} Gaussians on {args.device}, torch threads {torch.get_num_threads()}")
    sizes = [(512, 512), (550, 802)]
    report = {
        "avatar": str(args.avatar),
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "precision": args.precision,
    }
    if "render" in args.parts:
        report["server_render"] = server_render_fps(avatar, sizes, args.repeats, args.precision)
    if "splats" in args.parts and args.device == "cpu":
        report["browser_splats"] = splat_updates(avatar, args.avatar, args.changes, args.precision, args.screenshot)
    elif "splats" in args.parts:
        print(f"browser splats: skipped (device {args.device}: the server render is the GPU's path)")
    if "load" in args.parts:
        report["load"] = [
            load(avatar, args.avatar, path, args.clients, args.seconds, args.precision) for path in args.load_paths
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
