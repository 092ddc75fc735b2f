"""Differentiable Gaussian rasterization: gsplat on CUDA, a PyTorch reference on the CPU."""

from npga.render.rasterize import RENDER_MODES, rasterize

__all__ = ["RENDER_MODES", "rasterize"]
