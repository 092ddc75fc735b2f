"""A training step whose loss or gradients are not finite is skipped: nothing it would change changes, the log
says which term and which parameter group, and too many in a row stop training with a clear error."""

from __future__ import annotations

import copy
import dataclasses
import logging

import pytest
import torch

import npga.train.trainer as trainer_module
from npga.train import build_trainer
from npga.train.guard import NonFiniteStepsError
from tests.test_train import tiny_config


def _poison(monkeypatch, term: str, steps: set[int] | None, trainer) -> None:
    """Make loss term `term` NaN at the trainer's steps in `steps` (None: at every step)."""
    compute = trainer_module.compute_losses

    def poisoned(*args, **kwargs):
        terms = compute(*args, **kwargs)
        if steps is None or trainer.step in steps:
            terms[term] = terms[term] * float("nan")
        return terms

    monkeypatch.setattr(trainer_module, "compute_losses", poisoned)


def _state(trainer) -> dict:
    return {
        "params": {k: v.detach().clone() for k, v in trainer.params.items()},
        "nets": copy.deepcopy(trainer.nets.state_dict()),
        "adam": copy.deepcopy({k: o.state_dict() for k, o in trainer.optimizers.items()}),
        "net_adam": copy.deepcopy(trainer.net_optimizer.state_dict()),
    }


def _assert_same(a, b) -> None:
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), k
    for k in a["nets"]:
        assert torch.equal(a["nets"][k], b["nets"][k]), k
    for name, opt in a["adam"].items():
        for i, s in opt["state"].items():
            for key, v in s.items():
                assert torch.equal(v, b["adam"][name]["state"][i][key]), (name, key)
    for i, s in a["net_adam"]["state"].items():
        for key, v in s.items():
            assert torch.equal(v, b["net_adam"]["state"][i][key]), key


def test_a_non_finite_step_changes_nothing_and_the_log_names_the_term_and_groups(
    tiny_capture, tmp_path, monkeypatch, caplog
):
    cfg = tiny_config(tiny_capture, tmp_path / "run", steps=20, val_every=0, log_every=5)
    trainer = build_trainer(cfg, hooks=[])
    for _ in range(2):
        trainer.train_step(trainer.sample_batch())  # Adam has moments
    _poison(monkeypatch, "ssim", {2}, trainer)
    before = _state(trainer)
    out = trainer.train_step(trainer.sample_batch())
    assert float(out["skipped"]) == 1.0 and trainer.step == 3
    _assert_same(before, _state(trainer))
    out = trainer.train_step(trainer.sample_batch())  # the next one trains again
    assert float(out["skipped"]) == 0.0
    assert not torch.equal(before["params"]["colors"], trainer.params["colors"])
    with caplog.at_level(logging.WARNING):
        trainer.guard.report(trainer.step)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 1 step(s) up to step 4" in warning and "non-finite loss terms ['ssim']" in warning
    assert "non-finite gradients of [" in warning and "'colors'" in warning and "'detail'" in warning


def test_steps_that_stay_non_finite_stop_training_with_a_clear_error(tiny_capture, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_capture, tmp_path / "run", steps=50, val_every=0, log_every=5, max_nonfinite_steps=4)
    trainer = build_trainer(cfg, hooks=[])
    _poison(monkeypatch, "alpha", None, trainer)
    start = _state(trainer)
    with pytest.raises(NonFiniteStepsError, match=r"training stopped at step 5: the last 5 steps were not finite "):
        trainer.fit()
    _assert_same(start, _state(trainer))  # the parameters as initialised (the first step made Adam's moments: 0)


def test_the_guard_changes_nothing_in_finite_steps(tiny_capture, tmp_path):
    """Bit for bit: a run with the guard and one without take the same steps."""
    cfg = tiny_config(tiny_capture, tmp_path / "a", steps=6, val_every=0)
    guarded = build_trainer(cfg, hooks=[])
    plain = build_trainer(dataclasses.replace(cfg, out=tmp_path / "b", max_nonfinite_steps=0), hooks=[])
    assert guarded.guard is not None and plain.guard is None
    for _ in range(6):
        for t in (guarded, plain):
            t.train_step(t.sample_batch())
    _assert_same(_state(guarded), _state(plain))
