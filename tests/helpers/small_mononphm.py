"""MonoNPHM experiments written from scratch in the official on-disk layout (random weights, never downloaded).

{experiment}/configs.yaml                              the training config (decoder.id / decoder.ex sections)
{experiment}/checkpoints/checkpoint_epoch_{N}.tar      torch pickle: id_decoder, ex_decoder, optimiser states
anchors_65.npy                                         template anchors (assets/ of the MonoNPHM repository)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from npga.headmodel.mononphm import ExpressionNetwork, IdentityNetwork, MonoNPHMDims

# The official anchor layout and neighbourhood, narrow MLPs so tests run in seconds.
SMALL = MonoNPHMDims(
    hidden_dim_geo=32, n_layers_geo=2, hidden_dim_app=32, n_layers_app=2, hidden_dim_ex=32, n_layers_ex=2
)


def symmetric_anchors(dims: MonoNPHMDims, radius: float = 0.36, seed: int = 0) -> np.ndarray:
    """(A, 3) anchors on a sphere: interleaved mirror pairs (x, y, z), (-x, y, z) first, then ones on x = 0."""
    rng = np.random.default_rng(seed)
    pairs = rng.normal(size=(dims.n_symm_pairs, 3))
    pairs[:, 0] = np.abs(pairs[:, 0]) + 0.2
    middle = rng.normal(size=(dims.n_anchors - 2 * dims.n_symm_pairs, 3))
    middle[:, 0] = 0.0
    mirror = pairs * np.array([-1.0, 1.0, 1.0])
    pts = np.concatenate([np.stack([pairs, mirror], 1).reshape(-1, 3), middle])
    return (radius * pts / np.linalg.norm(pts, axis=1, keepdims=True)).astype(np.float32)


def random_codes(dims: MonoNPHMDims, seed: int = 0, scale: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple((scale * rng.normal(size=dims.code_dim)).astype(np.float32) for _ in range(2))  # type: ignore[return-value]


def random_networks(dims: MonoNPHMDims, seed: int = 0) -> tuple[IdentityNetwork, ExpressionNetwork]:
    torch.manual_seed(seed)
    return IdentityNetwork(dims), ExpressionNetwork(dims)


def write_experiment(
    root: Path,
    dims: MonoNPHMDims = SMALL,
    nets: tuple[IdentityNetwork, ExpressionNetwork] | None = None,
    epoch: int = 7,
    anchors: np.ndarray | None = None,
) -> tuple[Path, Path]:
    """(experiment folder, anchors file): configs.yaml, a checkpoint in the official layout, the template anchors."""
    identity, expression = nets if nets is not None else random_networks(dims)
    root.mkdir(parents=True, exist_ok=True)
    cfg = dims.to_config()
    cfg["training"] = {"batch_size": 16, "lr": 0.0005}
    (root / "configs.yaml").write_text(yaml.safe_dump(cfg))
    (root / "checkpoints").mkdir(exist_ok=True)
    opt = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
        "param_groups": [{"lr": 5e-4, "params": [0]}],
    }
    state = {
        "epoch": epoch,
        "id_decoder": identity.state_dict(),
        "ex_decoder": expression.state_dict(),
        "optimizer": opt,
        "latent_codes": {"embedding.geo.weight": torch.zeros(3, dims.code_dim)},
        "optimizer_lat": (opt,),  # the official trainer stores these as 1-tuples (a trailing comma)
    }
    torch.save(state, root / "checkpoints" / f"checkpoint_epoch_{epoch}.tar")
    anchors_file = root / f"anchors_{dims.n_anchors}.npy"
    np.save(anchors_file, symmetric_anchors(dims) if anchors is None else anchors)
    return root, anchors_file


def write_tracking(
    root: Path,
    seq: str,
    z_exp: np.ndarray,
    rot: np.ndarray,
    trans: np.ndarray,
    scale: np.ndarray,
    z_geo: np.ndarray,
    z_app: np.ndarray,
    stage: int,
) -> Path:
    """MonoNPHM's tracker output for one sequence (photometric_tracking/tracking.py, rec_and_save): per frame
    rot (1, 3, 3), trans (1, 3), scale (1,); stage 2: identity once and every frame's codes in each frame folder,
    stage 1: everything per frame. Poses are world -> model: x_model = scale x_world rot^T + trans."""
    folder = root / f"stage{stage}" / seq
    for t in range(len(z_exp)):
        f = folder / f"{t:05d}"
        f.mkdir(parents=True)
        np.save(f / "rot.npy", rot[t][None].astype(np.float32))
        np.save(f / "trans.npy", trans[t][None].astype(np.float32))
        np.save(f / "scale.npy", np.array([scale[t]], dtype=np.float32))
        np.save(f / "z_exp.npy", (z_exp if stage == 2 else z_exp[t][None]).astype(np.float32))
        if stage == 1:
            np.save(f / "z_geo.npy", z_geo[None, None])
            np.save(f / "z_app.npy", z_app[None, None])
    if stage == 2:
        np.save(folder / "z_geo.npy", z_geo[None, None])
        np.save(folder / "z_app.npy", z_app[None, None])
    return folder
