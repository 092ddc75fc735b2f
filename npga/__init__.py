"""NPGA: Neural Parametric Gaussian Avatars.

Photoreal, animatable 3D Gaussian head avatars learned from multi-view video and driven by the
expression codes of a neural parametric head model. See README.md for the commands and
docs/architecture.md for the layers.
"""

__version__ = "0.1.0"
