"""The avatar file: self-contained (no capture, no trainer), exact, and never runs code while loading."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from npga.avatar import deform
from npga.avatar.file import load_avatar, read_avatar_metadata, save_avatar
from npga.avatar.model import Motion
from npga.cli import main
from npga.config import load_config
from npga.data.layout import ParticipantLayout
from npga.data.tracking import Tracking
from npga.headmodel import head_model_from_description, load_head_model
from npga.runs import RunLayout
from npga.train import TrainConfig, build_trainer, read_checkpoint
from tests.helpers.small_avatars import random_avatar

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_capture):
    """(trainer, run): 20 steps of the tiny preset on a private copy of the tiny capture."""
    root = tmp_path_factory.mktemp("avatar_file")
    capture = Path(shutil.copytree(tiny_capture, root / "capture"))
    cfg = dataclasses.replace(load_config(TrainConfig, TINY), capture=capture, out=root / "run", steps=20)
    trainer = build_trainer(cfg, hooks=[])
    trainer.fit()
    return trainer, RunLayout(cfg.out)


def _corrupt(tmp_path: Path, src: Path, name: str, **meta_changes) -> Path:
    """A copy of the avatar file `src` with its JSON metadata changed (tensors unchanged)."""
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["npga"])
    for key, value in meta_changes.items():
        meta[key] = value(meta[key]) if callable(value) else value
    out = tmp_path / name
    save_file(tensors, str(out), metadata={"npga": json.dumps(meta)})
    return out


def test_avatar_renders_exactly_in_a_fresh_process_after_the_capture_is_deleted(trained, tmp_path):
    trainer, run = trained
    assert run.avatar.is_file()
    serial, seq, t = trainer.split.heldout_serials[1], trainer.split.train_sequences[0], 2
    batch = trainer.make_batch(seq, t, [serial])
    with torch.no_grad():
        rgb, alpha, _ = trainer.rasterize(deform(trainer.params, trainer.nets, batch.z, batch.head_pose), batch)
    expected = rgb[0].clamp(0, 1).numpy()

    # it plays the capture's tracking as the capture wrote it (poses not transposed, codes not reordered)
    played = load_avatar(run.avatar).motions[seq]
    tracking = Tracking.load(ParticipantLayout(trainer.cfg.capture).tracking(seq))
    np.testing.assert_allclose(played.head_pose.numpy(), tracking.head_poses, atol=1e-6)
    np.testing.assert_allclose(played.expression.numpy(), tracking.expression, atol=1e-6)

    # the head model rebuilds from the avatar's description alone (the registry picks it by type)
    head = head_model_from_description(load_avatar(run.avatar).head_model)
    x = torch.randn(64, 3) * 0.05
    assert torch.equal(head.sdf(x), load_head_model(trainer.cfg.capture).sdf(x))

    capture = Path(shutil.copytree(trainer.cfg.capture, tmp_path / "capture_backup"))
    shutil.rmtree(trainer.cfg.capture)  # the capture (and its frame cache) is gone
    try:
        script = textwrap.dedent(f"""
            import sys
            import numpy as np
            from npga.avatar.file import load_avatar
            avatar = load_avatar({str(run.avatar)!r})
            rgb, alpha = avatar.render({seq!r}, {t}, [avatar.cameras[{serial!r}]])
            np.save({str(tmp_path / "fresh.npy")!r}, rgb[0].numpy())
            loaded = sorted(m for m in sys.modules if m.startswith(("npga.train", "npga.data", "npga.commands")))
            print(",".join(loaded))
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "", f"loading an avatar imported {out.stdout.strip()}"
        fresh = np.load(tmp_path / "fresh.npy")
        assert np.abs(fresh - expected).max() == 0.0
        assert expected.std() > 0.05  # a head, not a blank frame

        # `npga render` needs nothing but the avatar file either
        main(["render", str(run.root), "--out", str(tmp_path / "videos"), "--orbit-frames", "3", "--device", "cpu"])
        assert (tmp_path / "videos" / "orbit.mp4").stat().st_size > 0
    finally:
        shutil.move(capture, trainer.cfg.capture)


def test_every_part_round_trips_bit_for_bit(tmp_path):
    gen = torch.Generator().manual_seed(0)
    avatar = random_avatar(gen)
    tracked = avatar.motions["A"]  # its tracking refined in training: the capture's beside the refined one
    refined_pose = tracked.head_pose.clone()
    refined_pose[:, :3, 3] += 0.01 * torch.randn(len(tracked), 3, generator=gen)
    refined = Motion(tracked.expression + 0.1, refined_pose, tracked.timesteps, tracked.expression, tracked.head_pose)
    avatar = dataclasses.replace(avatar, motions={**avatar.motions, "A": refined})
    path = save_avatar(avatar, tmp_path / "a.npga")
    again = load_avatar(path)
    assert again.config == avatar.config and again.split == avatar.split
    assert again.head_model == avatar.head_model and again.provenance == avatar.provenance
    for k, v in avatar.params.items():
        assert torch.equal(again.params[k], v), k
    for (ka, a), (kb, b) in zip(avatar.nets.state_dict().items(), again.nets.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(a, b), ka
    assert list(again.motions) == ["A", "B"]
    for s, m in avatar.motions.items():
        for f in ("expression", "head_pose", "timesteps"):
            assert torch.equal(getattr(again.motions[s], f), getattr(m, f)), (s, f)
    assert again.motions["A"].refined and not again.motions["B"].refined
    assert torch.equal(again.motions["A"].tracked_expression, tracked.expression)
    assert torch.equal(again.motions["A"].tracked_head_pose, tracked.head_pose)
    for f in dataclasses.fields(avatar.codes):
        assert torch.equal(getattr(again.codes, f.name), getattr(avatar.codes, f.name)), f.name
    for s, c in avatar.cameras.items():
        d = again.cameras[s]
        assert (d.width, d.height) == (c.width, c.height)
        assert np.array_equal(d.K, c.K) and np.array_equal(d.world_2_cam, c.world_2_cam)
    rgb_a, _ = avatar.render("A", 3, [avatar.cameras["c0"]])
    rgb_b, _ = again.render("A", 3, [again.cameras["c0"]])
    assert torch.equal(rgb_a, rgb_b)


class _Payload:
    """Unpickling this creates a file: what a crafted 'avatar' or 'checkpoint' could do to whoever loads it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_pickles_are_refused_and_run_nothing(trained, tmp_path):
    _, run = trained
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.npga"
    crafted.write_bytes(pickle.dumps({"params": _Payload(marker)}))
    with pytest.raises(ValueError, match="crafted.npga: damaged or not an npga avatar file"):
        load_avatar(crafted)
    with pytest.raises(SystemExit, match="crafted.npga: damaged or not an npga avatar file"):
        main(["eval", str(crafted)])

    torch_crafted = tmp_path / "step_0000020.pt"
    torch.save({"step": 1, "params": _Payload(marker)}, torch_crafted)
    with pytest.raises(ValueError, match="step_0000020.pt: refused as unsafe"):
        read_checkpoint(torch_crafted)
    copy = RunLayout(Path(shutil.copytree(run.root, tmp_path / "run")))
    shutil.copy(torch_crafted, copy.list_checkpoints()[-1])
    cfg = dataclasses.replace(load_config(TrainConfig, copy.config), out=copy.root, resume=True, override_config=True)
    with pytest.raises(
        ValueError,
        match=r"refused as unsafe, not loaded as an npga training checkpoint \(it would run code: it names io.open",
    ):
        build_trainer(cfg, hooks=[])
    assert not marker.exists()


def test_bad_avatar_files_fail_with_one_line_naming_file_and_problem(trained, tmp_path):
    _, run = trained
    data = run.avatar.read_bytes()
    (tmp_path / "truncated.npga").write_bytes(data[: len(data) // 2])
    (tmp_path / "foreign.npga").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    cases = {
        "truncated.npga": "truncated.npga: damaged or not an npga avatar file",
        "foreign.npga": "foreign.npga: damaged or not an npga avatar file",
        "other.safetensors": "other.safetensors: damaged .*.a safetensors file without npga metadata",
    }
    newer = _corrupt(tmp_path, run.avatar, "newer.npga", version=2)
    cases[newer.name] = (
        "newer.npga: written by a newer npga .an npga avatar file, format version 2; .* up to 1.; upgrade npga"
    )
    narrow = _corrupt(tmp_path, run.avatar, "narrow.npga", config=lambda c: c | {"detail": c["detail"] | {"width": 7}})
    cases[narrow.name] = "narrow.npga: damaged .*network weights do not match the avatar's config: .* is .*, expected"
    deep = _corrupt(tmp_path, run.avatar, "deep.npga", config=lambda c: c | {"detail": c["detail"] | {"depth": 10**7}})
    cases[deep.name] = r"deep.npga: refused as unsafe.*config.detail.depth = 10000000 is outside \[0, 64\]"
    huge = _corrupt(tmp_path, run.avatar, "huge.npga", cameras=lambda cs: [cs[0] | {"width": 10**9}, *cs[1:]])
    cases[huge.name] = "huge.npga: refused as unsafe.*is 1000000000x.* pixels"
    no_motion = _corrupt(tmp_path, run.avatar, "no_motion.npga", sequences=lambda s: [*s, "GHOST"])
    cases[no_motion.name] = "no_motion.npga: damaged or not an npga avatar file .bad metadata or tensors.*GHOST"
    with safe_open(str(run.avatar), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    save_file(tensors | {"gaussians/means": tensors["gaussians/means"].double()}, str(tmp_path / "f64.npga"), meta)
    cases["f64.npga"] = "f64.npga: damaged .*gaussians/means is torch.float64, expected torch.float32"
    nan = tensors["nets/detail.net.0.weight"].clone()
    nan[0, 0] = float("nan")
    save_file(tensors | {"nets/detail.net.0.weight": nan}, str(tmp_path / "nan.npga"), meta)
    cases["nan.npga"] = "nan.npga: damaged .*nets/detail.net.0.weight contains NaN or inf"
    for name, pattern in cases.items():
        with pytest.raises(ValueError, match=pattern) as info:
            load_avatar(tmp_path / name)
        assert "\n" not in str(info.value), name
    assert read_avatar_metadata(run.avatar)["version"] == 1


def test_a_checkpoint_whose_weights_do_not_match_its_config_is_refused(trained, tmp_path):
    _, run = trained
    copy = RunLayout(Path(shutil.copytree(run.root, tmp_path / "run")))
    last = copy.list_checkpoints()[-1]
    state = read_checkpoint(last)
    del state["nets"]["detail.net.0.weight"]
    torch.save(state, last)
    cfg = dataclasses.replace(load_config(TrainConfig, copy.config), out=copy.root, resume=True, override_config=True)
    with pytest.raises(
        ValueError, match=r"step_0000020.pt: network weights do not match the config .*detail.net.0.weight"
    ):
        build_trainer(cfg, hooks=[])
    state = read_checkpoint(run.list_checkpoints()[-1])
    state["params"]["features"] = state["params"]["features"][:, :3]
    torch.save(state, last)
    with pytest.raises(ValueError, match=r"params/features has shape \(\d+, 3\), the config makes \(N, 8\)"):
        build_trainer(cfg, hooks=[])
