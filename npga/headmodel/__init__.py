"""Parametric head models: the interface, the registry by description `type`, the synthetic head and FLAME."""

from npga.headmodel.base import HeadModel, Mesh
from npga.headmodel.flame import FlameHead, load_flame_model
from npga.headmodel.mononphm import MonoNPHM
from npga.headmodel.registry import HEAD_MODEL_TYPES, head_model_from_description, load_head_model, save_description
from npga.headmodel.synthetic import EXPRESSIONS, HeadIdentity, SyntheticHead

__all__ = [
    "EXPRESSIONS",
    "FlameHead",
    "HEAD_MODEL_TYPES",
    "HeadIdentity",
    "HeadModel",
    "Mesh",
    "MonoNPHM",
    "SyntheticHead",
    "head_model_from_description",
    "load_flame_model",
    "load_head_model",
    "save_description",
]
