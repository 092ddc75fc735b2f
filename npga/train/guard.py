"""Skipping training steps whose loss or gradients are not finite, without reading the device each step.

One NaN in a loss term or a gradient, applied, makes Adam's moments NaN and the avatar lost for good. Whether a
step is finite is known only on the device, and the trainer never waits for the device within a step
(npga/train/scalars.py); so every step keeps a copy of the state its optimisers change, and after they step puts
the copy back where the step was not finite (`torch.where`: a finite step's values are kept bit for bit). The
gradients are made finite before the optimisers and densification see them (a finite gradient is left as it is).
Every `log_every` steps, when the log reads its values, `report` says which loss terms and which parameter groups
were not finite in the steps it skipped, and raises after `max_bad` skipped steps in a row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)


class NonFiniteStepsError(ValueError):
    """Training stopped: too many steps in a row were not finite (a ValueError: the CLI reports it in one line)."""


def screen_gradients(metas: Sequence[dict[str, Any]]) -> list[torch.Tensor | None]:
    """The gradients of the renderings' screen-space means: what densification's statistics add up."""
    return [m["means2d"].grad for m in metas if isinstance(m.get("means2d"), torch.Tensor)]


def make_finite(grads: Sequence[torch.Tensor | None]) -> None:
    """NaN and inf -> 0, in place (a finite gradient is left as it is)."""
    for grad in grads:
        if grad is not None:
            grad.nan_to_num_(0.0, 0.0, 0.0)


class NonFiniteGuard:
    def __init__(self, trainer: Any, max_bad: int) -> None:
        self.trainer, self.max_bad = trainer, max_bad
        device = trainer.device
        self.run = torch.zeros((), dtype=torch.int64, device=device)  # skipped steps in a row, on the device
        self.window = torch.zeros((), dtype=torch.int64, device=device)  # skipped steps since the last report
        self.terms: dict[str, torch.Tensor] = {}  # name -> 0-d bool: not finite in a skipped step of this window
        self.groups: dict[str, torch.Tensor] = {}
        self.saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self.skipped = torch.zeros((), device=device)

    def check(
        self,
        terms: dict[str, torch.Tensor],
        groups: dict[str, list[torch.Tensor]],
        metas: Sequence[dict[str, Any]],
    ) -> NonFiniteGuard:
        """After backward, before the optimisers: note whether this step is finite, copy the state the optimisers
        will change, and make the gradients finite (`metas`: the rasterizer's of each of the step's renderings).
        On several ranks, `terms` and `groups` are the sums over the ranks, so every rank decides alike."""
        finite_terms = {k: torch.isfinite(v).all() for k, v in terms.items()}
        finite_groups = {
            k: torch.stack([torch.isfinite(p.grad).all() for p in ps if p.grad is not None]).all()
            for k, ps in groups.items()
            if any(p.grad is not None for p in ps)
        }
        self.ok = torch.stack([*finite_terms.values(), *finite_groups.values()]).all()
        bad = ~self.ok
        for store, finite in ((self.terms, finite_terms), (self.groups, finite_groups)):
            for k, f in finite.items():
                store[k] = store.get(k, torch.zeros_like(bad)) | (bad & ~f)
        self.run = torch.where(self.ok, 0, self.run + 1)
        self.window = self.window + bad
        self.skipped = bad.float()
        changing = [p for ps in groups.values() for p in ps]
        for opt in self.trainer.optimizer_list():  # (on a GPU, a non-fused Adam's step counters live on the host:
            # putting them back would wait for the device, so a skipped step counts in their bias correction)
            states = [t for state in opt.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
            changing += [t for t in states if t.device == self.ok.device]
        self.saved = [(t, t.detach().clone()) for t in changing]
        make_finite([p.grad for ps in groups.values() for p in ps] + screen_gradients(metas))
        return self

    def restore(self) -> None:
        """Put back the state copied in `check` where this step was not finite."""
        with torch.no_grad():
            for t, old in self.saved:
                t.copy_(torch.where(self.ok.to(t.device), t, old))
        self.saved = []

    def report(self, step: int) -> None:
        """Warn about the steps skipped since the last report; raise after `max_bad` in a row (reads the device)."""
        skipped, run = int(self.window), int(self.run)
        if not skipped:
            return
        terms = sorted(k for k, v in self.terms.items() if bool(v))
        groups = sorted(k for k, v in self.groups.items() if bool(v))
        what = f"non-finite loss terms {terms or 'none'}, non-finite gradients of {groups or 'none'}"
        self.window.zero_()
        self.terms, self.groups = {}, {}
        if run >= self.max_bad:
            raise NonFiniteStepsError(
                f"training stopped at step {step}: the last {run} steps were not finite ({what}); the run's last "
                "checkpoint holds the state before them (lower the learning rates, or check the capture's tracking)"
            )
        log.warning("skipped %d step(s) up to step %d that were not finite (%s)", skipped, step, what)
