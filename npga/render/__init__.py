"""Differentiable Gaussian rasterization: gsplat on CUDA, a PyTorch reference on the CPU."""

from npga.render.rasterize import rasterize
from npga.render.validate import RENDER_MODES

__all__ = ["RENDER_MODES", "rasterize"]
