"""`npga view` without a browser: viewport conventions, splat buffers, the renderer, the app's loop and saves.

The browser itself is exercised in test_viewer_browser.py.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import viser
from scipy.spatial.transform import Rotation

import npga.avatar.precision as precision_module
import npga.viewer.app as app_module
from npga.avatar.file import load_avatar, save_avatar
from npga.avatar.model import Avatar
from npga.cameras import Camera, look_at
from npga.commands import view as view_command
from npga.io.video import probe_video
from npga.viewer.app import ClientView, ViewerApp, ViewerOptions
from npga.viewer.camera import camera_viewport, fit_resolution, viewport_camera
from npga.viewer.probe import ProbeTab
from npga.viewer.renderer import ViewRenderer, colorize_depth, feature_pca_colors
from npga.viewer.state import ViewState
from tests.helpers.viewer_avatar import vivid_avatar


def _wxyz(rotation: Rotation) -> np.ndarray:
    x, y, z, w = rotation.as_quat()  # scipy's order is x, y, z, w
    return np.array([w, x, y, z])


@pytest.fixture(scope="module")
def avatar_file(tmp_path_factory):
    return save_avatar(vivid_avatar(), tmp_path_factory.mktemp("viewer") / "vivid.npga")


@pytest.fixture
def avatar(avatar_file):
    return load_avatar(avatar_file)


# ---- viewport cameras: viser's fields, converted by hand here ----


def test_viewport_camera_projects_like_an_opencv_camera_at_the_viewport():
    # viser: wxyz is the camera -> world rotation, camera axes x right, y down, z forward (OpenCV).
    R = Rotation.from_euler("yx", [35, -20], degrees=True)
    position = np.array([0.3, -0.2, 2.0])
    fov, W, H = math.radians(50), 640, 480
    cam = viewport_camera(_wxyz(R), position, fov, W, H)
    forward, right, down = R.apply([0, 0, 1]), R.apply([1, 0, 0]), R.apply([0, 1, 0])
    d = 1.7
    points = np.stack(
        [
            position + d * forward,  # on the optical axis: the image centre
            position + d * forward + 0.1 * right,  # right of it: larger u
            position + d * forward - d * math.tan(fov / 2) * down,  # at the top edge of the vertical field of view
        ]
    )
    uv, z = cam.project(points)
    np.testing.assert_allclose(z, d, atol=1e-9)
    np.testing.assert_allclose(uv[0], [W / 2, H / 2], atol=1e-6)
    f = (H / 2) / math.tan(fov / 2)
    np.testing.assert_allclose(uv[1], [W / 2 + f * 0.1 / d, H / 2], atol=1e-6)
    np.testing.assert_allclose(uv[2], [W / 2, 0.0], atol=1e-6)


def test_capture_camera_seen_through_a_viewport_of_its_size_is_the_capture_camera():
    K = np.array([[900.0, 0, 275], [0, 900.0, 401], [0, 0, 1]])
    cam = Camera(K=K, world_2_cam=look_at(np.array([0.8, 0.3, 2.5]), np.array([0.0, 0.1, 0.0])), width=550, height=802)
    target = np.array([0.05, 0.1, 0.0])
    pose = camera_viewport(cam, target)
    back = viewport_camera(pose.wxyz, pose.position, pose.fov, cam.width, cam.height)
    np.testing.assert_allclose(back.world_2_cam, cam.world_2_cam, atol=1e-9)
    np.testing.assert_allclose(back.K[1, 1], 900.0, rtol=1e-9)
    # Orbit centre on the optical axis, at the target's depth; "up" is the camera's -y.
    uv, depth = cam.project(pose.look_at[None])
    np.testing.assert_allclose(uv[0], [275, 401], atol=1e-6)
    np.testing.assert_allclose(depth[0], cam.project(target[None])[1][0], atol=1e-9)
    np.testing.assert_allclose(pose.up_direction, -cam.world_2_cam[1, :3], atol=1e-12)


def test_fit_resolution_keeps_aspect_and_never_upscales():
    assert fit_resolution(1920, 1080, 512) == (512, 288)
    assert fit_resolution(300, 200, 512) == (300, 200)
    assert fit_resolution(550, 802, 256) == (176, 256)


# ---- browser splats: buffer in the head's frame + the node's pose == the posed Gaussians ----


def test_splat_buffer_moved_by_the_node_pose_is_the_posed_avatar(avatar):
    pose = torch.eye(4)
    rot = Rotation.from_euler("zyx", [10, -25, 15], degrees=True)
    scale = 1.3
    pose[:3, :3] = torch.tensor(rot.as_matrix() * scale, dtype=torch.float32)
    pose[:3, 3] = torch.tensor([0.1, -0.05, 0.2])
    avatar.motions["A"].head_pose[2] = pose
    r = ViewRenderer(avatar, ViewState("A", frame=2, offsets=(0.7, -1.0)))
    buffer, node = r.splats()

    z = avatar.motions["A"].expression[2] + 0.7 * avatar.codes.std[0] * avatar.codes.directions[0]
    z = z - 1.0 * avatar.codes.std[1] * avatar.codes.directions[1]
    ref = avatar.gaussians(z, pose)  # (N, ...) world space, straight from the model
    R_node = Rotation.from_quat(np.roll(node.wxyz, -1))  # scipy wants x, y, z, w
    np.testing.assert_allclose(R_node.as_matrix(), rot.as_matrix(), atol=1e-5)
    world = R_node.apply(buffer.centers * buffer.node_scale) + node.translation
    np.testing.assert_allclose(world, ref.means.numpy(), atol=1e-4)
    # Covariance by brute force: R_g diag(s^2) R_g^T from the reference's quaternions and scales.
    R_g = Rotation.from_quat(np.roll(ref.quats.numpy(), -1, axis=1)).as_matrix()  # (N, 3, 3)
    cov_ref = R_g @ (ref.scales.numpy()[:, :, None] ** 2 * R_g.transpose(0, 2, 1))
    R = R_node.as_matrix()
    cov_world = R @ (buffer.covariances * buffer.node_scale**2) @ R.T
    np.testing.assert_allclose(cov_world, cov_ref, atol=1e-6, rtol=1e-3)
    np.testing.assert_allclose(buffer.rgbs, ref.colors.numpy(), atol=1e-6)
    np.testing.assert_allclose(buffer.opacities[:, 0], ref.opacities.numpy(), atol=1e-6)
    assert buffer.wire_bytes == 32 * avatar.n_gaussians


def test_millimetre_gaussians_keep_their_size_in_the_float16_buffer(avatar):
    avatar.params["scales"] = avatar.params["scales"] - math.log(0.06) + math.log(0.001)  # 1 mm: variance 1e-6
    buffer, _ = ViewRenderer(avatar).splats()
    stored = buffer.covariances.astype(np.float16).astype(np.float64) * buffer.node_scale**2  # what viser keeps
    ref = avatar.gaussians(*avatar.tracked("A", 0)).scales.double().numpy() ** 2  # (N, 3) variances, world
    np.testing.assert_allclose(np.trace(stored, axis1=1, axis2=2), ref.sum(1), rtol=5e-3)


def test_head_motion_alone_reuses_the_deformed_gaussians(avatar, monkeypatch):
    calls = []
    real = Avatar.expressed
    monkeypatch.setattr(Avatar, "expressed", lambda *a: calls.append(1) or real(*a))
    m = avatar.motions["A"]
    m.expression[1] = m.expression[0]  # frame 1: same code, another head pose
    r = ViewRenderer(avatar)
    first, pose0 = r.splats(ViewState("A", frame=0))
    second, pose1 = r.splats(ViewState("A", frame=1))
    assert len(calls) == 1
    np.testing.assert_array_equal(first.centers, second.centers)
    assert not np.allclose(pose0.translation, pose1.translation)
    r.splats(ViewState("A", frame=0, offsets=(1.0,)))
    assert len(calls) == 2


# ---- server render ----


def test_server_render_matches_the_avatars_own_render(avatar):
    cam = avatar.cameras["c0"]
    r = ViewRenderer(avatar)
    state = ViewState("A", frame=3, offsets=(-2.0,), background=(1.0, 1.0, 1.0))
    z = avatar.motions["A"].expression[3] - 2.0 * avatar.codes.std[0] * avatar.codes.directions[0]
    rgb, alpha = avatar.render_code(z, avatar.motions["A"].head_pose[3], [cam], torch.ones(3))
    np.testing.assert_allclose(r.render(cam, state), rgb[0].numpy(), atol=1e-5)
    shown_alpha = r.render(cam, dataclasses.replace(state, mode="alpha"))
    np.testing.assert_allclose(shown_alpha, np.repeat(alpha[0].numpy(), 3, -1), atol=1e-5)
    for mode in ("depth", "latent PCA", "Gaussian centres"):
        image = r.render(cam, dataclasses.replace(state, mode=mode))
        assert image.shape == (cam.height, cam.width, 3) and 0 <= image.min() and image.max() <= 1
        centre = image[cam.height // 2 - 4 : cam.height // 2 + 4, cam.width // 2 - 4 : cam.width // 2 + 4]
        assert np.abs(centre - 1.0).mean() > 0.05, f"{mode}: nothing drawn in the middle"


def test_bfloat16_networks_show_the_float32_picture_to_the_eye(avatar):
    cam = avatar.cameras["c0"]
    state = ViewState("A", frame=3, offsets=(-2.0, 1.0))
    exact = ViewRenderer(avatar).render(cam, state)
    fast = ViewRenderer(avatar, precision="bfloat16").render(cam, state)
    psnr = 10 * np.log10(1 / np.mean((fast - exact) ** 2))
    assert np.abs(fast - exact).max() > 0, "bfloat16 was asked for, but the networks ran in float32"
    assert psnr > 40, f"bfloat16 networks change the picture: {psnr:.1f} dB from float32"


def test_auto_precision_is_bfloat16_only_on_a_cpu_with_bfloat16_units(avatar, monkeypatch):
    for has_units, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(precision_module, "cpu_has_bfloat16_units", lambda h=has_units: h)
        assert ViewRenderer(avatar, precision="auto").precision == expected
    assert ViewRenderer(avatar, precision="float32").precision == "float32"
    with pytest.raises(ValueError, match="tf32.*CUDA"):
        ViewRenderer(avatar, precision="tf32")


def test_depth_colours_run_from_red_near_to_blue_far():
    depth = np.tile(np.linspace(1.0, 2.0, 64, dtype=np.float32), (8, 1))  # near on the left
    alpha = np.ones_like(depth)
    image = colorize_depth(depth, alpha, np.zeros(3, np.float32))
    near, far = image[:, 1].mean(0), image[:, -2].mean(0)
    assert near[0] > near[2] and far[2] > far[0]
    empty = colorize_depth(depth, np.zeros_like(depth), np.array([0.2, 0.4, 0.6], np.float32))
    np.testing.assert_allclose(empty, np.broadcast_to([0.2, 0.4, 0.6], empty.shape), atol=1e-7)


def test_feature_pca_orders_gaussians_along_the_main_feature_direction():
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(200, generator=gen)
    direction = torch.nn.functional.normalize(torch.randn(8, generator=gen), dim=0)
    features = t[:, None] * 5 * direction + 0.01 * torch.randn(200, 8, generator=gen)
    red = feature_pca_colors(features)[:, 0]
    inner = (t > 0.05) & (t < 0.95)  # outside the 1..99 % stretch the channel saturates
    corr = np.corrcoef(red[inner].numpy(), t[inner].numpy())[0, 1]
    assert abs(corr) > 0.99


# ---- the app: loop, errors, saves (a real viser server, no browser) ----


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app(avatar, avatar_file):
    server = viser.ViserServer(host="127.0.0.1", port=_free_port(), verbose=False)
    app = ViewerApp(avatar, avatar_file, server, ViewerOptions(path="splats", max_side=64))
    yield app
    app.stop()
    server.stop()


def _connect_tab(app: ViewerApp, width: int = 96, height: int = 72) -> tuple[ProbeTab, ClientView]:
    """A tab speaking viser's protocol over a real websocket, and what the app keeps for it once connected."""
    before = set(app.tabs())
    pose = camera_viewport(app.avatar.cameras["c0"], app.head_centre)
    tab = ProbeTab(f"ws://127.0.0.1:{app.server.get_port()}", pose, width, height)
    tab.wait_for("rendering", timeout=10)
    deadline = time.monotonic() + 10
    while not set(app.tabs()) - before:
        assert time.monotonic() < deadline, "the app never registered the tab"
        time.sleep(0.02)
    (new,) = set(app.tabs()) - before
    return tab, app.tabs()[new]


def _until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _fake_client(avatar) -> SimpleNamespace:
    """What the app reads of a browser tab: its viewport camera; notifications are recorded."""
    pose = camera_viewport(avatar.cameras["c0"], np.zeros(3))
    notes = []
    camera = SimpleNamespace(wxyz=pose.wxyz, position=pose.position, fov=pose.fov, image_width=96, image_height=144)

    def add_notification(title: str, body: str, **kwargs: object) -> SimpleNamespace:
        notes.append(body)
        return SimpleNamespace(remove=lambda: None)

    return SimpleNamespace(camera=camera, notes=notes, add_notification=add_notification)


def test_a_failing_frame_is_reported_and_the_loop_goes_on(app, monkeypatch, caplog):
    tab, view = _connect_tab(app)
    app.step()
    good = app.renderer.splats

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(app.renderer, "splats", broken)
    app.sliders[0].value = 1.0  # an expression change: the loop re-sends the splats, which fails
    with caplog.at_level(logging.ERROR):
        app.step()
    assert "RuntimeError: boom" in app.last_error
    assert "boom" in view.status.content
    assert any("boom" in r.getMessage() or (r.exc_info and "boom" in str(r.exc_info[1])) for r in caplog.records)
    monkeypatch.setattr(app.renderer, "splats", good)
    app.sliders[0].value = 2.0
    app.step()  # the next change renders again
    buffer, _ = app.renderer.splats()
    np.testing.assert_array_equal(view.splats.buffer[:, :3].view(np.float32), buffer.centers)
    tab.close()


def test_playback_advances_the_frame_at_the_chosen_rate(app, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(app_module, "time", SimpleNamespace(monotonic=lambda: clock[0], perf_counter=time.perf_counter))
    app.fps.value = 10.0
    app.step()
    app.play.value = True
    app._last_advance = clock[0]
    clock[0] += 0.35  # 3.5 frames at 10 fps
    app.step()
    assert app.renderer.state.frame == 3 and app.frame.value == 3
    clock[0] += 0.17  # with the 0.05 s left over: 2 more frames
    app.step()
    assert app.renderer.state.frame == 0  # 5 frames in sequence A: wraps around


def test_gui_choices_reach_the_state_the_loop_renders(app):
    tab, view = _connect_tab(app)
    app.frame.value = 4
    app.sequence.value = "B"  # 3 frames
    assert (app.renderer.state.sequence, app.renderer.state.frame) == ("B", 0)
    assert app.frame.max == 2
    app.mode.value = "depth"
    app.background.value = (255, 0, 0)
    assert app.renderer.state.mode == "depth" and app.renderer.state.background == (1.0, 0.0, 0.0)
    app.step()
    assert "needs the server render" in view.status.content  # depth in splat mode
    view.path_choice.value = "server render"
    app.step()
    assert view.path == "server" and not view.splats.visible and view.frames == 1
    app.sliders[1].value = -1.0
    app._reset_sliders()
    assert app.renderer.state.offsets == (0.0,) * len(app.sliders)
    tab.close()


def test_the_rendering_chosen_in_one_tab_is_that_tabs_alone(app):
    app.start()
    (a, view_a), (b, view_b) = _connect_tab(app), _connect_tab(app)
    assert _until(lambda: view_a.splats is not None and view_b.splats is not None)
    a.set("rendering", "server render")  # as tab A's page sends it
    assert _until(lambda: view_a.frames > 0), "tab A got no server-rendered image"
    assert a.values["rendering"] == "server render" and view_a.path == "server" and not view_a.splats.visible
    time.sleep(0.5)  # what the server would broadcast to tab B has arrived by now
    assert b.values["rendering"] == "browser splats", "tab A's choice reached tab B's drop-down"
    assert view_b.path == "splats" and view_b.splats.visible and view_b.frames == 0
    assert _until(lambda: view_a.status.content.startswith("**server render**"))
    assert view_b.status.content.startswith("**browser splats**")
    b.set("rendering", "server render")
    b.set("rendering", "browser splats")  # and back: A is left as it was
    assert _until(lambda: view_b.path == "splats" and view_b.splats.visible)
    assert view_a.path == "server" and a.values["rendering"] == "server render"
    a.close()
    b.close()
    assert _until(lambda: not app.tabs()), "a closed tab left its state in the app"


def test_a_tab_that_closes_before_its_connect_callback_runs_leaves_nothing(app):
    """viser calls connect and disconnect callbacks on a thread pool: for a tab that closes as it opens, the
    disconnect callback may run first. Here the connect callback runs once viser has dropped the tab."""
    tab, view = _connect_tab(app)
    client = view.client
    tab.close()
    assert _until(lambda: not app.tabs() and client.client_id not in app.server.get_clients())
    app._connect(client)  # late, as from the pool
    assert not app.tabs()


def test_screenshot_and_recording_land_next_to_the_avatar_file(app, avatar_file):
    client = _fake_client(app.avatar)
    app.sliders[0].value = 1.5
    png = app.screenshot(client)
    assert png.parent == avatar_file.parent and png.suffix == ".png" and str(png) in client.notes[-1]
    shot = cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB)
    cam = client.camera
    expected = app.renderer.render(viewport_camera(cam.wxyz, cam.position, cam.fov, 64 * 2 // 3, 64))
    assert shot.shape == expected.shape
    np.testing.assert_allclose(shot / 255.0, expected, atol=1.0 / 255 + 1e-6)
    mp4 = app.record(client)
    assert mp4.parent == avatar_file.parent and str(mp4) in client.notes[-1]
    info = probe_video(mp4)
    assert info.n_frames == len(app.avatar.motions["A"])


# ---- the command ----


def test_a_bad_avatar_file_fails_before_any_server_starts(tmp_path, monkeypatch):
    bad = tmp_path / "bad.npga"
    bad.write_bytes(b"not an avatar")
    monkeypatch.setattr(view_command.viser, "ViserServer", lambda *a, **k: pytest.fail("a server was started"))
    with pytest.raises(ValueError, match="bad.npga"):
        view_command.main(view_command.Config(avatar=bad, port=_free_port()))


def test_binding_beyond_loopback_warns(avatar_file, monkeypatch, caplog):
    class Started(Exception):
        pass

    def no_server(*args, **kwargs):
        raise Started

    monkeypatch.setattr(view_command.viser, "ViserServer", no_server)
    monkeypatch.setattr(view_command, "check_host", lambda host: None)  # 192.168.1.5 need not be this machine's
    for host, warned in (("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True), ("192.168.1.5", True)):
        caplog.clear()
        with caplog.at_level(logging.WARNING), pytest.raises(Started):
            view_command.main(view_command.Config(avatar=avatar_file, host=host))
        assert any("network" in r.getMessage() for r in caplog.records) == warned, host


def test_a_host_this_machine_cannot_serve_on_is_refused_before_the_avatar_loads(tmp_path):
    """Binding it would kill the server's thread and leave the command waiting forever."""
    missing = tmp_path / "no_avatar.npga"  # never opened: the host is checked first
    for host, problem in (
        ("no-such-host.invalid", "is not a known host name or address"),
        ("192.0.2.1", "is not an address of this machine"),  # TEST-NET-1: never a local address
    ):
        with pytest.raises(ValueError, match=f"--host '{host}' {problem}"):
            view_command.main(view_command.Config(avatar=missing, host=host))
    view_command.check_host("127.0.0.1")
