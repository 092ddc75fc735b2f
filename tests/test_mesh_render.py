"""The mesh rasterizer that draws the synthetic capture (data_tools/mesh_render.py)."""

from __future__ import annotations

import numpy as np
import torch

from data_tools.mesh_render import rasterize_mesh
from data_tools.synth import rig_cameras
from npga.headmodel import SyntheticHead


def test_culling_back_faces_leaves_a_closed_mesh_s_image_unchanged():
    """The front of a closed mesh hides its back: culling changes no pixel. Turned inside out, its former back
    faces are what remains: the far side of the head is drawn."""
    head = SyntheticHead.from_seed(0)
    mesh = head.canonical_mesh(48)
    cam = rig_cameras(88, 128)[5]
    uv, depth = cam.project(mesh.vertices.double().numpy())
    verts = torch.from_numpy(np.concatenate([uv, depth[:, None]], 1))
    attrs = torch.cat([mesh.vertices.double(), verts[:, 2:]], 1)  # canonical point, camera depth
    full, full_mask = rasterize_mesh(verts, mesh.faces, attrs, cam.width, cam.height)
    culled, culled_mask = rasterize_mesh(verts, mesh.faces, attrs, cam.width, cam.height, cull_back=True)
    assert full_mask.sum() > 1000
    assert torch.equal(full_mask, culled_mask) and torch.equal(full, culled)
    far, far_mask = rasterize_mesh(verts, mesh.faces[:, [0, 2, 1]], attrs, cam.width, cam.height, cull_back=True)
    both = full_mask & far_mask
    assert both.sum() > 0.9 * full_mask.sum()
    assert (far[both][:, 3] - full[both][:, 3]).median() > 0.05  # metres behind the front
