"""`ViewerApp`: a viser server around a `ViewRenderer`: the GUI, one render loop, one view per browser tab.

GUI and camera callbacks only replace the `ViewState` and set dirty flags; a single loop thread does all
rendering and sending (as viser's own examples do). So a slow frame never blocks the GUI, a tab that closes
mid-frame is simply skipped, and an exception while rendering is caught in one place: logged, shown in the
GUI, and the loop goes on with the next frame.

What is shown (sequence, frame, expression, render mode, background) is one state for every tab; how a tab
draws it is its own: its camera, its "rendering" choice (browser splats or server images), its status line
and its splat scene node. viser sends GUI and scene nodes made through `server` to every tab, so those
per-tab parts are made through the tab's own `client` handle when it connects, and vanish with it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import viser
from tqdm import tqdm

from npga.avatar.model import Avatar
from npga.avatar.precision import Precision
from npga.cameras import Camera, frontal_camera, rig_up
from npga.geometry import even_side
from npga.io.atomic import atomic_path
from npga.io.video import to_uint8, write_video
from npga.viewer.camera import camera_viewport, fit_resolution, viewport_camera
from npga.viewer.renderer import ViewRenderer
from npga.viewer.splats import HeadPose, SplatBuffer
from npga.viewer.state import RENDER_MODES, SPLAT_MODES

log = logging.getLogger(__name__)

PATH_LABELS = {"splats": "browser splats", "server": "server render"}
MOVING_SECONDS = 0.25
"""A viewport counts as moving until this long after its last camera message: small images meanwhile."""
TICK_SECONDS = 1 / 60
"""The loop's longest sleep: it also wakes at once on any change."""


@dataclass(frozen=True)
class ViewerOptions:
    path: Literal["auto", "splats", "server"] = "auto"
    """splats: the browser renders Gaussians the server deforms (turning the camera costs the server
    nothing); server: the server rasterizes each tab's view (with the screen-space CNN); auto: server on a
    GPU, splats on a CPU."""
    max_side: int = 0
    """Server render: longest image side in pixels when the camera rests (0: 1024 on a GPU, 512 on a CPU)."""
    moving_side: int = 256
    """Server render: longest image side while the camera moves."""
    playback_fps: float = 10.0
    """Frames per second of playback at start (a slider changes it)."""
    sliders: int = 8
    """Expression sliders: the first principal directions of the avatar's training codes."""
    precision: Precision = "auto"
    """The networks' number format for what the viewer shows: auto picks bfloat16 on a CPU where it is
    faster (CPUs with bfloat16 units), float32 elsewhere."""


@dataclass
class ClientView:
    """One browser tab: how it draws, its own GUI, and what the loop must still send it."""

    client: viser.ClientHandle
    path: str  # "splats" or "server": this tab's rendering choice
    status: viser.GuiMarkdownHandle | None = None  # its status line
    path_choice: viser.GuiDropdownHandle | None = None  # its "rendering" drop-down
    splats: viser.GaussianSplatHandle | None = None  # its splat node, made when it first draws splats
    splats_version: int = -1  # the state version its splat node shows
    backdrop: tuple[float, float, float] | None = None  # the plain background colour it shows (None: an image)
    shown_readout: str = ""
    dirty: bool = True  # the state or the camera changed since the last image
    sharp: bool = False  # the last image was rendered at rest (full size)
    moved_at: float = 0.0  # time.monotonic() of the last camera message
    frames: int = 0  # images sent


@dataclass
class Readout:
    """What the frames-per-second line shows; smoothed over recent frames."""

    ms_per_frame: float = 0.0
    size: tuple[int, int] = (0, 0)
    splat_ms: float = 0.0
    splat_bytes: int = 0

    def smooth(self, ms: float) -> None:
        self.ms_per_frame = ms if self.ms_per_frame == 0 else 0.8 * self.ms_per_frame + 0.2 * ms


class ViewerApp:
    """The viewer of one avatar on one viser server. `start()` runs the loop in a thread, `stop()` ends it."""

    def __init__(
        self, avatar: Avatar, avatar_file: Path, server: viser.ViserServer, options: ViewerOptions = ViewerOptions()
    ) -> None:
        self.avatar = avatar
        self.file = Path(avatar_file)
        self.server = server
        self.options = options
        self.renderer = ViewRenderer(avatar, precision=options.precision)
        on_gpu = avatar.device.type == "cuda"
        self.path = options.path if options.path != "auto" else ("server" if on_gpu else "splats")
        """The rendering a new tab starts with."""
        self.max_side = options.max_side or (1024 if on_gpu else 512)
        self.readout = Readout()
        self.last_error: str | None = None
        self._views: dict[int, ClientView] = {}
        self._lock = threading.Lock()  # guards _views and the state
        self._gui_lock = threading.Lock()  # a server folder is entered by one thread at a time
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._version = 0  # bumped by every state change: a tab's splats are current when they show it
        self._last_advance = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="npga-view-render-loop", daemon=True)
        cams = list(avatar.cameras.values())
        self.head_centre = self.renderer.posed().means.mean(0).cpu().numpy()  # (3,) the orbit centre
        self._up = rig_up(cams)
        self._build_scene()
        self._build_gui()
        server.on_client_connect(self._connect)
        server.on_client_disconnect(self._disconnect)

    # ---- scene and GUI ----

    def _build_scene(self) -> None:
        scene = self.server.scene
        scene.set_up_direction(tuple(self._up))
        # Nothing here is lit, and viser's default environment map would hide the page: its browser shows the
        # canvas at 5% opacity until the map is decoded, which takes 10-20 s on a busy CPU without a graphics chip
        # (a pale head over the white page meanwhile).
        scene.configure_environment_map(hdri=None)
        start = camera_viewport(frontal_camera(self.avatar.cameras), self.head_centre)
        ic = self.server.initial_camera
        ic.position, ic.look_at, ic.up, ic.fov = start.position, start.look_at, start.up_direction, start.fov
        distance = float(np.linalg.norm(start.position - self.head_centre))
        self.frusta = {}
        for serial, cam in self.avatar.cameras.items():
            pose = camera_viewport(cam, self.head_centre)
            # Lines in pixels, not metres: a viewport snapped to a camera sits inside that camera's frustum.
            frustum = scene.add_camera_frustum(
                f"/rig/{serial}",
                fov=pose.fov,
                aspect=cam.width / cam.height,
                scale=0.08 * distance,
                wxyz=pose.wxyz,
                position=pose.position,
                color=(90, 90, 90),
                thickness=1.5,
                thickness_units="screen",
            )
            frustum.on_click(lambda event, s=serial: self.snap(event.client, s))
            self.frusta[serial] = frustum

    def _build_gui(self) -> None:
        gui, avatar, state = self.server.gui, self.avatar, self.renderer.state
        with gui.add_folder("Playback") as playback:
            self.sequence = gui.add_dropdown("sequence", list(avatar.motions), initial_value=state.sequence)
            self.play = gui.add_checkbox("play", False)
            self.frame = gui.add_slider("frame", 0, max(len(avatar.motion(state.sequence)) - 1, 1), 1, 0)
            self.fps = gui.add_slider("frames / s", 1.0, 60.0, 1.0, self.options.playback_fps)
        with gui.add_folder("Expression"):
            n = min(self.options.sliders, avatar.codes.n_moving)
            self.sliders = [gui.add_slider(f"PC {k + 1} (std)", -3.0, 3.0, 0.05, 0.0) for k in range(n)]
            reset = gui.add_button("reset expression")
        with gui.add_folder("View") as self._view_folder:
            self.mode = gui.add_dropdown("render mode", RENDER_MODES, initial_value=state.mode)
            self.background = gui.add_rgb("background", tuple(int(round(255 * c)) for c in state.background))
            self.rig_camera = gui.add_dropdown("capture camera", tuple(avatar.cameras))
            snap = gui.add_button("snap to capture camera")
            self.show_rig = gui.add_checkbox("show rig cameras", True)
        with gui.add_folder("Save"):
            screenshot = gui.add_button("screenshot")
            record = gui.add_button("record playback as mp4")

        self.sequence.on_update(lambda _: self._choose_sequence())
        self.frame.on_update(lambda _: self._set_state(frame=int(self.frame.value)))
        for slider in self.sliders:
            slider.on_update(lambda _: self._set_state(offsets=tuple(float(s.value) for s in self.sliders)))
        # Each tab's status line goes first, its "rendering" drop-down first in "View": made as it connects.
        self._status_order, self._path_order = playback.order - 0.5, self.mode.order - 0.5
        reset.on_click(lambda _: self._reset_sliders())
        self.mode.on_update(lambda _: self._set_state(mode=self.mode.value))
        self.background.on_update(lambda _: self._choose_background())
        snap.on_click(lambda event: self.snap(event.client, self.rig_camera.value))
        self.show_rig.on_update(lambda _: self._show_rig())
        screenshot.on_click(lambda event: self._guard("screenshot", lambda: self.screenshot(event.client)))
        record.on_click(lambda event: self._guard("recording", lambda: self.record(event.client)))

    def _set_state(self, **changes: object) -> None:
        with self._lock:
            self.renderer.state = dataclasses.replace(self.renderer.state, **changes)
            self._version += 1
            for view in self._views.values():
                view.dirty = True
        self._wake.set()

    def _choose_sequence(self) -> None:
        n = len(self.avatar.motion(self.sequence.value))
        self._set_state(sequence=self.sequence.value, frame=0)
        self.frame.value = 0
        self.frame.max = max(n - 1, 1)

    def _reset_sliders(self) -> None:
        with self.server.atomic():
            for slider in self.sliders:
                slider.value = 0.0

    def _choose_path(self, view: ClientView) -> None:
        """One tab's rendering choice: the loop hides or shows its splats and sends its background."""
        assert view.path_choice is not None
        view.path = next(k for k, v in PATH_LABELS.items() if v == view.path_choice.value)
        view.dirty, view.sharp = True, False
        self._wake.set()

    def _choose_background(self) -> None:
        self._set_state(background=tuple(c / 255.0 for c in self.background.value))

    def _show_rig(self) -> None:
        for frustum in self.frusta.values():
            frustum.visible = self.show_rig.value

    # ---- clients ----

    def _connect(self, client: viser.ClientHandle) -> None:
        if client.client_id not in self.server.get_clients():  # gone already (see below)
            return
        view = ClientView(client, path=self.path)
        with self._gui_lock:
            view.status = client.gui.add_markdown("", order=self._status_order)
            with self._view_folder:  # the tab's own control, among the shared ones
                labels = tuple(PATH_LABELS.values())
                view.path_choice = client.gui.add_dropdown(
                    "rendering", labels, initial_value=PATH_LABELS[view.path], order=self._path_order
                )
        view.path_choice.on_update(lambda _: self._choose_path(view))
        with self._lock:
            self._views[client.client_id] = view
        # viser runs connect and disconnect callbacks on a thread pool: a tab that closes as it opens may have
        # been disconnected before this ran. viser forgets a client before it calls the disconnect callbacks,
        # so a tab still listed now will have its view removed by `_disconnect`; one no longer listed, here.
        if client.client_id not in self.server.get_clients():
            self._disconnect(client)
            return

        def moved(_: viser.CameraHandle) -> None:
            view.moved_at = time.monotonic()
            view.dirty = True
            self._wake.set()

        client.camera.on_update(moved)
        if view.path == "splats" and self.renderer.state.mode not in SPLAT_MODES:
            self._notify(client, f"render mode {self.renderer.state.mode!r} needs the server render")
        self._wake.set()

    def _disconnect(self, client: viser.ClientHandle) -> None:
        with self._lock:
            self._views.pop(client.client_id, None)

    def frame_counts(self) -> dict[int, int]:
        """Images sent to each connected tab so far (server render)."""
        with self._lock:
            return {cid: v.frames for cid, v in self._views.items()}

    def tabs(self) -> dict[int, ClientView]:
        """The connected tabs by client id: what the app keeps per tab (gone when the tab goes)."""
        with self._lock:
            return dict(self._views)

    def snap(self, client: viser.ClientHandle | None, serial: str) -> None:
        """Move one tab's viewport to a capture camera (its position, orientation and field of view)."""
        if client is None:
            return
        pose = camera_viewport(self.avatar.cameras[serial], self.head_centre)
        with client.atomic():
            client.camera.fov = pose.fov
            client.camera.position = pose.position
            client.camera.look_at = pose.look_at
            client.camera.up_direction = pose.up_direction

    # ---- the render loop ----

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def wait(self) -> None:
        """Block until `stop()` (or Ctrl-C in the calling thread)."""
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(TICK_SECONDS)
            self._wake.clear()
            self.step()

    def step(self) -> None:
        """One pass: advance playback, then bring every tab's splats or image up to date."""
        self._guard("playback", self._advance_playback)
        with self._lock:
            views = list(self._views.values())
        splats: list[tuple[SplatBuffer, HeadPose]] = []  # this pass's buffer, made for the first tab needing it
        for view in views:
            if view.path == "splats":
                self._guard(f"the splats of tab {view.client.client_id}", lambda v=view: self._update_splats(v, splats))
            else:
                self._guard(f"tab {view.client.client_id}", lambda v=view: self._update_view(v))
        for view in views:
            self._guard(f"the status of tab {view.client.client_id}", lambda v=view: self._show_readout(v))

    def _guard(self, what: str, work: Callable[[], object]) -> None:
        """Run `work`; an exception is logged and shown in the GUI instead of ending the server."""
        try:
            work()
        except Exception as e:
            log.exception("viewer: %s failed", what)
            self.last_error = f"{what} failed: {type(e).__name__}: {e}"

    def _advance_playback(self) -> None:
        now = time.monotonic()
        if not self.play.value:
            self._last_advance = now
            return
        steps = int((now - self._last_advance) * float(self.fps.value))
        if steps:
            self._last_advance += steps / float(self.fps.value)
            n = len(self.avatar.motion(self.renderer.state.sequence))
            self.frame.value = (self.renderer.state.frame + steps) % n

    def _update_splats(self, view: ClientView, made: list[tuple[SplatBuffer, HeadPose]]) -> None:
        """Bring a browser-splat tab up to date: its splat node shown and current, a plain background behind."""
        version, background = self._version, self.renderer.state.background
        current = view.splats is not None and view.splats.visible and view.splats_version == version
        if current and view.backdrop == background:
            return
        start = time.perf_counter()
        if not made:
            made.append(self.renderer.splats())
        buffer, pose = made[0]
        if self._gone(view):  # the tab closed while we deformed
            return
        with view.client.atomic():
            if view.splats is None:
                view.splats = view.client.scene.add_gaussian_splats(
                    "/avatar",
                    buffer.centers,
                    buffer.covariances,
                    buffer.rgbs,
                    buffer.opacities,
                    scale=buffer.node_scale,
                    wxyz=pose.wxyz,
                    position=pose.translation,
                )
            else:
                if view.splats_version != version:
                    view.splats.set_gaussians(buffer.centers, buffer.covariances, buffer.rgbs, buffer.opacities)
                    view.splats.wxyz = pose.wxyz
                    view.splats.position = pose.translation
                view.splats.visible = True
            if view.backdrop != background:  # splats draw over the scene's background image: a plain one
                colour = to_uint8(np.asarray(background, dtype=np.float32))
                view.client.scene.set_background_image(np.broadcast_to(colour, (8, 8, 3)).copy(), format="png")
        view.splats_version, view.backdrop = version, background
        self.readout.splat_ms = 1000 * (time.perf_counter() - start)
        self.readout.splat_bytes = buffer.wire_bytes

    def _update_view(self, view: ClientView) -> None:
        if view.splats is not None and view.splats.visible:  # this tab switched to the server render
            view.splats.visible = False
        moving = time.monotonic() - view.moved_at < MOVING_SECONDS
        if not view.dirty and (view.sharp or moving):
            return
        cam = view.client.camera
        if cam.image_width <= 0 or cam.image_height <= 0:
            return
        w, h = fit_resolution(cam.image_width, cam.image_height, self.options.moving_side if moving else self.max_side)
        camera = viewport_camera(cam.wxyz, cam.position, cam.fov, w, h)
        view.dirty = False
        start = time.perf_counter()
        image = self.renderer.render(camera)  # (h, w, 3)
        if self._gone(view):  # the tab closed while we rendered
            return
        view.client.scene.set_background_image(to_uint8(image), format="jpeg", jpeg_quality=90)
        view.backdrop = None
        view.sharp = not moving
        view.frames += 1
        self.readout.smooth(1000 * (time.perf_counter() - start))
        self.readout.size = (w, h)

    def _gone(self, view: ClientView) -> bool:
        """Whether the tab has closed (viser drops, with a warning, what is sent to a closed tab)."""
        with self._lock:
            return view.client.client_id not in self._views

    def _show_readout(self, view: ClientView) -> None:
        r = self.readout
        if view.path == "server":
            fps = 1000 / r.ms_per_frame if r.ms_per_frame else 0.0
            line = f"**server render** {fps:.1f} fps ({r.ms_per_frame:.0f} ms/frame, {r.size[0]}x{r.size[1]})"
        else:
            line = (
                f"**browser splats** {self.avatar.n_gaussians} Gaussians; last update "
                f"{r.splat_ms:.0f} ms, {r.splat_bytes / 1e6:.2f} MB"
            )
            if self.renderer.state.mode not in SPLAT_MODES:
                line += f"  \n{self.renderer.state.mode} needs the server render: showing RGB"
        if self.last_error:
            line += f"  \n**error:** {self.last_error}"
        if line != view.shown_readout and view.status is not None and not self._gone(view):
            view.status.content = line
            view.shown_readout = line

    # ---- saving ----

    def _output_path(self, kind: str, suffix: str) -> Path:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        return self.file.with_name(f"{self.file.stem}_{kind}_{stamp}{suffix}")

    def _saved_view(self, client: viser.ClientHandle) -> Camera:
        """The tab's viewport at the rest size, with even sides (H.264 needs them): what screenshots and
        recordings are rendered through."""
        cam = client.camera
        w, h = fit_resolution(cam.image_width, cam.image_height, self.max_side)
        return viewport_camera(cam.wxyz, cam.position, cam.fov, even_side(w), even_side(h))

    def screenshot(self, client: viser.ClientHandle | None) -> Path | None:
        """The tab's current view (server render, any path) as a PNG next to the avatar file."""
        if client is None:
            return None
        camera = self._saved_view(client)
        path = self._output_path("screenshot", ".png")
        with atomic_path(path) as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(to_uint8(self.renderer.render(camera)), cv2.COLOR_RGB2BGR))
        log.info("viewer: wrote %s", path)
        self._notify(client, f"wrote {path}")
        return path

    def record(self, client: viser.ClientHandle | None) -> Path | None:
        """The current sequence from the tab's current view, with the sliders and mode as set, as an mp4."""
        if client is None:
            return None
        camera = self._saved_view(client)
        state = self.renderer.state
        n = len(self.avatar.motion(state.sequence))
        note = client.add_notification(
            "recording", f"{n} frames of {state.sequence}", loading=True, with_close_button=False
        )
        frames = (
            to_uint8(self.renderer.render(camera, dataclasses.replace(state, frame=t)))
            for t in tqdm(range(n), desc="record", unit="frame")
        )
        path = self._output_path("playback", ".mp4")
        try:
            write_video(path, frames, fps=float(self.fps.value))
        finally:
            note.remove()
        log.info("viewer: wrote %s", path)
        self._notify(client, f"wrote {path}")
        return path

    def _notify(self, client: viser.ClientHandle, message: str) -> None:
        client.add_notification("npga view", message, auto_close_seconds=10.0)
