"""`TrainConfig`: everything one training run is made of, and the avatar architecture it implies."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Annotated, Literal

from npga import nersemble
from npga.avatar import CNNConfig, DetailConfig, InitConfig
from npga.avatar.config import AvatarConfig
from npga.avatar.densify import DensifyConfig
from npga.avatar.mouth import MouthConfig
from npga.config import AtLeast1, DeviceName, Fraction, OutFolder, Range
from npga.deform.distill import DistillConfig
from npga.headmodel import HeadModel
from npga.losses import LossWeights
from npga.train.refine import REFINE_RATES, RefineConfig

log = logging.getLogger(__name__)


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
    mouth: float = 2e-2
    """The mouth network (`--detail.mouth.enabled`): it sees a few hundred Gaussians in a third of the frames, and
    at the detail MLP's rate it had not converged in 1,000 steps (benchmarks/RESULTS.md, The open mouth)."""
    mouth_final: Annotated[float, Range(0, 1, above=True)] = 0.05
    """Factor the mouth network's rate decays to (exponentially) by the last step: large steps while the mouth is
    first learned, small ones once the Gaussians under it settle (2e-2 -> 1e-3: held-out mouth +0.5 dB over 3 seeds
    against a constant 3e-3, each seed higher, though neighbouring schedules scored lower on one seed:
    benchmarks/RESULTS.md, The open mouth)."""
    mouth_phase: float = 1e-3
    """The mouth network in the steps after `steps` (`mouth_steps`), where it learns alone: the rate the joint
    steps' schedule ends at (3e-3: the held-out mouth -0.6 dB on one seed of three; benchmarks/RESULTS.md, The
    open mouth)."""
    coarse: float = 0.0
    """Distilled coarse field: 0 keeps it frozen, > 0 fine-tunes it."""
    cnn: float = 1e-3
    """Screen-space CNN."""


@dataclass(frozen=True)
class TrainConfig:
    capture: Path = Path("data/demo")
    """Participant folder (`npga synth` output or a NeRSemble participant with tracking)."""
    out: OutFolder = Path("runs/demo")
    """Run folder: config, split, distilled field, checkpoints, logs, the avatar file (npga/runs.py)."""
    resume: bool = False
    """Continue the run in `out` from its last checkpoint."""
    override_config: bool = False
    """Allow resuming with a config that differs from the run's."""
    steps: AtLeast1 = 3000
    """Optimisation steps of the whole avatar (of one frame each: see `frames_per_step`)."""
    mouth_steps: Annotated[int, Range(0)] = 0
    """Steps after `steps` that train the mouth network alone (`--detail.mouth.enabled`), each on a window around
    the mouth's projection (npga/train/mouth_phase.py): it learns the teeth once the Gaussians under it stop
    moving. Every other part stays as the joint steps left it."""
    seed: int = 0
    """Seeds initialisation, batch sampling and densification."""
    device: DeviceName = "auto"
    height: AtLeast1 | None = 256
    """Frame-cache image height (capped at the videos' height); None: the videos' size."""
    cameras_per_step: AtLeast1 = 1
    """Training cameras rendered per step (all from the same frame)."""
    frames_per_step: AtLeast1 = 1
    """Frames (each seen by `cameras_per_step` cameras) per optimisation step, their losses averaged: K frames
    make one step along the mean of their gradients. The config's step counts (`steps`, the densification
    window, `refine.start`) are for one frame per step; K frames per step make steps / K steps on the same
    schedule (`with_steps`), seeing as many frames. Under torchrun the K frames are split between the ranks
    (docs/distributed.md)."""
    lr_batch_scaling: Literal["none", "sqrt"] = "none"
    """How the learning rates follow `frames_per_step` K: none keeps them, sqrt multiplies every one by sqrt(K)
    (the rule gsplat's batched training uses for Adam)."""
    frames_on_device_gb: float = 4.0
    """Largest size (GB, as uint8) of the training split's frames kept on the training device; a larger split
    is read from the frame cache for each batch (through pinned memory on CUDA). 0: always read."""
    heldout_serials: tuple[str, ...] = nersemble.HOLDOUT_SERIALS
    """Cameras never trained on (NeRSemble's NVS hold-out by default)."""
    heldout_sequences: tuple[str, ...] = (nersemble.HELDOUT_SEQUENCE,)
    """Sequences never trained on (new expressions for evaluation)."""
    background: tuple[Fraction, Fraction, Fraction] = (1.0, 1.0, 1.0)
    """Background colour that renders and ground truth are composited on."""
    use_coarse: bool = True
    """Move Gaussians with the distilled forward field."""
    use_detail: bool = True
    """Add the detail MLP's residuals."""
    refine_tracking: bool = False
    """Refine each training frame's head pose and expression code with the avatar (settings under `refine`);
    the avatar file then holds the refined tracking, which it plays back, beside the capture's."""
    refit_tracking: bool = False
    """After the last step, fit every training frame's head pose and code anew to all its training cameras at
    once, the avatar frozen (`npga track --capture`'s fit, from the tracking training left): what refinement in
    training leaves of the capture's slow drift (npga/train/refit.py). The fits replace the played tracking in
    the avatar file; each training frame costs what tracking a frame of a new sequence does."""
    tracking: Literal["capture", "true"] = "capture"
    """Which tracking drives training: the capture's (as any real capture has), or `true` for a synthetic
    capture's `true_tracking.npz`, the codes and poses that rendered its frames (an oracle for benchmarks)."""
    detail_code_noise: float = 0.0
    """Standard deviation of Gaussian noise added, per step, to the code the detail network sees (the coarse field
    gets the tracked code): with a few dozen frames per sequence each frame's code is unique, and a network fed
    exact codes can learn each training frame's tracking error and gaze as a function of its code, which does
    not carry over to new expressions. 0: exact codes."""
    knn: AtLeast1 = 8
    """Neighbours per Gaussian in the Laplacian graph."""
    graph_every: int = 100
    """Steps between rebuilds of the kNN graph (it is also rebuilt after every densification); 0: only then."""
    log_every: AtLeast1 = 10
    """Steps between JSONL records."""
    val_every: int = 100
    """Steps between validation renders (PSNR on a held-out camera, logged as val_psnr); 0: never."""
    checkpoint_every: AtLeast1 = 500
    """Steps between checkpoints and avatar files (both are always written at the end and on Ctrl-C)."""
    keep_checkpoints: AtLeast1 = 2
    """Checkpoints kept in the run folder (the newest ones)."""
    max_nonfinite_steps: int = 20
    """A step whose loss or gradients are not finite (NaN, inf) is skipped, changing nothing, and logged; this many
    in a row stop training with an error. 0: no check (and no per-step copy of the optimised state it needs)."""
    init: InitConfig = field(default_factory=InitConfig)
    detail: DetailConfig = field(default_factory=DetailConfig)
    cnn: CNNConfig = field(default_factory=CNNConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Used when the run folder has no distill.pt yet."""
    lr: LearningRates = field(default_factory=LearningRates)
    loss: LossWeights = field(default_factory=LossWeights)
    densify: DensifyConfig = field(default_factory=DensifyConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    """Used with --refine-tracking."""

    @property
    def total_steps(self) -> int:
        """The joint steps and the mouth phase's."""
        return self.steps + self.mouth_steps


def with_steps(cfg: TrainConfig, steps: int) -> TrainConfig:
    """The same schedule over `steps` steps: the densification window and interval, the step from which the
    tracking is refined and the mouth phase scale with the step count, as the learning-rate decays already do,
    so a longer run densifies, refines and learns the mouth in the same stages of training."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    d, f = cfg.densify, steps / cfg.steps
    densify = replace(
        d,
        refine_start=round(d.refine_start * f),
        refine_every=max(1, round(d.refine_every * f)),
        refine_stop=round(d.refine_stop * f),
    )
    refine = replace(cfg.refine, start=round(cfg.refine.start * f))
    return replace(cfg, steps=steps, mouth_steps=round(cfg.mouth_steps * f), densify=densify, refine=refine)


def mouth_config(mouth: MouthConfig, head: HeadModel) -> MouthConfig:
    """The mouth network's settings with its region: as given, or the head model's (`mouth_region`); disabled,
    with a warning, when neither says where the mouth is."""
    if not mouth.enabled or (mouth.center is not None and mouth.radii is not None):
        return mouth
    region = head.mouth_region()
    if region is None:
        log.warning(
            "the head model (%s) does not say where the mouth is: training without the mouth network "
            "(give --detail.mouth.center X Y Z and --detail.mouth.radii RX RY RZ in canonical coordinates)",
            type(head).__name__,
        )
        return replace(mouth, enabled=False)
    return replace(mouth, center=mouth.center or region.center, radii=mouth.radii or region.radii)


def per_step(cfg: TrainConfig) -> TrainConfig:
    """The config a trainer follows, step by step: with `frames_per_step` K, steps / K steps (rounded up) on the
    same schedule (`with_steps`) and, with `lr_batch_scaling: sqrt`, every learning rate times sqrt(K) (the decay
    factors stay). K = 1: `cfg` itself."""
    k = cfg.frames_per_step
    if k == 1:
        return cfg
    cfg = with_steps(cfg, -(-cfg.steps // k))
    if cfg.lr_batch_scaling == "none":
        return cfg
    f = math.sqrt(k)
    rates = [n.name for n in fields(cfg.lr) if not n.name.endswith("_final")]
    lr = replace(cfg.lr, **{n: getattr(cfg.lr, n) * f for n in rates})
    refine = replace(cfg.refine, **{n: getattr(cfg.refine, n) * f for n in REFINE_RATES})
    return replace(cfg, lr=lr, refine=refine)


def avatar_config(cfg: TrainConfig, head: HeadModel) -> AvatarConfig:
    """The architecture a training config asks for, for this head model."""
    lo, hi = (tuple(float(v) for v in corner) for corner in head.bounds)
    detail = replace(cfg.detail, mouth=mouth_config(cfg.detail.mouth, head)) if cfg.use_detail else None
    return AvatarConfig(
        expression_dim=head.expression_dim,
        bounds=(lo, hi),  # type: ignore[arg-type]
        latent_dim=cfg.init.latent_dim,
        coarse=cfg.distill.field if cfg.use_coarse else None,
        detail=detail,
        cnn=cfg.cnn if cfg.cnn.enabled else None,
        background=cfg.background,
    )
