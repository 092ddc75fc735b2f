"""The animatable avatar: canonical Gaussians with latent features, dynamics networks, deformation, regularisers."""

from npga.avatar.cnn import CNNConfig, ScreenCNN
from npga.avatar.deform import AvatarNets, Gaussians, apply_head_pose, deform, express, pose
from npga.avatar.dynamics import DetailConfig, DetailMLP
from npga.avatar.graph import knn_graph, laplacian
from npga.avatar.init import InitConfig, init_params
from npga.avatar.render import render_gaussians

__all__ = [
    "AvatarNets",
    "CNNConfig",
    "DetailConfig",
    "DetailMLP",
    "Gaussians",
    "InitConfig",
    "ScreenCNN",
    "apply_head_pose",
    "deform",
    "express",
    "init_params",
    "knn_graph",
    "laplacian",
    "pose",
    "render_gaussians",
]
