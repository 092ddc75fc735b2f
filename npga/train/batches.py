"""Training batches on the training device without stalling it.

A step needs a few camera images of one frame, that frame's expression code and head pose, and the cameras.
Copying them from host memory every step costs bandwidth and, for pageable memory, a synchronisation of the
device. So the codes, poses and cameras are moved to the device once, and the training split's frames are
kept there too (as uint8, a quarter of float32) when they fit `budget_bytes`. Frames outside that budget
(a large split, the held-out views of validation) are read from the frame cache's memory maps per batch,
through pinned memory with a non-blocking copy on CUDA: since the step no longer synchronises, the host
reads the next batch while the device still works on the queued step. The uint8 -> [0, 1] conversion runs
on the device through a table computed the way `FrameCache.frames` converts, so every path gives the same
floats.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from npga.avatar.model import Motion
from npga.cameras import stack_cameras
from npga.data.cache import FrameCache
from npga.metrics import composite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    sequence: str
    t: int
    serials: tuple[str, ...]  # the cameras, in the order of viewmats
    z: torch.Tensor  # (D,)
    head_pose: torch.Tensor  # (4, 4)
    viewmats: torch.Tensor  # (C, 4, 4)
    Ks: torch.Tensor  # (C, 3, 3)
    rgb: torch.Tensor  # (C, H, W, 3) composited on the background
    alpha: torch.Tensor  # (C, H, W, 1)


def byte_to_unit_table(device: torch.device) -> torch.Tensor:
    """(256,) float32: value v of a uint8 pixel -> v / 255 exactly as `FrameCache.frames` computes it."""
    return torch.from_numpy(np.arange(256, dtype=np.uint8).astype(np.float32) / 255.0).to(device)


class BatchSource:
    """Makes `Batch`es of any (sequence, frame, cameras) of a frame cache on one device."""

    def __init__(
        self,
        cache: FrameCache,
        motions: Mapping[str, Motion],
        background: torch.Tensor,
        resident_sequences: Sequence[str],
        resident_serials: Sequence[str],
        budget_bytes: float,
    ) -> None:
        self.cache = cache
        self.device = background.device
        self.background = background  # (3,)
        self.table = byte_to_unit_table(self.device)
        self.motions = {
            s: Motion(m.expression.to(self.device), m.head_pose.to(self.device), m.timesteps)
            for s, m in motions.items()
        }
        self.serial_index = {s: i for i, s in enumerate(cache.serials)}
        self.viewmats, self.Ks = stack_cameras([cache.cameras[s] for s in cache.serials], device=self.device)
        self.resident: dict[str, torch.Tensor] = {}  # seq -> uint8 (T, S, H, W, ch) of `resident_serials`
        self.resident_index = {s: i for i, s in enumerate(resident_serials)}
        channels = 4 if cache.has_alpha else 3
        size = (
            sum(cache.n_frames(s) for s in resident_sequences)
            * len(resident_serials)
            * cache.height
            * cache.width
            * channels
        )
        if size <= budget_bytes:
            for seq in tqdm(resident_sequences, desc=f"frames to {self.device}", unit="seq", leave=False):
                frames = np.stack([cache.array(seq, s) for s in resident_serials], axis=1)  # (T, S, H, W, ch)
                self.resident[seq] = torch.from_numpy(frames).to(self.device)
        log.info(
            "training frames (%.2f GB as uint8) %s",
            size / 1e9,
            f"kept on {self.device}"
            if self.resident
            else f"read from {cache.root} per batch (over the budget of {budget_bytes / 1e9:.2f} GB)",
        )

    def _rows(self, seq: str, t: int, serials: Sequence[str]) -> torch.Tensor:
        """uint8 (C, H, W, ch) frames of row `t` on the device."""
        if seq in self.resident and all(s in self.resident_index for s in serials):
            frames = self.resident[seq][t]  # (S, H, W, ch)
            return torch.stack([frames[self.resident_index[s]] for s in serials])
        if not 0 <= t < self.cache.n_frames(seq):
            raise IndexError(
                f"{self.cache.root}: frame index {t} out of range for {seq} ({self.cache.n_frames(seq)} frames)"
            )
        rows = torch.from_numpy(np.stack([self.cache.array(seq, s)[t] for s in serials]))
        if self.device.type == "cuda":
            rows = rows.pin_memory()  # the caching host allocator keeps it until the copy has run
        return rows.to(self.device, non_blocking=True)

    def camera(self, serial: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(viewmat (4, 4), K (3, 3)) of a camera on the device."""
        i = self.serial_index[serial]
        return self.viewmats[i], self.Ks[i]

    def batch(self, seq: str, t: int, serials: Sequence[str]) -> Batch:
        """Row `t` of `seq` in `serials`, composited on the background, with its code, head pose and cameras."""
        values = self.table[self._rows(seq, t, serials).int()]  # (C, H, W, ch) in [0, 1]
        rgb = values[..., :3]
        alpha = values[..., 3:] if self.cache.has_alpha else torch.ones_like(values[..., :1])
        cams = [self.serial_index[s] for s in serials]
        motion = self.motions[seq]
        return Batch(
            sequence=seq,
            t=t,
            serials=tuple(serials),
            z=motion.expression[t],
            head_pose=motion.head_pose[t],
            viewmats=torch.stack([self.viewmats[i] for i in cams]),
            Ks=torch.stack([self.Ks[i] for i in cams]),
            rgb=composite(rgb, alpha, self.background),
            alpha=alpha,
        )
