"""NPGA: Neural Parametric Gaussian Avatars.

Photoreal, animatable 3D Gaussian head avatars learned from multi-view video and driven by the
expression codes of a neural parametric head model. See README.md for the commands and
DESIGN.md (shared) for the architecture.
"""

__version__ = "0.1.0"
