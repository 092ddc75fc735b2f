"""The forward deformation field and its distillation from a head model's backward field."""

from npga.deform.distill import DistillConfig, distill, load_distilled, save_distilled
from npga.deform.encoding import PositionalEncoding
from npga.deform.field import FieldConfig, ForwardField

__all__ = [
    "DistillConfig",
    "FieldConfig",
    "ForwardField",
    "PositionalEncoding",
    "distill",
    "load_distilled",
    "save_distilled",
]
