"""`--refit-tracking` (npga/train/refit.py): a trained avatar's training frames fitted anew to all their cameras,
starting from the tracking the avatar plays, against the codes and poses the frames were filmed with."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import npga.train.refit as refit_module
from npga import nersemble
from npga.avatar.file import load_avatar, save_avatar
from npga.data.prepare import PrepareConfig, prepare
from npga.drive.fit import TrackConfig
from npga.runs import RunLayout
from npga.split import make_split
from npga.train.refit import PROVENANCE_KEY, motion_tracking, refit_tracking
from npga.train.trainer import motion_of
from tests.helpers.head_avatars import film_capture, head_avatar, head_error_mm, tracked_sequence

SERIALS = (nersemble.SERIALS[4], nersemble.SERIALS[11])  # the rig's cameras 28 degrees left and right of centre
SEQ = "EXP-1-head"
MESH = 32  # a coarse avatar: the pose needs no fine detail
STEP = 7  # the training step the avatar file says it was saved at


@pytest.fixture
def trained(tmp_path):
    """A run whose avatar plays a training sequence with a tracking a tenth of a millimetre and degree off (what
    refinement in training leaves), filmed by two training cameras, the capture's own tracking 3 degrees and 8 mm
    off: (run, true poses (T, 4, 4), the played tracking, the capture's)."""
    avatar = head_avatar(0, MESH)
    codes, poses, played = tracked_sequence(avatar, 3, seed=2, turn_deg=0.1, shift=0.0002, code_sd=0.01)
    _, _, capture_tracking = tracked_sequence(avatar, 3, seed=3)
    capture = film_capture(tmp_path / "capture", avatar, SERIALS, SEQ, codes, poses, capture_tracking)
    cache = prepare(PrepareConfig(capture=capture, height=None))
    run = RunLayout(tmp_path / "run")
    run.root.mkdir()
    refined = dataclasses.replace(
        motion_of(played),
        tracked_expression=motion_of(capture_tracking).expression,
        tracked_head_pose=motion_of(capture_tracking).head_pose,
    )
    save_avatar(
        dataclasses.replace(
            avatar,
            motions={SEQ: refined},
            split=make_split(SERIALS, (SEQ,), heldout_serials=(), heldout_sequences=()),
            provenance={"step": STEP, "cache": str(cache)},
        ),
        run.avatar,
    )
    return run, poses, played, capture_tracking


def test_the_refit_moves_the_played_tracking_toward_the_truth_and_keeps_the_capture_s(trained):
    run, poses, played, capture_tracking = trained
    avatar = head_avatar(0, MESH)
    refit = refit_tracking(run, "cpu", TrackConfig())
    saved = load_avatar(run.avatar).motions[SEQ]
    before = head_error_mm(avatar, played, poses).mean()
    after = head_error_mm(avatar, motion_tracking(saved), poses).mean()
    # Measured: 0.14 mm after, 0.23 before; started from the capture's tracking (8 mm off) instead, 6.6 mm.
    assert after < 0.7 * before, (after, before)
    assert torch.equal(saved.expression, refit.motions[SEQ].expression)
    torch.testing.assert_close(saved.tracked_head_pose, motion_of(capture_tracking).head_pose)
    torch.testing.assert_close(saved.tracked_expression, motion_of(capture_tracking).expression)
    assert load_avatar(run.avatar).provenance[PROVENANCE_KEY] == {"step": STEP, "cameras": list(SERIALS)}
    assert (run.refit(STEP) / f"{SEQ}.npz").is_file()


def test_a_refitted_avatar_is_left_as_it_is(trained, monkeypatch):
    run, *_ = trained
    refit_tracking(run, "cpu", TrackConfig())
    first = load_avatar(run.avatar).motions[SEQ]

    def no_fit(*args, **kwargs):
        raise AssertionError("a refitted avatar was fitted again")

    monkeypatch.setattr(refit_module, "track_capture", no_fit)
    refit_tracking(run, "cpu", TrackConfig())
    again = load_avatar(run.avatar).motions[SEQ]
    assert torch.equal(first.head_pose, again.head_pose)
    assert torch.equal(first.tracked_head_pose, again.tracked_head_pose)
