"""`npga export --web`: the folder's size, how long the bake takes, and the page in headless Chromium — load time,
time per expression change, frames per second while playing, and its pixels against `npga render`.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/web.py [--avatar runs/demo/avatar.npga] [--rank 16]
        [--out benchmarks/out/web.json] [--screenshot docs/web.png]

Chromium is Debian's /usr/bin/chromium through Playwright, drawing WebGL in software (SwiftShader) on this
machine's cores, beside the static file server: a browser with a graphics chip draws far faster, so the frame
rate is reported, not targeted. PSNR: the page's canvas against `Avatar.render_code` (what `npga render` draws)
at the avatar's frontal rig camera, on the avatar's background, for frames of every sequence ("tracked") and for
one slider at a time moved to +-3 standard deviations on a sequence's first frame ("slider"); where the page
differs, the bake's own error (the same frames drawn from the bake by npga's rasterizer) says how much is the bake.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from chromium import CHROMIUM, LAUNCH_FLAGS

from npga.avatar.deform import pose
from npga.avatar.file import load_avatar
from npga.avatar.render import render_gaussians
from npga.cameras import frontal_camera, stack_cameras
from npga.commands import export
from npga.metrics import psnr
from npga.viewer.bake import bake_avatar, baked
from npga.viewer.webpage import write_web


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _canvas(page) -> torch.Tensor:
    png = np.frombuffer(page.locator("#canvas").screenshot(), np.uint8)
    return torch.from_numpy(cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)).float() / 255


def _cases(avatar, rank: int) -> list[tuple[str, str, int, list[float]]]:
    cases = []
    for seq, m in avatar.motions.items():
        cases += [("tracked", seq, t, []) for t in sorted({0, len(m) // 2})]
    first = next(iter(avatar.motions))
    for j in range(min(rank, 2)):
        for v in (-3.0, 3.0):
            cases.append(("slider", first, 0, [0.0] * j + [v]))
    return cases


def measure(avatar_path: Path, rank: int, changes: int, screenshot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    avatar = load_avatar(avatar_path, "cpu")
    work = Path(tempfile.mkdtemp(prefix="npga_web_"))
    t0 = time.perf_counter()
    bake = bake_avatar(avatar, rank)  # what `npga export --web` does, kept to draw it with npga's rasterizer too
    bake_s = time.perf_counter() - t0
    write_web(work / "site", avatar, bake, avatar_path.stem)
    files = {p.name: p.stat().st_size for p in (work / "site").iterdir()}

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(work / "site"))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    camera = frontal_camera(avatar.cameras)
    name = next(n for n, c in avatar.cameras.items() if c is camera)
    viewmats, Ks = stack_cameras([camera])
    report: dict = {"files": files, "folder_bytes": sum(files.values()), "bake_s": bake_s}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_FLAGS)
        page = browser.new_page(viewport={"width": camera.width + 400, "height": max(camera.height, 600)})
        t0 = time.perf_counter()
        page.goto(f"http://127.0.0.1:{server.server_port}/index.html?camera={name}")
        shown = page.evaluate("window.npga.ready")
        report["load_s"] = time.perf_counter() - t0
        if shown is None:
            raise RuntimeError(f"the page failed: {page.evaluate('window.npga.error')}")
        if screenshot is not None:
            page.screenshot(path=str(screenshot))

        rows = []
        for kind, seq, t, sliders in _cases(avatar, bake.rank):
            page.evaluate("(v) => window.npga.set(v)", {"sequence": seq, "frame": t, "sliders": sliders})
            image = _canvas(page)
            z, head_pose = avatar.tracked(seq, t)
            s = torch.tensor(sliders, dtype=torch.float32)
            a = bake.coords[seq][t].clone()
            a[: len(s)] += s
            exact = avatar.render_code(z + avatar.codes.offset(s) if sliders else z, head_pose, [camera])[0][0]
            g = pose(baked(bake, a), head_pose)
            drawn_bake = render_gaussians(g, viewmats, Ks, camera.width, camera.height, avatar.background)[0][0]
            rows.append(
                {
                    "kind": kind,
                    "sequence": seq,
                    "frame": t,
                    "sliders": sliders,
                    "page_vs_render_db": float(psnr(image[None], exact[None])),
                    "bake_vs_render_db": float(psnr(drawn_bake.clamp(0, 1)[None], exact[None])),
                }
            )
        report["psnr"] = rows

        rng = np.random.default_rng(0)
        times, compute = [], []
        for _ in range(changes):
            sliders = rng.uniform(-2, 2, bake.rank).round(2).tolist()
            t0 = time.perf_counter()
            shown = page.evaluate("(v) => window.npga.set(v)", {"sliders": sliders})
            times.append(time.perf_counter() - t0)
            compute.append(shown["expressionMs"])
        report["expression_change_ms"] = 1000 * statistics.median(times)
        report["expression_compute_ms"] = statistics.median(compute)

        page.evaluate("(v) => window.npga.set(v)", {"sliders": [], "playing": True, "fps": 60})
        before, t0 = page.evaluate("window.npga.state()"), time.perf_counter()
        time.sleep(5)
        after, t1 = page.evaluate("window.npga.state()"), time.perf_counter()
        report["playing_fps"] = (after["rendered"] - before["rendered"]) / (t1 - t0)
        browser.close()
    server.shutdown()
    shutil.rmtree(work)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--avatar", type=Path, default=Path("runs/demo/avatar.npga"))
    parser.add_argument("--rank", type=int, default=export.Config.web_rank, help="npga export --web-rank")
    parser.add_argument("--changes", type=int, default=5, help="expression changes timed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/web.json"))
    parser.add_argument("--screenshot", type=Path, default=None, help="save the page's screenshot here")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        raise SystemExit(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    report = measure(args.avatar, args.rank, args.changes, args.screenshot)
    report.update(avatar=str(args.avatar), rank=args.rank, machine=platform.machine(), cores=os.cpu_count())
    print(f"{args.avatar}: folder {report['folder_bytes'] / 1e6:.1f} MB " + str(report["files"]))
    print(f"bake (npga export --web)  {report['bake_s']:8.1f} s")
    print(f"page load (to first draw) {report['load_s']:8.2f} s")
    print(
        f"expression change         {report['expression_change_ms']:8.0f} ms to drawn (compute in the page: "
        f"{report['expression_compute_ms']:.0f} ms)"
    )
    print(f"playing                   {report['playing_fps']:8.1f} frames / s (software WebGL, {os.cpu_count()} cores)")
    print(f"{'case':10s} {'sequence':20s} {'frame':>5s} {'sliders':>16s} {'page dB':>8s} {'bake dB':>8s}")
    for r in report["psnr"]:
        sliders = ",".join(f"{x:g}" for x in r["sliders"]) or "-"
        print(
            f"{r['kind']:10s} {r['sequence']:20s} {r['frame']:5d} {sliders:>16s} "
            f"{r['page_vs_render_db']:8.2f} {r['bake_vs_render_db']:8.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
