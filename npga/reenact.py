"""Driving an avatar with tracked codes and head poses: self- and cross-reenactment.

Avatars of one head model share its expression space and its canonical head frame, so codes and head poses
tracked with avatar A (or by an external tracker) drive avatar B as they are. What a tracking file may add
beside our layout: the driver video's camera (`intrinsics`, `image_size`, `world_2_cam`, written by
`npga track`) and the head model's type (`head_model`); without a camera the avatar's own frontal rig camera
films the reenactment.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from npga.avatar.model import Avatar
from npga.cameras import Camera, frontal_camera, rig_up
from npga.geometry import even_side


def _extras(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: np.asarray(npz[k]) for k in ("intrinsics", "image_size", "world_2_cam", "head_model") if k in npz}


def check_head_model(path: str | os.PathLike, avatar: Avatar, avatar_name: str) -> None:
    """Refuse a tracking file that names another head model than the avatar's (files without a name pass)."""
    extras = _extras(path)
    if "head_model" not in extras:
        return
    theirs, ours = str(extras["head_model"]), str(avatar.head_model.get("type", ""))
    if theirs != ours:
        raise ValueError(f"{path}: codes of the {theirs!r} head model; {avatar_name} uses the {ours!r} head model")


def driver_camera(path: str | os.PathLike) -> Camera | None:
    """The camera of the video a tracking file was fitted to (its poses are in that camera's world), if it says."""
    extras = _extras(path)
    if "intrinsics" not in extras or "image_size" not in extras:
        return None
    width, height = (int(v) for v in extras["image_size"])
    w2c = extras.get("world_2_cam", np.eye(4))
    return Camera(K=extras["intrinsics"], world_2_cam=w2c, width=width, height=height, serial="driver")


def even_size(camera: Camera, height: int | None) -> Camera:
    """The camera at `height` (default: its own), both sides rounded down to even numbers for H.264."""
    h = camera.height if height is None else height
    w = camera.width * h / camera.height
    return camera.resized(even_side(int(w)), even_side(h))


def head_centers(avatar: Avatar, poses: torch.Tensor) -> np.ndarray:
    """(T, 3) world position of the avatar's canonical centroid under each head pose (T, 4, 4)."""
    c = avatar.params["means"].detach().mean(0).cpu().double()  # (3,)
    p = poses.detach().cpu().double()
    return (p[:, :3, :3] @ c + p[:, :3, 3]).numpy()


def view_up(avatar: Avatar, driver: Camera | None) -> np.ndarray:
    """(3,) the world's up: the driver camera's (its image's up), else the avatar's rig's."""
    return rig_up([driver] if driver is not None else list(avatar.cameras.values()))


def reenactment_camera(avatar: Avatar, driver: Camera | None, height: int | None) -> Camera:
    """The camera the reenactment is filmed with: the driver's, else the avatar's frontal one."""
    return even_size(driver if driver is not None else frontal_camera(avatar.cameras), height)
