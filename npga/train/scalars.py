"""Per-step values that stay on the device until they are logged.

Reading a device scalar on the host (`float(t)`, `t.item()`) waits for every kernel queued before it: one
such read per loss term per step keeps a GPU idle between steps. A step's values are therefore 0-d tensors,
and the hooks read a whole window of steps at once, every `log_every` steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Value = float | int | torch.Tensor
"""A logged value: a host number, or a 0-d tensor on the training device."""


def to_host(records: Sequence[Mapping[str, Value]]) -> list[dict[str, float]]:
    """The records with every tensor read as a Python number, all in one copy (one synchronisation)."""
    keys = [(i, k) for i, r in enumerate(records) for k, v in r.items() if isinstance(v, torch.Tensor)]
    out: list[dict] = [dict(r) for r in records]  # same keys, same order
    if keys:
        values = torch.stack([records[i][k].detach().reshape(()).double() for i, k in keys]).tolist()
        for (i, k), v in zip(keys, values, strict=True):
            out[i][k] = v
    return out
