"""The trainer: one avatar's optimisation state and its step.

`Trainer` only wires the parts together: `train_step(batches)` is one optimisation step (deform, rasterize,
named losses and backward for each of its frames, Adam, densify), `fit()` loops and calls hooks. A step reads
nothing back from the device: its logged values stay 0-d tensors until a hook reads a window of them
(npga/train/scalars.py). Several processes may train one avatar together (npga/train/distributed.py).
It owns the checkpoints (trainer state for resuming, loaded without running code) and writes the avatar
file with each of them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

import npga
from npga.avatar import AvatarNets, Gaussians, deform, knn_graph, render_gaussians
from npga.avatar.config import AvatarConfig
from npga.avatar.deform import pose
from npga.avatar.densify import STATISTICS, add_statistics, make_strategy
from npga.avatar.file import save_avatar
from npga.avatar.model import Avatar, Motion, code_stats
from npga.avatar.mouth import mouth_weight
from npga.config import to_dict
from npga.data.cache import FrameCache
from npga.data.tracking import Tracking
from npga.io.atomic import atomic_path
from npga.io.untrusted import CorruptFile, first_line, load_torch
from npga.losses import compute_losses, total_loss
from npga.metrics import LPIPS, psnr
from npga.provenance import git_commit
from npga.render.projection import may_draw
from npga.runs import RunLayout
from npga.split import Split
from npga.train.batches import Batch, BatchSource
from npga.train.config import LearningRates, TrainConfig, per_step
from npga.train.distributed import World
from npga.train.guard import NonFiniteGuard, make_finite, screen_gradients
from npga.train.mouth_phase import (
    MARGIN,
    MOUTH_FRAMES_BUDGET,
    SLACK,
    MouthFrame,
    Window,
    contains,
    crop_intrinsics,
    grow,
    mouth_window,
    only_trainable,
    window_loss,
)
from npga.train.refine import TrackingCorrections, make_refine_optimizer, refine_learning_rates
from npga.train.scalars import Value, to_host

log = logging.getLogger(__name__)
CHECKPOINT = "an npga training checkpoint"


class Hook(Protocol):
    """Called after every step with the step's logged values (hooks may add to them), and once at the end.

    Values are host numbers or 0-d device tensors (`Value`); read tensors only every `log_every` steps, all at
    once (`to_host`): each read waits for the device.
    """

    def after_step(self, trainer: Trainer, out: dict[str, Value]) -> None: ...
    def close(self, trainer: Trainer) -> None: ...


def make_optimizers(
    params: nn.ParameterDict, nets: AvatarNets, lr: LearningRates, fused: bool = False
) -> tuple[dict[str, torch.optim.Optimizer], torch.optim.Optimizer | None]:
    """One Adam per Gaussian entry (gsplat's strategies expect that) and one for the networks; `fused`: each
    Adam's update in one kernel, its step counter on the device (the trainer's choice on CUDA: 0.7 ms less per
    250k-Gaussian step on an H100, benchmarks/RESULTS.md)."""
    per_gaussian = {k: torch.optim.Adam([p], lr=getattr(lr, k), eps=1e-15, fused=fused) for k, p in params.items()}

    def of(net: nn.Module | None, skip: str = "") -> list[nn.Parameter]:
        return [] if net is None else [p for n, p in net.named_parameters() if not (skip and n.startswith(skip))]

    mouth = nets.detail.mouth if nets.detail is not None else None  # its own rate: a few Gaussians feed it
    parts = (
        (of(nets.detail, skip="mouth."), lr.detail),
        (of(mouth), lr.mouth),
        (of(nets.cnn), lr.cnn),
        (of(nets.coarse), lr.coarse),
    )
    groups = [{"params": ps, "lr": rate} for ps, rate in parts if ps and rate > 0]
    return per_gaussian, torch.optim.Adam(groups, fused=fused) if groups else None


def motion_of(tracking: Tracking) -> Motion:
    """A sequence's tracking as the avatar's playback motion (float32 tensors)."""
    return Motion(
        expression=torch.from_numpy(tracking.expression).float(),
        head_pose=torch.from_numpy(tracking.head_poses).float(),
        timesteps=torch.from_numpy(np.asarray(tracking.timesteps, dtype=np.int64)),
    )


class Trainer:
    """One avatar's optimisation: parameters, networks, optimisers, densification state, data."""

    def __init__(
        self,
        cfg: TrainConfig,
        cache: FrameCache,
        split: Split,
        params: nn.ParameterDict,
        nets: AvatarNets,
        scene_scale: float,
        avatar_cfg: AvatarConfig,
        head_model: dict[str, Any],
        hooks: Sequence[Hook] = (),
        tracking: Mapping[str, Tracking] | None = None,
        world: World | None = None,
    ) -> None:
        cfg = per_step(cfg)  # K frames per step: steps / K steps on the same schedule
        if cfg.mouth_steps and (nets.detail is None or nets.detail.mouth is None):
            log.warning("no mouth network (--detail.mouth.enabled): the %d mouth steps are skipped", cfg.mouth_steps)
            cfg = replace(cfg, mouth_steps=0)
        self.cfg = cfg
        self.world = world  # None: one process
        self.run = RunLayout(cfg.out)
        self.avatar_cfg = avatar_cfg
        self.head_model = head_model  # the head model's description, for the avatar file
        self.latest: dict[str, Value] = {}  # newest value of each PSNR the hooks logged (provenance)
        self.cache = cache
        self.split = split
        self.params = params
        self.nets = nets
        self.hooks = list(hooks)
        self.device = params["means"].device
        self.reset_optimizers()
        if cfg.mouth_steps and self.mouth_group() is None:  # before the joint steps, not after them
            raise ValueError("the mouth phase (--mouth-steps) needs the mouth network to learn: --lr.mouth is 0")
        self.strategy = make_strategy(cfg.densify)
        self.strategy.check_sanity(params, self.optimizers)
        self.scene_scale = scene_scale
        self.strategy_state = self.strategy.initialize_state(scene_scale=scene_scale)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.neighbors = knn_graph(params["means"], cfg.knn)
        self._graph_of = params["means"]  # the Parameter the graph was built from
        self.background = torch.tensor(cfg.background, dtype=torch.float32, device=self.device)
        if tracking is None:
            tracking = {s: cache.tracking(s) for s in cache.sequences if cache.has_tracking(s)}
        self.motions = {s: motion_of(tr) for s, tr in tracking.items()}  # the tracking as given, never refined
        self.corrections: TrackingCorrections | None = None
        self.refine_optimizer: torch.optim.Optimizer | None = None
        if cfg.refine_tracking:
            frames = {s: len(self.motions[s]) for s in split.train_sequences}
            pivot = params["means"].detach().mean(0)  # (3,) the head's centre at initialisation
            self.corrections = TrackingCorrections(frames, avatar_cfg.expression_dim, pivot).to(self.device)
            self.refine_optimizer = make_refine_optimizer(self.corrections, cfg.refine)
        if nets.detail is not None:
            nets.detail.set_code_range(self.training_codes().to(self.device))
        self.train_serials = tuple(s for s in split.train_serials if s in cache.serials)
        self.batches = BatchSource(
            cache,
            self.motions,
            self.background,
            split.train_sequences,
            self.train_serials,
            cfg.frames_on_device_gb * 1e9,
        )
        self._mouth_frames: dict[tuple[str, int], MouthFrame] = {}  # the mouth phase's frames (`mouth_frame`)
        self._mouth_frames_bytes = 0
        self.sync_timers: Callable[[], None] = lambda: None  # benchmarks: torch.cuda.synchronize, to time each part
        self.guard = NonFiniteGuard(self, cfg.max_nonfinite_steps) if cfg.max_nonfinite_steps > 0 else None
        self.lpips = LPIPS(self.device) if cfg.loss.lpips > 0 else None
        if self.lpips is not None and not self.lpips.available:
            log.warning("%s; training without the LPIPS term", self.lpips.reason)
            self.lpips = None

    # ---- data -------------------------------------------------------------------------------------------
    def draw(self) -> tuple[str, int, list[str]]:
        """(sequence, frame, cameras) of one training item, drawn from the trainer's generator."""
        seq = self.split.train_sequences[int(self.rng.integers(len(self.split.train_sequences)))]
        t = int(self.rng.integers(self.cache.n_frames(seq)))
        n = min(self.cfg.cameras_per_step, len(self.train_serials))
        serials = [self.train_serials[i] for i in self.rng.choice(len(self.train_serials), n, replace=False)]
        return seq, t, serials

    def sample_batch(self) -> Batch:
        return self.make_batch(*self.draw())

    def sample_step(self) -> list[Batch]:
        """This rank's batches of the next step's `frames_per_step` items: every rank draws all of them, in the
        same order from the same seed, and loads its share (`share`)."""
        items = [self.draw() for _ in range(self.cfg.frames_per_step)]
        return [self.make_batch(*item) for item in items[self.share(len(items))]]

    def share(self, k: int) -> slice:
        """This rank's items of a step's `k` (all of them on one process)."""
        return slice(0, k) if self.world is None else self.world.share(k)

    def make_batch(self, seq: str, t: int, serials: Sequence[str]) -> Batch:
        return self.batches.batch(seq, t, serials)

    # ---- one step ---------------------------------------------------------------------------------------
    def mouth_group(self) -> dict[str, Any] | None:
        """The network optimiser's group of the mouth network (None without one, or at a rate of 0), found by
        its parameters: a checkpoint's groups carry no names."""
        mouth = self.nets.detail.mouth if self.nets.detail is not None else None
        if mouth is None or self.net_optimizer is None:
            return None
        first = next(mouth.parameters())
        return next((g for g in self.net_optimizer.param_groups if any(p is first for p in g["params"])), None)

    def _set_learning_rates(self) -> None:
        frac = self.step / max(self.cfg.steps - 1, 1)
        self.optimizers["means"].param_groups[0]["lr"] = self.cfg.lr.means * self.cfg.lr.means_final**frac
        mouth = self.mouth_group()
        if mouth is not None:
            mouth["lr"] = self.cfg.lr.mouth * self.cfg.lr.mouth_final**frac
        if self.refine_optimizer is not None:
            rates = refine_learning_rates(self.corrections, self.cfg.refine, self.step, self.cfg.steps)
            for group, lr in zip(self.refine_optimizer.param_groups, rates, strict=True):
                group["lr"] = lr

    @property
    def refining(self) -> bool:
        """Whether this step moves the tracking corrections (after `refine.start`, with --refine-tracking)."""
        return self.corrections is not None and self.step >= self.cfg.refine.start

    def posed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(code (D,), head pose (4, 4)) that draw the batch's frame: its tracking, refined where it is."""
        if not self.refining or batch.sequence not in self.corrections.offsets:
            return batch.z, batch.head_pose  # before `refine.start` the corrections are zero
        return self.corrections.apply(batch.sequence, batch.t, batch.z, batch.head_pose)

    def rasterize(self, g: Gaussians, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """rgb (C, H, W, 3) on the background, alpha (C, H, W, 1) and the rasterizer's meta, in the batch's cameras."""
        return render_gaussians(
            g, batch.viewmats, batch.Ks, self.cache.width, self.cache.height, self.background, self.nets.cnn
        )

    def code_noise(self, local: Sequence[Batch], k: int) -> list[torch.Tensor | None]:
        """The detail code's noise (`detail_code_noise`) of this rank's frames of a step of `k`: every rank draws
        every frame's, and torch's generators are saved in checkpoints, so a resumed run draws alike."""
        if self.cfg.detail_code_noise <= 0:
            return [None] * len(local)
        return [torch.randn_like(local[0].z) for _ in range(k)][self.share(k)]

    def train_step(self, batches: Batch | Sequence[Batch]) -> dict[str, Value]:
        """Render, score, back-propagate, update, densify; returns the logged values of this step (the means over
        its frames of the loss terms and PSNR, as 0-d device tensors: reading them here would make the host wait
        for the device every step).

        `batches`: this rank's frames of the step (`sample_step`; one `Batch`: a step of one frame). Each frame's
        loss is weighted 1 / K, K the step's frames on every rank, and the gradients add up: the step follows the
        mean gradient of its K frames. On several ranks one all-reduce sums the gradients, the densification
        statistics and the logged values (npga/train/distributed.py); every rank then takes the same step."""
        local = [batches] if isinstance(batches, Batch) else list(batches)
        k = len(local) * (1 if self.world is None else self.world.size)
        names = ("deform", "rasterize", "loss", "backward", "sync", "optimizer", "densify")
        times, clock = dict.fromkeys(names, 0.0), [time.perf_counter()]

        def tick(name: str) -> None:
            self.sync_timers()
            clock.append(time.perf_counter())
            times[name] += clock[-1] - clock[-2]

        noise = self.code_noise(local, k)
        metas, records = [], []
        for batch, eps in zip(local, noise, strict=True):
            z, head_pose = self.posed(batch)
            detail_code = None if eps is None else z + self.cfg.detail_code_noise * eps
            g = deform(self.params, self.nets, z, head_pose, detail_code)
            tick("deform")
            rgb, alpha, meta = self.rasterize(g, batch)
            tick("rasterize")
            self.strategy.step_pre_backward(self.params, self.optimizers, self.strategy_state, self.step, meta)
            lpips = self.lpips.differentiable if self.lpips and self.step >= self.cfg.loss.lpips_start else None
            terms = compute_losses(rgb, alpha, batch.rgb, batch.alpha, g, self.neighbors, self.cfg.loss, lpips)
            loss = total_loss(terms, self.cfg.loss)
            if self.refining:
                prior, smooth = self.corrections.penalties(self.cfg.refine)
                terms |= {"tracking_prior": prior, "tracking_smooth": smooth}
                loss = loss + self.cfg.refine.prior * prior + self.cfg.refine.smooth * smooth
            tick("loss")
            (loss / k).backward()
            tick("backward")
            with torch.no_grad():
                record = {"loss": loss.detach(), "psnr": psnr(rgb.clamp(0, 1), batch.rgb).mean()}
            records.append(record | {f"loss_{n}": v.detach() for n, v in terms.items()})
            metas.append({**meta, "n_cameras": meta["n_cameras"] * k})  # gsplat's scale: a K-th of each loss
        sums = {n: torch.stack([r[n] for r in records]).sum() for n in records[0]}
        groups = self.gradient_groups()
        statistics = None  # a step of several frames sums its densification statistics, then adds them
        if k > 1:
            statistics = self.strategy.initialize_state(scene_scale=self.scene_scale)
        if self.world is not None:
            if self.guard is not None:
                make_finite(screen_gradients(metas))
            self._accumulate(statistics, metas)
            added = [statistics[n] for n in STATISTICS if isinstance(statistics.get(n), torch.Tensor)]
            params = [p for ps in groups.values() for p in ps]
            totals = torch.stack(list(sums.values()))
            self.world.sum_([p.grad for p in params] + added + [totals], params + added + [totals])
            sums = dict(zip(sums, totals, strict=True))
        tick("sync")
        mean = {n: v / k for n, v in sums.items()}
        terms = {n.removeprefix("loss_"): v for n, v in mean.items() if n.startswith("loss_")}
        guard = self.guard.check(terms, groups, metas) if self.guard is not None else None
        self._set_learning_rates()
        for opt in [*self.optimizers.values(), self.net_optimizer]:
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
        if self.refine_optimizer is not None:
            if self.refining:
                self.refine_optimizer.step()
                self.corrections.remove_mean()
            self.refine_optimizer.zero_grad(set_to_none=True)
        if guard is not None:
            guard.restore()  # a non-finite step changes nothing
        tick("optimizer")
        if statistics is None:
            self._accumulate(self.strategy_state, metas)
        else:
            if self.world is None:
                self._accumulate(statistics, metas)
            add_statistics(self.strategy_state, statistics)
        self.strategy.refine(self.params, self.optimizers, self.strategy_state, self.step, metas[0])
        self.step += 1
        changed = self.params["means"] is not self._graph_of  # densification replaced the Gaussians
        if changed or (self.cfg.graph_every and self.step % self.cfg.graph_every == 0):
            self.neighbors = knn_graph(self.params["means"], self.cfg.knn)
            self._graph_of = self.params["means"]
        tick("densify")
        out: dict[str, Value] = {"step": self.step, "loss": mean["loss"], "psnr": mean["psnr"]}
        out |= {n: v for n, v in mean.items() if n.startswith("loss_")}
        if guard is not None:
            out["skipped"] = guard.skipped
        out["n_gaussians"] = len(self.params["means"])
        out |= {f"time_{n}": t for n, t in times.items() if n != "sync" or self.world is not None}
        return out

    def mouth_frame(self, batch: Batch, z: torch.Tensor, head_pose: torch.Tensor) -> MouthFrame | None:
        """The Gaussians the mouth phase draws for the batch's frame (`MouthFrame`), chosen the first time it comes
        and kept while the kept ones fit `MOUTH_FRAMES_BUDGET`; None beyond it (the step draws them all). Chosen
        from the frozen state alone (the exact code; the window from the mouth moved by the coarse field), so a
        resumed run chooses what the uninterrupted one did."""
        key = (batch.sequence, batch.t)
        if key in self._mouth_frames or self._mouth_frames_bytes >= MOUTH_FRAMES_BUDGET:
            return self._mouth_frames.get(key)
        mouth = self.nets.detail.mouth
        with torch.no_grad():
            x_c = self.params["means"]
            offset = None if self.nets.coarse is None else self.nets.coarse(x_c, z)  # (N, 3)
            g = deform(self.params, self.nets, z, head_pose, coarse_offset=offset)
            inside = mouth_weight(x_c, mouth.center, mouth.radii) > 0  # (N,)
            coarse = x_c if offset is None else x_c + offset
            rigid = pose(replace(g, means=coarse), head_pose).means[inside]  # (M, 3) the mouth, coarse motion only
            windows: dict[str, Window] = {}
            keep = inside.clone()
            for serial in self.train_serials:
                viewmat, K = self.batches.camera(serial)
                window = mouth_window(rigid, viewmat, K, self.cache.width, self.cache.height, MARGIN)
                if window is None:
                    continue
                x0, y0, x1, y1 = windows[serial] = grow(window, SLACK, self.cache.width, self.cache.height)
                Kw = crop_intrinsics(K, x0, y0)[None]
                keep |= may_draw(g.means, g.scales, viewmat[None], Kw, x1 - x0, y1 - y0)[0]
            index = keep.nonzero()[:, 0]
        frame = MouthFrame(index, None if offset is None else offset[index], windows)
        self._mouth_frames[key] = frame
        self._mouth_frames_bytes += frame.nbytes
        return frame

    def mouth_step(self, batches: Batch | Sequence[Batch]) -> dict[str, Value]:
        """A step of the mouth phase (`mouth_steps`, npga/train/mouth_phase.py): only the mouth network learns,
        from each camera's window around the mouth; the rest of the avatar is drawn as the joint steps left it,
        from the Gaussians that reach the window (`mouth_frame`). The logged values are the windows'
        (`mouth_psnr`), not the frames'."""
        local = [batches] if isinstance(batches, Batch) else list(batches)
        k = len(local) * (1 if self.world is None else self.world.size)
        mouth = self.nets.detail.mouth
        start = time.perf_counter()
        everything = [*self.params.values(), *self.nets.parameters()]
        if self.corrections is not None:
            everything += list(self.corrections.parameters())
        n = len(self.params["means"])
        records = []
        with only_trainable(everything, mouth.parameters()):
            for batch, eps in zip(local, self.code_noise(local, k), strict=True):
                with torch.no_grad():
                    z, head_pose = self.posed(batch)
                detail_code = None if eps is None else z + self.cfg.detail_code_noise * eps
                frame = self.mouth_frame(batch, z, head_pose)
                part = self.params if frame is None else {name: p[frame.index] for name, p in self.params.items()}
                g = deform(part, self.nets, z, head_pose, detail_code, None if frame is None else frame.coarse_offset)
                inside = mouth_weight(part["means"], mouth.center, mouth.radii) > 0  # the mouth's Gaussians in g
                whole = None if frame is not None else g  # every Gaussian, where a window left its grown one
                for c, serial in enumerate(batch.serials):
                    window = mouth_window(
                        g.means[inside].detach(), batch.viewmats[c], batch.Ks[c], self.cache.width,
                        self.cache.height, MARGIN,
                    )  # fmt: skip
                    if window is None:
                        continue
                    drawn_from = g
                    if frame is not None and not contains(frame.windows.get(serial), window):
                        if whole is None:
                            whole = deform(self.params, self.nets, z, head_pose, detail_code)
                        drawn_from = whole
                    x0, y0, x1, y1 = window
                    K = crop_intrinsics(batch.Ks[c], x0, y0)[None]
                    rgb, alpha, _ = render_gaussians(
                        drawn_from, batch.viewmats[c : c + 1], K, x1 - x0, y1 - y0, self.background, self.nets.cnn
                    )
                    gt_rgb, gt_alpha = batch.rgb[c : c + 1, y0:y1, x0:x1], batch.alpha[c : c + 1, y0:y1, x0:x1]
                    loss = window_loss(rgb, alpha, gt_rgb, gt_alpha, drawn_from, n, self.cfg.loss)
                    # the window's share of the frame's mean: the mouth's gradient as large as in a joint step, so
                    # the Adam moments from those steps scale its steps as they did (counted as a whole frame, the
                    # steps were far larger and the held-out mouth got worse; no LPIPS on a window this small)
                    share = (x1 - x0) * (y1 - y0) / (self.cache.width * self.cache.height)
                    retain = c + 1 < len(batch.viewmats)
                    (loss * share / (k * len(batch.viewmats))).backward(retain_graph=retain)
                    with torch.no_grad():
                        records.append(torch.stack([loss.detach(), psnr(rgb.clamp(0, 1), gt_rgb).mean()]))
        sums = torch.stack(records).sum(0) if records else self.background.new_zeros(2)
        counts = self.background.new_tensor(float(len(records)))
        params = list(mouth.parameters())
        if self.world is not None:
            self.world.sum_([p.grad for p in params] + [sums, counts], params + [sums, counts])
        self.mouth_group()["lr"] = self.cfg.lr.mouth_phase
        self.net_optimizer.step()
        self.net_optimizer.zero_grad(set_to_none=True)
        self.step += 1
        mean = sums / counts.clamp_min(1)
        return {
            "step": self.step,
            "loss_mouth": mean[0],
            "mouth_psnr": mean[1],
            "n_gaussians": n,
            "time_mouth": time.perf_counter() - start,
        }

    def _accumulate(self, state: dict[str, Any], metas: Sequence[dict[str, Any]]) -> None:
        """Add each rendering's screen-space gradients to the densification statistics in `state`."""
        for meta in metas:
            self.strategy.accumulate(self.params, self.optimizers, state, self.step, meta)

    def fit(self) -> Path:
        """Train until `cfg.total_steps` (the joint steps, then the mouth phase's); a checkpoint is written at the
        end and on Ctrl-C or SIGTERM (`kill`, a batch scheduler's time limit). On several ranks a signal to any of
        them stops all after the same step (each rank's handler only sets a flag, which the ranks share after every
        step)."""
        if self.step >= self.cfg.total_steps and self.run.checkpoint(self.step).is_file():
            return self.run.checkpoint(self.step)  # a finished run: its checkpoint and avatar file stay as they are
        main_thread = threading.current_thread() is threading.main_thread()
        stop = threading.Event()
        signals = (signal.SIGTERM,) if self.world is None else (signal.SIGTERM, signal.SIGINT)
        handler = _interrupt if self.world is None else lambda signum, frame: stop.set()
        previous = {s: signal.signal(s, handler) for s in signals} if main_thread else {}
        try:
            while self.step < self.cfg.total_steps:
                step = self.train_step if self.step < self.cfg.steps else self.mouth_step
                out = step(self.sample_step())
                for hook in self.hooks:
                    hook.after_step(self, out)
                self.latest |= {k: v for k, v in out.items() if "psnr" in k}
                logged = self.step % self.cfg.log_every == 0 or self.step == self.cfg.total_steps
                if self.guard is not None and logged:
                    self.guard.report(self.step)  # reads the device: only as often as the log does
                if self.world is not None:
                    if logged:
                        self.world.check_same(self.params["means"], self.step)
                    if self.world.anyone(stop.is_set()):
                        raise KeyboardInterrupt("a rank was asked to stop")
        except KeyboardInterrupt:
            path = self.save_checkpoint()
            if self.world is not None:
                self.world.barrier()  # every rank ends once the checkpoint is written
            log.warning("interrupted at step %d; saved %s (resume with --resume)", self.step, path)
            raise
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            for hook in self.hooks:
                hook.close(self)
        return self.save_checkpoint()

    def gradient_groups(self) -> dict[str, list[torch.Tensor]]:
        """{name: parameters} as the optimisers update them: each Gaussian entry, each network, the corrections."""
        groups = {k: [p] for k, p in self.params.items()}
        for name in ("detail", "cnn", "coarse"):
            net = getattr(self.nets, name)
            if net is not None:
                groups[name] = [p for p in net.parameters() if p.requires_grad]
        if self.corrections is not None:
            groups["tracking"] = list(self.corrections.parameters())
        return groups

    def optimizer_list(self) -> list[torch.optim.Optimizer]:
        opts = [*self.optimizers.values(), self.net_optimizer, self.refine_optimizer]
        return [o for o in opts if o is not None]

    def reset_optimizers(self) -> None:
        """Fresh Adam states for the current parameters (fused on CUDA)."""
        self.optimizers, self.net_optimizer = make_optimizers(
            self.params, self.nets, self.cfg.lr, fused=self.device.type == "cuda"
        )

    def replace_gaussians(self, params: dict[str, torch.Tensor]) -> None:
        """Go on from other Gaussians (the same entries, any number) with fresh Adam moments, densification
        statistics and graph: how benchmarks grow an avatar to paper scale without training it there."""
        if set(params) != set(self.params):
            raise ValueError(f"Gaussian entries {sorted(params)} do not match the avatar's {sorted(self.params)}")
        for k, v in params.items():
            self.params[k] = nn.Parameter(v.detach().to(self.device), requires_grad=True)
        self.reset_optimizers()
        self.strategy_state = self.strategy.initialize_state(scene_scale=self.scene_scale)
        self.neighbors = knn_graph(self.params["means"], self.cfg.knn)
        self._graph_of = self.params["means"]

    # ---- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": to_dict(self.cfg),
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "nets": self.nets.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "net_optimizer": None if self.net_optimizer is None else self.net_optimizer.state_dict(),
            "corrections": None if self.corrections is None else self.corrections.state_dict(),
            "refine_optimizer": None if self.refine_optimizer is None else self.refine_optimizer.state_dict(),
            "strategy_state": self.strategy_state,
            "neighbors": self.neighbors,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def load_state_dict(self, state: dict[str, Any], source: Path | str = "checkpoint") -> None:
        """Restore a checkpoint into a trainer built from the same config (parameters of any size)."""
        try:
            self._load_state(state, source)
        except (KeyError, TypeError, AttributeError, IndexError, RuntimeError) as e:
            raise CorruptFile(source, CHECKPOINT, f"{type(e).__name__}: {first_line(e)}") from None

    def _load_state(self, state: dict[str, Any], source: Path | str) -> None:
        if set(state["params"]) != set(self.params):
            raise ValueError(
                f"{source}: Gaussian parameters {sorted(state['params'])} do not match the config's "
                f"{sorted(self.params)}"
            )
        for k, v in state["params"].items():
            if v.shape[1:] != self.params[k].shape[1:]:
                raise ValueError(
                    f"{source}: params/{k} has shape {tuple(v.shape)}, the config makes "
                    f"(N, {', '.join(map(str, self.params[k].shape[1:]))})"
                )
            self.params[k] = nn.Parameter(v.to(self.device), requires_grad=True)
        try:
            self.nets.load_state_dict(state["nets"])
        except RuntimeError as e:
            problem = " ".join(str(e).split())
            raise ValueError(f"{source}: network weights do not match the config ({problem[:400]})") from None
        if (self.corrections is None) != (state.get("corrections") is None):
            have = "holds no" if state.get("corrections") is None else "holds"
            raise ValueError(f"{source} {have} tracking corrections, the config's refine_tracking is the opposite")
        if self.corrections is not None:
            self.corrections.load_state_dict(state["corrections"])
        self.reset_optimizers()
        loaded = {**self.optimizers, "net_optimizer": self.net_optimizer, "refine_optimizer": self.refine_optimizer}
        saved = {**state["optimizers"], "net_optimizer": state["net_optimizer"]}
        saved["refine_optimizer"] = state.get("refine_optimizer")
        optimizers = {k: o for k, o in loaded.items() if o is not None}
        # The learning rates are the config's (a resume with --override-config may change them); a loaded Adam
        # state would bring back the checkpoint's.
        rates = {k: [g["lr"] for g in o.param_groups] for k, o in optimizers.items()}
        for k, o in optimizers.items():
            o.load_state_dict(saved[k])
            for group, lr in zip(o.param_groups, rates[k], strict=True):
                group["lr"] = lr
        self.strategy_state = state["strategy_state"]
        self.neighbors = state["neighbors"].to(self.device)
        self._graph_of = self.params["means"]
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            if self.world is None:
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            else:  # every rank goes on from the generator of the GPU that rank 0 (GPU 0) or one process trained on
                torch.cuda.set_rng_state(state["cuda_rng"][0], self.device)
        self.step = state["step"]

    def save_checkpoint(self) -> Path:
        """`checkpoints/step_XXXXXXX.pt` and the avatar file, each written atomically; checkpoints beyond
        `keep_checkpoints` are removed (the avatar file always matches the newest). On several ranks only rank 0
        writes (all hold the same state)."""
        path = self.run.checkpoint(self.step)
        if self.world is not None and not self.world.is_main:
            return path
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)
        save_avatar(self.to_avatar(), self.run.avatar)
        for old in self.run.list_checkpoints()[: -self.cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def played_motions(self) -> dict[str, Motion]:
        """Every sequence's motion as the avatar plays it back: the training sequences' refined, if refining."""
        if self.corrections is None:
            return dict(self.motions)
        return {
            s: self.corrections.refined(s, m) if s in self.corrections.offsets else m for s, m in self.motions.items()
        }

    def training_codes(self) -> torch.Tensor:
        """(T, D) the expression codes of every training frame, as the avatar is trained with them."""
        motions = self.played_motions()
        return torch.cat([motions[s].expression for s in self.split.train_sequences])

    def to_avatar(self) -> Avatar:
        """The avatar as trained so far: what the avatar file holds."""
        provenance = {
            "npga_version": npga.__version__,
            "git_commit": git_commit(),
            "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "step": self.step,
            "capture": str(self.cfg.capture),
            "cache": str(self.cache.root),
            "config": to_dict(self.cfg),
            **to_host([self.latest])[0],
        }
        return Avatar(
            config=self.avatar_cfg,
            params={k: v.detach() for k, v in self.params.items()},
            nets=self.nets,
            motions=self.played_motions(),
            codes=code_stats(self.training_codes()),
            cameras=self.cache.cameras,
            split=self.split,
            head_model=self.head_model,
            provenance=provenance,
        )


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's state, loaded without running code from it (tensors and plain values only), its Gaussians
    checked (float32, finite, one row each) before anything is built from it."""
    state = load_torch(path, CHECKPOINT, map_location=device)
    params = state.get("params") if isinstance(state, dict) else None
    missing = [
        k
        for k in ("params", "nets", "optimizers", "net_optimizer", "strategy_state", "neighbors", "step")
        if not isinstance(state, dict) or k not in state
    ]
    if missing or not isinstance(params, dict) or "means" not in params:
        raise CorruptFile(path, CHECKPOINT, f"no {missing or ['params/means']}")
    for k, v in params.items():
        if not isinstance(v, torch.Tensor) or v.dtype != torch.float32 or v.ndim < 1:
            raise CorruptFile(path, CHECKPOINT, f"params/{k} is not a float32 tensor of one row per Gaussian")
    for k, v in params.items():
        if len(v) != len(params["means"]):
            raise CorruptFile(path, CHECKPOINT, f"params/{k} has {len(v)} rows, params/means {len(params['means'])}")
        if not torch.isfinite(v).all():
            raise CorruptFile(path, CHECKPOINT, f"params/{k} contains NaN or inf")
    return state


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
