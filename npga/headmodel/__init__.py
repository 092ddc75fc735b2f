"""Parametric head models: the interface, the registry by description `type`, and the synthetic head."""

from npga.headmodel.base import HeadModel, Mesh
from npga.headmodel.registry import HEAD_MODEL_TYPES, head_model_from_description, load_head_model, save_description
from npga.headmodel.synthetic import EXPRESSIONS, HeadIdentity, SyntheticHead

__all__ = [
    "EXPRESSIONS",
    "HEAD_MODEL_TYPES",
    "HeadIdentity",
    "HeadModel",
    "Mesh",
    "SyntheticHead",
    "head_model_from_description",
    "load_head_model",
    "save_description",
]
