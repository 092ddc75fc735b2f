"""Training an avatar: `TrainConfig`, the `Trainer` (one step, the loop, checkpoints), hooks, and `build_trainer`."""

from npga.train.batches import Batch, BatchSource
from npga.train.build import build_trainer
from npga.train.config import LearningRates, TrainConfig, avatar_config, with_steps
from npga.train.hooks import JsonlLog, PeriodicCheckpoint, ProgressBar, Validation
from npga.train.trainer import Hook, Trainer, read_checkpoint

__all__ = [
    "Batch",
    "BatchSource",
    "Hook",
    "JsonlLog",
    "LearningRates",
    "PeriodicCheckpoint",
    "ProgressBar",
    "TrainConfig",
    "Trainer",
    "Validation",
    "avatar_config",
    "build_trainer",
    "read_checkpoint",
    "with_steps",
]
