"""The synthetic capture's extra effects are in its frames and absent from the head model training gets.

A reference written here renders `headmodel.json`'s own forward deformation under the true codes and poses
with canonical-normal shading (what the head model explains); the capture's frames must differ from it where
the effects act and match it elsewhere.
"""

import json
import math

import numpy as np
import pytest
import torch

from data_tools.capture_effects import ALL_EFFECTS, TrackingNoise, deformed_normals
from data_tools.mesh_render import rasterize_mesh
from data_tools.synth import PRESETS, SynthConfig, synthesize
from npga import nersemble
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.headmodel import EXPRESSIONS, load_head_model
from npga.io.video import read_video

LIGHT = np.array([0.35, 0.45, 1.0]) / np.linalg.norm([0.35, 0.45, 1.0])
FRONT_SERIAL = nersemble.SERIALS[7]


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The same tiny capture (128 px, 8 frames) with every effect, and with none but tracking noise (whose
    frames are effect-free but which also keeps `true_tracking.npz`): the latter shows the codec's floor."""
    root = tmp_path_factory.mktemp("effects")
    return {
        name: synthesize(SynthConfig(out=root / name, preset="tiny", height=128, frames=8, effects=effects))
        for name, effects in (("effects", ALL_EFFECTS), ("plain", ("tracking_noise",)))
    }


def _head_model_render(root, seq: str, t: int, serial: str) -> tuple[np.ndarray, np.ndarray]:
    """RGB on white (H, W, 3) and the canonical point under each pixel (H, W, 3) (NaN off the head), from the
    head model's forward deformation, the true tracking and shading by the posed canonical normals."""
    head = load_head_model(root)
    paths = ParticipantLayout(root)
    truth = Tracking.load(paths.true_tracking(seq))
    params = json.loads(paths.camera_params.read_text())
    w2c, K = np.array(params["world_2_cam"][serial]), np.array(params["intrinsics"][serial])
    H = 128
    W = int(round(H * nersemble.BENCHMARK_WIDTH / nersemble.BENCHMARK_HEIGHT / 2)) * 2
    mesh = head.canonical_mesh(PRESETS["tiny"].mesh_resolution)
    x_c = mesh.vertices.double()
    R = truth.scale[t] * truth.rotation[t].astype(np.float64)
    posed = head.forward(x_c, torch.from_numpy(truth.expression[t]).double()).numpy() @ R.T + truth.translation[t]
    cam = posed @ w2c[:3, :3].T + w2c[:3, 3]
    s = 2  # 2 x 2 supersamples, like the capture
    uv = (cam[:, :2] / cam[:, 2:] @ K[:2, :2].T + K[:2, 2]) * s
    verts = torch.from_numpy(np.concatenate([uv, cam[:, 2:]], 1))
    attrs = torch.cat([x_c, mesh.normals.double() @ torch.from_numpy(R.T)], 1)
    img, mask = rasterize_mesh(verts, mesh.faces, attrs, W * s, H * s)
    rgb = torch.ones(H * s, W * s, 3, dtype=torch.float64)
    pts = img[mask]
    n = torch.nn.functional.normalize(pts[:, 3:], dim=-1)
    light = 0.55 + 0.45 * (n @ torch.from_numpy(LIGHT)).clamp_min(0)
    rgb[mask] = head.color(pts[:, :3].float()).double() * light[:, None]
    canonical = torch.where(mask[..., None], img[..., :3], torch.nan)
    canonical = canonical.reshape(H, s, W, s, 3).permute(0, 2, 1, 3, 4).reshape(H, W, s * s, 3)
    # a pixel belongs to a region only when all of its supersamples do: region tests use the largest value
    return rgb.reshape(H, s, W, s, 3).mean((1, 3)).clamp(0, 1).numpy(), canonical.numpy()


def _region_psnr(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
    assert region.sum() >= 20, "region too small to score"
    return float(-10 * np.log10(np.mean((a[region] - b[region]) ** 2)))


def _inside(canonical: np.ndarray, lo, hi) -> np.ndarray:
    """(H, W) pixels whose every supersample's canonical point lies in the box [lo, hi]."""
    ok = (canonical >= np.array(lo)) & (canonical <= np.array(hi))
    return ok.all(-1).all(-1)


REGIONS = {  # region: (driving code, canonical box)
    "mouth": ("jaw_open", (-0.025, -0.06, 0.05), (0.025, -0.036, 0.12)),
    "frown lines": ("brow_furrow", (-0.012, 0.02, 0.06), (0.012, 0.042, 0.12)),
    "nasolabial folds": ("smile", (-0.04, -0.05, 0.04), (0.04, -0.01, 0.12)),
}


@pytest.mark.slow
@pytest.mark.parametrize("region", list(REGIONS))
def test_effects_show_in_their_region_and_nowhere_else(captures, region):
    """Against the head model's own rendering, the capture with effects scores well under the effect-free
    capture's codec floor where the effect acts, and the same as it on the hair, ears and back of the head."""
    code, lo, hi = REGIONS[region]
    seq = "FREE"
    truth = Tracking.load(ParticipantLayout(captures["effects"]).true_tracking(seq))
    t = int(np.argmax(truth.expression[:, EXPRESSIONS.index(code)]))
    assert truth.expression[t, EXPRESSIONS.index(code)] > 0.4, "the test needs a frame where the effect is strong"
    reference, canonical = _head_model_render(captures["effects"], seq, t, FRONT_SERIAL)
    affected = _inside(canonical, lo, hi)
    untouched = _inside(canonical, (-1, 0.075, -1), (1, 1, 1)) | _inside(canonical, (-1, -1, -1), (1, 1, 0.0))
    scores = {}
    for name, root in captures.items():
        frame = read_video(ParticipantLayout(root).video(seq, FRONT_SERIAL))[t].astype(np.float64) / 255
        scores[name] = (_region_psnr(frame, reference, affected), _region_psnr(frame, reference, untouched))
    (affected_fx, untouched_fx), (affected_plain, untouched_plain) = scores["effects"], scores["plain"]
    assert affected_plain > 35.0 and untouched_plain > 33.0, scores  # the plain capture is the head model
    assert affected_fx < 35.0 and affected_fx < affected_plain - 2.0, scores
    assert abs(untouched_fx - untouched_plain) < 0.3, scores


def test_deformed_normals_of_a_fold_match_the_analytic_tilt():
    """A fold h = a sin(k x) along the normal of the plane z = 0 tilts its normal to (-a k cos(k x), 0, 1)."""
    a, k = 5e-4, 2 * math.pi / 0.007
    x = torch.stack(
        [
            torch.linspace(-0.01, 0.01, 101, dtype=torch.float64),
            torch.zeros(101, dtype=torch.float64),
            torch.zeros(101, dtype=torch.float64),
        ],
        -1,
    )
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(101, 3)
    got = deformed_normals(lambda p: a * torch.sin(k * p[:, :1]) * up[: len(p)], x, up)
    slope = -a * k * torch.cos(k * x[:, 0])
    expected = torch.stack([slope, torch.zeros_like(slope), torch.ones_like(slope)], -1)
    # central differences over 0.2 mm miss (k h)^2 / 6 = 0.5% of the slope (0.45) on these 7 mm folds
    torch.testing.assert_close(got, expected / expected.norm(dim=-1, keepdim=True), atol=3e-3, rtol=0)


@pytest.mark.slow
def test_tracking_noise_keeps_the_truth_and_has_the_asked_size(tmp_path):
    """With tracking noise the frames and the true tracking are those of the noise-free capture; the written
    tracking differs by per-frame jitter (frame-to-frame changes of the error) plus a slow drift."""
    noise = TrackingNoise()
    clean = synthesize(SynthConfig(out=tmp_path / "clean", preset="tiny", height=16, frames=24, effects=()))
    noisy = synthesize(
        SynthConfig(out=tmp_path / "noisy", preset="tiny", height=16, frames=24, effects=("tracking_noise",))
    )
    rot_err, code_err = [], []
    for seq in PRESETS["tiny"].sequences:
        clean_paths, noisy_paths = ParticipantLayout(clean), ParticipantLayout(noisy)
        assert not clean_paths.true_tracking(seq).exists()
        truth, written = Tracking.load(noisy_paths.true_tracking(seq)), Tracking.load(noisy_paths.tracking(seq))
        reference = Tracking.load(clean_paths.tracking(seq))
        for name in ("expression", "rotation", "translation", "scale", "timesteps", "identity"):
            np.testing.assert_array_equal(getattr(truth, name), getattr(reference, name), err_msg=name)
        np.testing.assert_array_equal(
            read_video(noisy_paths.video(seq, FRONT_SERIAL)), read_video(clean_paths.video(seq, FRONT_SERIAL))
        )
        relative = np.einsum("tij,tkj->tik", written.rotation.astype(np.float64), truth.rotation.astype(np.float64))
        # small-angle axis-angle vector of each frame's rotation error, in degrees
        axis_angle = (
            np.stack(
                [
                    relative[:, 2, 1] - relative[:, 1, 2],
                    relative[:, 0, 2] - relative[:, 2, 0],
                    relative[:, 1, 0] - relative[:, 0, 1],
                ],
                -1,
            )
            / 2
            * 180
            / math.pi
        )
        rot_err.append(axis_angle)
        code_err.append(written.expression.astype(np.float64) - truth.expression)
    rot, code = np.concatenate(rot_err), np.concatenate(code_err)
    total_rot = math.hypot(noise.rotation_jitter_deg, noise.rotation_drift_deg)
    assert 0.4 * total_rot < rot.std() < 1.6 * total_rot
    total_code = math.hypot(noise.expression_jitter, noise.expression_drift)
    assert 0.5 * total_code < code.std() < 1.5 * total_code
    # a smooth drift barely changes between frames: frame-to-frame changes are jitter, sqrt(2) x its size
    steps = np.concatenate([np.diff(e, axis=0) for e in code_err])
    assert 0.8 * math.sqrt(2) * noise.expression_jitter < steps.std() < 1.4 * math.sqrt(2) * noise.expression_jitter
