"""Parametric head models: the interface, and the synthetic head that needs no download."""

from npga.headmodel.base import HeadModel, Mesh
from npga.headmodel.synthetic import EXPRESSIONS, HeadIdentity, SyntheticHead, load_head_model

__all__ = ["EXPRESSIONS", "HeadIdentity", "HeadModel", "Mesh", "SyntheticHead", "load_head_model"]
