"""`npga train`: fit an avatar to a prepared capture.

`build_trainer` checks the input (head model, tracking, split) before any expensive work, distills the
forward field if the run has none, and initialises the canonical Gaussians; `Trainer` only wires the parts
together: `train_step(batch)` is one optimisation step, `fit()` loops and calls hooks (progress bar, JSONL
log, checkpoints, curves). Runs resume bit for bit on the CPU from their last checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from npga.avatar import (
    AvatarNets,
    CNNConfig,
    DetailConfig,
    DetailMLP,
    Gaussians,
    InitConfig,
    ScreenCNN,
    deform,
    init_params,
    knn_graph,
    render_gaussians,
)
from npga.avatar.densify import DensifyConfig, make_strategy
from npga.cameras import stack_cameras
from npga.config import DeviceName, load_config, resolve_device, save_config, to_dict
from npga.data.cache import FrameCache
from npga.data.capture import Capture
from npga.data.layout import NERSEMBLE_HOLDOUT_SERIALS
from npga.data.prepare import open_or_prepare
from npga.deform.distill import DISTILL_FILE, DistillConfig, distill, load_distilled, save_distilled
from npga.deform.field import ForwardField
from npga.headmodel import HeadModel, load_head_model
from npga.io.plots import plot_training_curves, read_log
from npga.losses import LossWeights, compute_losses, total_loss
from npga.metrics import LPIPS, composite, psnr
from npga.split import Split, make_split

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
SPLIT_FILE = "split.json"
CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "logs/train.jsonl"
CURVES_FILE = "logs/training_curves.png"
_RUN_ONLY_FIELDS = ("resume", "override_config")  # may differ between a run and its resumption


@dataclass(frozen=True)
class LearningRates:
    means: float = 5e-5
    """Canonical positions (head units per step)."""
    means_final: float = 0.1
    """Factor the position learning rate decays to (exponentially) by the last step."""
    quats: float = 1e-3
    scales: float = 5e-3
    """Log standard deviations."""
    opacities: float = 5e-2
    """Opacity logits."""
    colors: float = 1e-2
    """Colour logits."""
    features: float = 1e-3
    """Latent features."""
    detail: float = 1e-3
    """Detail MLP."""
    coarse: float = 0.0
    """Distilled coarse field: 0 keeps it frozen, > 0 fine-tunes it."""
    cnn: float = 1e-3
    """Screen-space CNN."""


@dataclass(frozen=True)
class TrainConfig:
    capture: Path = Path("data/demo")
    """Participant folder (`npga synth` output or a NeRSemble participant with tracking)."""
    out: Path = Path("runs/demo")
    """Run folder: config, split, distilled field, checkpoints, logs."""
    resume: bool = False
    """Continue the run in `out` from its last checkpoint."""
    override_config: bool = False
    """Allow resuming with a config that differs from the run's."""
    steps: int = 3000
    """Total optimisation steps."""
    seed: int = 0
    """Seeds initialisation, batch sampling and densification."""
    device: DeviceName = "auto"
    height: int | None = 256
    """Frame-cache image height (capped at the videos' height); None: the videos' size."""
    cameras_per_step: int = 1
    """Training cameras rendered per step (all from the same frame)."""
    heldout_serials: tuple[str, ...] = NERSEMBLE_HOLDOUT_SERIALS
    """Cameras never trained on (NeRSemble's NVS hold-out by default)."""
    heldout_sequences: tuple[str, ...] = ("FREE",)
    """Sequences never trained on (new expressions for evaluation)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour that renders and ground truth are composited on."""
    use_coarse: bool = True
    """Move Gaussians with the distilled forward field."""
    use_detail: bool = True
    """Add the detail MLP's residuals."""
    knn: int = 8
    """Neighbours per Gaussian in the Laplacian graph."""
    graph_every: int = 100
    """Steps between rebuilds of the kNN graph (it is also rebuilt after every densification)."""
    log_every: int = 10
    """Steps between JSONL records."""
    val_every: int = 100
    """Steps between validation renders (PSNR on a held-out camera, logged as val_psnr); 0: never."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """Checkpoints kept in the run folder (the newest ones)."""
    init: InitConfig = field(default_factory=InitConfig)
    detail: DetailConfig = field(default_factory=DetailConfig)
    cnn: CNNConfig = field(default_factory=CNNConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Used when the run folder has no distill.pt yet."""
    lr: LearningRates = field(default_factory=LearningRates)
    loss: LossWeights = field(default_factory=LossWeights)
    densify: DensifyConfig = field(default_factory=DensifyConfig)


@dataclass(frozen=True)
class Batch:
    sequence: str
    t: int
    z: torch.Tensor  # (D,)
    head_pose: torch.Tensor  # (4, 4)
    viewmats: torch.Tensor  # (C, 4, 4)
    Ks: torch.Tensor  # (C, 3, 3)
    rgb: torch.Tensor  # (C, H, W, 3) composited on the background
    alpha: torch.Tensor  # (C, H, W, 1)


class Hook(Protocol):
    def after_step(self, trainer: Trainer, out: dict[str, float]) -> None: ...
    def close(self, trainer: Trainer) -> None: ...


def build_nets(cfg: TrainConfig, head: HeadModel, coarse: ForwardField | None) -> AvatarNets:
    """The networks a config asks for; the coarse field comes from distillation (or a checkpoint)."""
    detail = None
    if cfg.use_detail:
        detail = DetailMLP(cfg.detail, cfg.init.latent_dim, head.expression_dim, head.bounds)
    cnn = ScreenCNN(cfg.cnn) if cfg.cnn.enabled else None
    if coarse is not None:
        coarse.requires_grad_(cfg.lr.coarse > 0)
    return AvatarNets(coarse if cfg.use_coarse else None, detail, cnn)


def make_optimizers(
    params: nn.ParameterDict, nets: AvatarNets, lr: LearningRates
) -> tuple[dict[str, torch.optim.Optimizer], torch.optim.Optimizer | None]:
    """One Adam per Gaussian entry (gsplat's strategies expect that) and one for the networks."""
    per_gaussian = {k: torch.optim.Adam([p], lr=getattr(lr, k), eps=1e-15) for k, p in params.items()}
    groups = [
        {"params": list(net.parameters()), "lr": rate}
        for net, rate in ((nets.detail, lr.detail), (nets.cnn, lr.cnn), (nets.coarse, lr.coarse))
        if net is not None and rate > 0
    ]
    return per_gaussian, torch.optim.Adam(groups) if groups else None


class Trainer:
    """One avatar's optimisation: parameters, networks, optimisers, densification state, data."""

    def __init__(self, cfg: TrainConfig, cache: FrameCache, split: Split, params: nn.ParameterDict, nets: AvatarNets,
                 scene_scale: float, hooks: Sequence[Hook] = ()) -> None:  # fmt: skip
        self.cfg = cfg
        self.cache = cache
        self.split = split
        self.params = params
        self.nets = nets
        self.hooks = list(hooks)
        self.device = params["means"].device
        self.optimizers, self.net_optimizer = make_optimizers(params, nets, cfg.lr)
        self.strategy = make_strategy(cfg.densify)
        self.strategy.check_sanity(params, self.optimizers)
        self.strategy_state = self.strategy.initialize_state(scene_scale=scene_scale)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.neighbors = knn_graph(params["means"], cfg.knn)
        self._graph_of = params["means"]  # the Parameter the graph was built from
        self.background = torch.tensor(cfg.background, dtype=torch.float32, device=self.device)
        self.tracking = {s: cache.tracking(s) for s in split.train_sequences}
        self.train_serials = tuple(s for s in split.train_serials if s in cache.serials)
        self.lpips = LPIPS(self.device) if cfg.loss.lpips > 0 else None
        if self.lpips is not None and not self.lpips.available:
            log.warning("%s; training without the LPIPS term", self.lpips.reason)
            self.lpips = None

    # ---- data -------------------------------------------------------------------------------------------
    def sample_batch(self) -> Batch:
        seq = self.split.train_sequences[int(self.rng.integers(len(self.split.train_sequences)))]
        t = int(self.rng.integers(self.cache.n_frames(seq)))
        n = min(self.cfg.cameras_per_step, len(self.train_serials))
        serials = [self.train_serials[i] for i in self.rng.choice(len(self.train_serials), n, replace=False)]
        return self.make_batch(seq, t, serials)

    def make_batch(self, seq: str, t: int, serials: Sequence[str]) -> Batch:
        rgb, alpha = (torch.from_numpy(a).to(self.device) for a in self.cache.frames(seq, t, serials))
        viewmats, Ks = stack_cameras([self.cache.cameras[s] for s in serials], device=self.device)
        tr = self.tracking[seq] if seq in self.tracking else self.cache.tracking(seq)
        return Batch(
            sequence=seq,
            t=t,
            z=torch.from_numpy(tr.expression[t]).float().to(self.device),
            head_pose=torch.from_numpy(tr.head_to_world(t)).float().to(self.device),
            viewmats=viewmats,
            Ks=Ks,
            rgb=composite(rgb, alpha, self.background),
            alpha=alpha,
        )

    # ---- one step ---------------------------------------------------------------------------------------
    def _set_learning_rates(self) -> None:
        frac = self.step / max(self.cfg.steps - 1, 1)
        self.optimizers["means"].param_groups[0]["lr"] = self.cfg.lr.means * self.cfg.lr.means_final**frac

    def rasterize(self, g: Gaussians, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """rgb (C, H, W, 3) on the background, alpha (C, H, W, 1) and the rasterizer's meta, in the batch's cameras."""
        return render_gaussians(g, batch.viewmats, batch.Ks, self.cache.width, self.cache.height, self.background,
                                self.nets.cnn)  # fmt: skip

    def train_step(self, batch: Batch) -> dict[str, float]:
        """Render, score, back-propagate, update, densify; returns the logged values of this step."""
        clock = [time.perf_counter()]
        tick = lambda: clock.append(time.perf_counter())  # noqa: E731
        g = deform(self.params, self.nets, batch.z, batch.head_pose)
        tick()
        rgb, alpha, meta = self.rasterize(g, batch)
        tick()
        self.strategy.step_pre_backward(self.params, self.optimizers, self.strategy_state, self.step, meta)
        lpips = self.lpips.differentiable if self.lpips and self.step >= self.cfg.loss.lpips_start else None
        terms = compute_losses(rgb, alpha, batch.rgb, batch.alpha, g, self.neighbors, self.cfg.loss, lpips)
        loss = total_loss(terms, self.cfg.loss)
        tick()
        loss.backward()
        tick()
        self._set_learning_rates()
        for opt in [*self.optimizers.values(), self.net_optimizer]:
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
        tick()
        self.strategy.step_post_backward(self.params, self.optimizers, self.strategy_state, self.step, meta)
        self.step += 1
        if self.params["means"] is not self._graph_of or self.step % self.cfg.graph_every == 0:
            self.neighbors = knn_graph(self.params["means"], self.cfg.knn)
            self._graph_of = self.params["means"]
        tick()
        with torch.no_grad():
            out = {"step": self.step, "loss": float(loss), "psnr": float(psnr(rgb.clamp(0, 1), batch.rgb).mean())}
        out |= {f"loss_{k}": float(v.detach()) for k, v in terms.items()}
        out["n_gaussians"] = len(self.params["means"])
        names = ("deform", "rasterize", "loss", "backward", "optimizer", "densify")
        out |= {f"time_{n}": b - a for n, a, b in zip(names, clock[:-1], clock[1:], strict=True)}
        return out

    def fit(self) -> Path:
        """Train until `cfg.steps`; a checkpoint is written at the end and on Ctrl-C or SIGTERM (`kill`, a
        batch scheduler's time limit)."""
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        try:
            while self.step < self.cfg.steps:
                out = self.train_step(self.sample_batch())
                for hook in self.hooks:
                    hook.after_step(self, out)
        except KeyboardInterrupt:
            path = self.save_checkpoint()
            log.warning("interrupted at step %d; saved %s (resume with --resume)", self.step, path)
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)
            for hook in self.hooks:
                hook.close(self)
        return self.save_checkpoint()

    # ---- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": to_dict(self.cfg),
            "params": {k: v.detach().clone() for k, v in self.params.items()},
            "nets": self.nets.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "net_optimizer": None if self.net_optimizer is None else self.net_optimizer.state_dict(),
            "strategy_state": self.strategy_state,
            "neighbors": self.neighbors,
            "rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint into a trainer built from the same config (parameters of any size)."""
        for k, v in state["params"].items():
            self.params[k] = nn.Parameter(v.to(self.device), requires_grad=True)
        self.nets.load_state_dict(state["nets"])
        self.optimizers, self.net_optimizer = make_optimizers(self.params, self.nets, self.cfg.lr)
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        if self.net_optimizer is not None:
            self.net_optimizer.load_state_dict(state["net_optimizer"])
        self.strategy_state = state["strategy_state"]
        self.neighbors = state["neighbors"].to(self.device)
        self._graph_of = self.params["means"]
        self.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = state["step"]

    def save_checkpoint(self) -> Path:
        """`checkpoints/step_XXXXXXX.pt`, written atomically; older ones beyond `keep_checkpoints` are removed."""
        folder = self.cfg.out / CHECKPOINT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{self.step:07d}.pt"
        tmp = folder / f".{path.name}.partial"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        for old in list_checkpoints(self.cfg.out)[: -self.cfg.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def list_checkpoints(run: Path) -> list[Path]:
    """The run's checkpoints, oldest first."""
    return sorted((Path(run) / CHECKPOINT_DIR).glob("step_*.pt"))


# ---- hooks ------------------------------------------------------------------------------------------------
class ProgressBar:
    """tqdm bar with step, loss, PSNR, number of Gaussians and it/s."""

    def __init__(self, start: int, total: int) -> None:
        self.bar = tqdm(initial=start, total=total, desc="train", unit="it", dynamic_ncols=True)

    def after_step(self, trainer: Trainer, out: dict[str, float]) -> None:
        self.bar.update(1)
        if out["step"] % 5 == 0:
            self.bar.set_postfix(loss=f"{out['loss']:.4f}", psnr=f"{out['psnr']:.2f}", G=out["n_gaussians"])

    def close(self, trainer: Trainer) -> None:
        self.bar.close()


class JsonlLog:
    """Every `every`-th step's values as one JSON line; averaging the last `every` steps smooths the curves.

    The curves PNG is redrawn after each validation and at the end, so it can be watched during training.
    """

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every = path, every
        self.window: list[dict[str, float]] = []
        self.last_time = time.perf_counter()
        path.parent.mkdir(parents=True, exist_ok=True)

    def after_step(self, trainer: Trainer, out: dict[str, float]) -> None:
        self.window.append(out)
        if out["step"] % self.every and out["step"] != trainer.cfg.steps:
            return
        now = time.perf_counter()
        keys = dict.fromkeys(k for w in self.window for k in w if k not in ("step", "n_gaussians"))
        rec = {k: float(np.mean([w[k] for w in self.window if k in w])) for k in keys}
        rec |= {
            "step": out["step"],
            "n_gaussians": out["n_gaussians"],
            "it_s": len(self.window) / (now - self.last_time),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if "val_psnr" in rec:  # the curves follow the run (a fraction of a second per validation)
            self._plot(trainer)
        self.window, self.last_time = [], now

    def close(self, trainer: Trainer) -> None:
        self._plot(trainer)

    def _plot(self, trainer: Trainer) -> None:
        if self.path.is_file():
            plot_training_curves(self.path, trainer.cfg.out / CURVES_FILE, title=str(trainer.cfg.out))


class Validation:
    """PSNR on a held-out camera every `every` steps, added to the step's values (`val_psnr`, and
    `val_psnr_heldout_seq` for a held-out sequence): the curve that says whether the avatar generalises.

    Views: the middle frame of the first training (and held-out) sequence in the first held-out camera
    that has frames (a training camera if none has).
    """

    def __init__(self, trainer: Trainer, every: int) -> None:
        self.every = every
        split, cache = trainer.split, trainer.cache
        held = [s for s in split.heldout_serials if s in cache.serials]
        serial = held[0] if held else trainer.train_serials[0]
        seqs = {"val_psnr": split.train_sequences[0]}
        if split.heldout_sequences and split.heldout_sequences[0] in cache.sequences:
            seqs["val_psnr_heldout_seq"] = split.heldout_sequences[0]
        self.batches = {name: trainer.make_batch(seq, cache.n_frames(seq) // 2, [serial]) for name, seq in seqs.items()}

    def after_step(self, trainer: Trainer, out: dict[str, float]) -> None:
        if not self.every or (out["step"] % self.every and out["step"] != trainer.cfg.steps):
            return
        with torch.no_grad():
            for name, b in self.batches.items():
                rgb, _, _ = trainer.rasterize(deform(trainer.params, trainer.nets, b.z, b.head_pose), b)
                out[name] = float(psnr(rgb.clamp(0, 1), b.rgb).mean())

    def close(self, trainer: Trainer) -> None:
        pass


class PeriodicCheckpoint:
    def __init__(self, every: int) -> None:
        self.every = every

    def after_step(self, trainer: Trainer, out: dict[str, float]) -> None:
        if out["step"] % self.every == 0 and out["step"] < trainer.cfg.steps:
            trainer.save_checkpoint()

    def close(self, trainer: Trainer) -> None:
        pass


# ---- building a run ---------------------------------------------------------------------------------------
def check_capture(cfg: TrainConfig, cap: Capture, head: HeadModel) -> Split:
    """The split, after checking that every sequence has tracking that fits the head model (before any work)."""
    split = make_split(cap.serials, cap.sequences, cfg.heldout_serials, cfg.heldout_sequences)
    for seq in split.train_sequences + split.heldout_sequences:
        if not cap.has_tracking(seq):
            raise FileNotFoundError(f"{cap.root}: sequence {seq} has no tracking ({cap.paths.tracking(seq)}); "
                                    "an avatar needs per-frame expression codes and head poses")  # fmt: skip
        dim = cap.tracking(seq).expression_dim
        if dim != head.expression_dim:
            raise ValueError(f"{cap.paths.tracking(seq)}: {dim}-d expression codes, but the head model "
                             f"({cap.paths.headmodel}) has {head.expression_dim}")  # fmt: skip
    if cfg.cameras_per_step < 1:
        raise ValueError(f"cameras_per_step must be at least 1, got {cfg.cameras_per_step}")
    if cfg.cnn.enabled and cfg.cnn.latent_channels > cfg.init.latent_dim:
        raise ValueError(f"the CNN renders {cfg.cnn.latent_channels} latent channels but latent_dim is "
                         f"{cfg.init.latent_dim}")  # fmt: skip
    return split


def _check_resume_config(cfg: TrainConfig, run: Path) -> None:
    saved = load_config(TrainConfig, run / CONFIG_FILE)
    a, b = (to_dict(dataclasses.replace(c, resume=False, override_config=False)) for c in (saved, cfg))
    if a == b:
        return

    def flat(d: dict, prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
        return out

    fa, fb = flat(a), flat(b)
    diff = [f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    if not cfg.override_config:
        raise ValueError(f"{run / CONFIG_FILE} differs from this command's config ({'; '.join(diff)}); pass the "
                         "run's --config preset again, or --override-config to resume with the new values")  # fmt: skip
    log.warning("resuming %s with a changed config: %s", run, "; ".join(diff))


def _truncate_log(path: Path, step: int) -> None:
    """Drop records written after the checkpoint a run resumes from."""
    if path.is_file():
        keep = [r for r in read_log(path) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in keep))


def coarse_field(cfg: TrainConfig, head: HeadModel, split: Split) -> ForwardField:
    """The run's distilled field, distilled now (on the training sequences' codes) when it has none."""
    path = cfg.out / DISTILL_FILE
    if not path.is_file():
        cap = Capture.open(cfg.capture)
        codes = torch.from_numpy(np.concatenate([cap.tracking(s).expression for s in split.train_sequences])).float()
        log.info("no %s yet: distilling the forward field from %d tracked codes", path, len(codes))
        g, report = distill(head, codes, cfg.distill)
        save_distilled(cfg.out, g, report)
        log.info("cycle residual median %.2e (%.2f%% of the largest displacement)",
                 report["cycle_residual"]["median"], 100 * report["median_relative"])  # fmt: skip
    g = load_distilled(path)
    if g.expression_dim != head.expression_dim:
        raise ValueError(
            f"{path} was distilled for {g.expression_dim}-d codes, the head model has {head.expression_dim}"
        )
    return g


def build_trainer(cfg: TrainConfig, hooks: Sequence[Hook] | None = None) -> Trainer:
    """Check the input, prepare data, distill if needed, initialise (or resume) and wire the trainer."""
    run = Path(cfg.out)
    if cfg.resume:
        if not list_checkpoints(run):
            raise FileNotFoundError(f"--resume: no checkpoint in {run / CHECKPOINT_DIR}")
        _check_resume_config(cfg, run)
    elif list_checkpoints(run):
        raise ValueError(f"{run} already holds a trained run; pass --resume to continue it or choose another --out")
    head = load_head_model(cfg.capture)
    split = check_capture(cfg, Capture.open(cfg.capture), head)
    cache = open_or_prepare(cfg.capture, height=cfg.height)
    run.mkdir(parents=True, exist_ok=True)
    if not cfg.resume:
        save_config(cfg, run / CONFIG_FILE)
        split.save(run / SPLIT_FILE)
        (run / LOG_FILE).unlink(missing_ok=True)
    device = torch.device(resolve_device(cfg.device))
    coarse = coarse_field(cfg, head, split) if cfg.use_coarse else None
    torch.manual_seed(cfg.seed)  # after distillation, which seeds itself: runs start alike with or without it
    params = init_params(head, cfg.init).to(device)
    nets = build_nets(cfg, head, coarse).to(device)
    scene_scale = float((head.bounds[1] - head.bounds[0]).norm() / 2)
    trainer = Trainer(cfg, cache, split, params, nets, scene_scale, hooks or [])
    if hooks is None:
        trainer.hooks = [Validation(trainer, cfg.val_every), JsonlLog(run / LOG_FILE, cfg.log_every),
                         PeriodicCheckpoint(cfg.checkpoint_every)]  # fmt: skip
    if cfg.resume:
        last = list_checkpoints(run)[-1]
        trainer.load_state_dict(torch.load(last, map_location=device, weights_only=False))
        _truncate_log(run / LOG_FILE, trainer.step)
        log.info("resumed %s at step %d", last, trainer.step)
    return trainer


def train(cfg: TrainConfig) -> Path:
    """`npga train`: returns the final checkpoint."""
    trainer = build_trainer(cfg)
    trainer.hooks.insert(0, ProgressBar(trainer.step, cfg.steps))
    path = trainer.fit()
    last = json.loads((cfg.out / LOG_FILE).read_text().splitlines()[-1]) if (cfg.out / LOG_FILE).is_file() else {}
    print(f"run: {cfg.out}\ncheckpoint: {path}\nlast PSNR (training views): {last.get('psnr', float('nan')):.2f} dB, "
          f"{trainer.params['means'].shape[0]} Gaussians")  # fmt: skip
    return path
