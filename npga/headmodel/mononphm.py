"""MonoNPHM (Giebenhain et al., CVPR 2024) as a head model: its two networks, loaded from its released checkpoint.

Our own implementation of the official architecture (github.com/SimonGiebenhain/MonoNPHM, MIT), written so that
`state_dict` keys and shapes equal the official ones: a checkpoint `{experiment}/checkpoints/checkpoint_epoch_{N}.tar`
(a torch pickle with `id_decoder` and `ex_decoder` state dicts) loads with `strict=True` and `weights_only=True`, so
nothing of the original project has to be installed and no code from a downloaded file ever runs.

- Identity network (canonical SDF and colour): 65 anchors (template + an MLP of the global geometry code); each query
  sees its 12 nearest anchors and one global node. Every neighbour runs a local MLP on [global code, its local code,
  delta = query - anchor]; the 30 mirror-symmetric anchor pairs share one MLP (the second of a pair sees delta-x
  negated), so there are 65 - 30 + 1 = 36 MLPs. The colour MLP of a neighbour is fed by a 16-d bottleneck of its
  geometry MLP. Neighbours are blended by a Gaussian kernel whose width follows the 8th-nearest anchor distance.
- Expression network (backward deformation): an MLP on [posed xyz, a 16-d compression of identity code and anchors,
  expression code] predicts 3 offsets and 2 hyper-coordinates; canonical point = [xyz + offsets, hyper].

MonoNPHM's canonical space therefore has 3 + n_hyper dimensions. Gaussians live in 3-D: `backward` returns the xyz
part (NPGA's cycle loss, too, can only supervise xyz), `sdf` and `color` take (N, 3) points at hyper = 0 (the neutral
face) or full (N, 3 + n_hyper) points. Colours come out of the network in [-1, 1] and are mapped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from npga.headmodel.base import Mesh
from npga.headmodel.surface import zero_level_mesh
from npga.io.untrusted import load_npy, load_torch

BLEND_WIDTH_NEIGHBORS = 8  # the blend width follows the distance to this many nearest anchors (fixed in MonoNPHM)
GLOBAL_NODE_DISTANCE = 0.75  # blend distance given to the global node, whatever the query's position
COMMUNICATION_DIM = 16  # width of the geometry -> colour bottleneck
ANCHOR_MLP_WIDTH = 64  # hidden width of the MLP that offsets the template anchors
# Box of MonoNPHM's canonical head, in its units (the official tracking's reconstruction volume).
DEFAULT_BOUNDS = ((-0.55, -0.5, -0.95), (0.55, 0.75, 0.4))
SDF_CHUNK = 32768  # query points per network call: memory grows with chunk x 13 neighbours x hidden width


@dataclass(frozen=True)
class MonoNPHMDims:
    """Dimensions of both networks, read from an experiment's `configs.yaml` (defaults: the official config)."""

    lat_dim_glob: int = 64
    """Global part of the geometry and of the appearance code."""
    lat_dim_loc: int = 32
    """Local code per anchor (and for the global node), the same for geometry and appearance."""
    n_anchors: int = 65
    """Anchors of the template (`assets/anchors_{n}.npy`)."""
    n_symm_pairs: int = 30
    """Mirror-symmetric anchor pairs (the first 2 * n_symm_pairs anchors, interleaved) sharing one local MLP."""
    n_neighbors: int = 12
    """Nearest anchors that each query point sees (plus the global node)."""
    blend_std: float = 3.75
    """The blend kernel's sigma is the 8th-nearest anchor distance divided by this."""
    hidden_dim_geo: int = 200
    """Width of each local geometry MLP."""
    n_layers_geo: int = 4
    """Hidden layers of each local geometry MLP."""
    hidden_dim_app: int = 200
    """Width of each local colour MLP."""
    n_layers_app: int = 4
    """Hidden layers of each local colour MLP."""
    lat_dim_ex: int = 100
    """Expression code length."""
    lat_dim_id: int = 16
    """Compressed identity seen by the expression network."""
    hidden_dim_ex: int = 400
    """Width of the expression network."""
    n_layers_ex: int = 6
    """Hidden layers of the expression network (skip connection into layer n_layers_ex // 2)."""
    n_hyper: int = 2
    """Hyper-coordinates the expression network adds to the canonical space."""

    def __post_init__(self) -> None:
        if self.n_anchors < 2 * self.n_symm_pairs or self.n_neighbors > self.n_anchors:
            raise ValueError(f"inconsistent MonoNPHM dimensions: {self}")

    @property
    def code_dim(self) -> int:
        """Length of z_geo and of z_app: a global code plus one local code per anchor and for the global node."""
        return self.lat_dim_glob + self.lat_dim_loc * (self.n_anchors + 1)

    @property
    def n_mlps(self) -> int:
        """Local MLPs: one per symmetric pair, one per other anchor, one for the global node."""
        return self.n_anchors - self.n_symm_pairs + 1

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], source: str = "configs.yaml") -> MonoNPHMDims:
        """From a MonoNPHM training config (the `decoder.id` and `decoder.ex` sections)."""
        try:
            dec = cfg.get("decoder", {})
            idc, exc = dec.get("id", {}), dec.get("ex", {})
            gnn = idc.get("gnn", {})
        except AttributeError as e:
            raise ValueError(f"{source}: not a MonoNPHM training config (no 'decoder' mapping)") from e
        if idc.get("lat_dim_loc_geo", 32) != idc.get("lat_dim_loc_app", 32):
            raise ValueError(f"{source}: lat_dim_loc_geo and lat_dim_loc_app differ; MonoNPHM splits one local code")
        if exc.get("mode", "compress") != "compress":
            raise ValueError(f"{source}: decoder.ex.mode {exc.get('mode')!r} is not supported (only 'compress')")
        values = {
            "lat_dim_glob": idc.get("lat_dim_glob"),
            "lat_dim_loc": idc.get("lat_dim_loc_geo"),
            "n_anchors": idc.get("nloc"),
            "n_symm_pairs": idc.get("nsymm_pairs"),
            "n_neighbors": idc.get("nneigh"),
            "blend_std": idc.get("blend_std"),
            "hidden_dim_geo": gnn.get("hidden_dim_geo"),
            "n_layers_geo": gnn.get("nlayers_geo"),
            "hidden_dim_app": gnn.get("hidden_dim_app"),
            "n_layers_app": gnn.get("nlayers_app"),
            "lat_dim_ex": exc.get("lat_dim_ex"),
            "lat_dim_id": exc.get("lat_dim_id"),
            "hidden_dim_ex": exc.get("hidden_dim"),
            "n_layers_ex": exc.get("nlayers"),
            "n_hyper": exc.get("nhyper"),
        }
        types = {f.name: float if f.type == "float" else int for f in fields(cls)}
        try:
            return cls(**{k: types[k](v) for k, v in values.items() if v is not None})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: bad MonoNPHM dimensions ({e})") from e

    def to_config(self) -> dict[str, Any]:
        """The `configs.yaml` layout of these dimensions (what `from_config` reads)."""
        return {
            "decoder": {
                "id": {
                    "lat_dim_glob": self.lat_dim_glob,
                    "lat_dim_loc_geo": self.lat_dim_loc,
                    "lat_dim_loc_app": self.lat_dim_loc,
                    "nloc": self.n_anchors,
                    "nsymm_pairs": self.n_symm_pairs,
                    "nneigh": self.n_neighbors,
                    "blend_std": self.blend_std,
                    "gnn": {
                        "hidden_dim_geo": self.hidden_dim_geo,
                        "nlayers_geo": self.n_layers_geo,
                        "hidden_dim_app": self.hidden_dim_app,
                        "nlayers_app": self.n_layers_app,
                    },
                },
                "ex": {
                    "mode": "compress",
                    "lat_dim_ex": self.lat_dim_ex,
                    "lat_dim_id": self.lat_dim_id,
                    "hidden_dim": self.hidden_dim_ex,
                    "nlayers": self.n_layers_ex,
                    "nhyper": self.n_hyper,
                },
            }
        }


# ---- the pure parts: neighbourhoods and blending ------------------------------------------------------------------


def anchor_types(dims: MonoNPHMDims) -> torch.Tensor:
    """(n_anchors + 1,) index of the local MLP of each anchor and of the global node (last)."""
    pairs = torch.arange(dims.n_symm_pairs).repeat_interleave(2)
    return torch.cat([pairs, torch.arange(dims.n_symm_pairs, dims.n_mlps)])


def mirrored_anchors(dims: MonoNPHMDims) -> torch.Tensor:
    """(n_anchors + 1,) bool: the second anchor of each symmetric pair, whose MLP sees delta-x negated."""
    mirrored = torch.zeros(dims.n_anchors + 1, dtype=torch.bool)
    mirrored[1 : 2 * dims.n_symm_pairs : 2] = True
    return mirrored


def nearest_anchors(x: torch.Tensor, anchors: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) indices of the k anchors (A, 3) nearest to each point x (N, 3), nearest first."""
    return torch.cdist(x.detach(), anchors.detach()).topk(k, dim=-1, largest=False, sorted=True).indices


def blend_weights(distances: torch.Tensor, blend_std: float) -> torch.Tensor:
    """(N, K + 1) weights of each point's neighbours from their distances (N, K + 1), nearest anchors first and
    the global node last: a Gaussian whose sigma is the 8th-nearest anchor distance / blend_std, normalised."""
    sigma = distances[:, :BLEND_WIDTH_NEIGHBORS].amax(-1, keepdim=True) / blend_std  # (N, 1)
    w = torch.exp(-0.5 * (distances / sigma).square())
    return w / (w.sum(-1, keepdim=True) + 1e-8)


# ---- the networks, with the official module names --------------------------------------------------------------


def _mlp(d_in: int, hidden: int, n_hidden: int, d_out: int, activation: type[nn.Module]) -> nn.Sequential:
    dims = [d_in] + [hidden] * n_hidden + [d_out]
    layers: list[nn.Module] = []
    for k in range(len(dims) - 1):
        layers.append(nn.Linear(dims[k], dims[k + 1]))
        if k < len(dims) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class _Member(nn.Module):
    """One local MLP (official key prefix `layers.{i}`: linear layers at even i, activations between)."""

    def __init__(self, d_in: int, hidden: int, n_hidden: int, d_out: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.layers = _mlp(d_in, hidden, n_hidden, d_out, activation)


class _Ensemble(nn.Module):
    """The local MLPs, one per type. A member's first layer sees [node codes, per-edge input]; the codes part is
    the same for every edge to a node, so it is computed once per node (`node_response`) instead of once per edge."""

    def __init__(self, n: int, d_in: int, hidden: int, n_hidden: int, d_out: int, activation: type[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Member(d_in, hidden, n_hidden, d_out, activation) for _ in range(n))

    def node_response(self, codes: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        """(M, hidden) first-layer response (with bias) of each node's MLP (types (M,)) to its codes (M, C)."""
        w = torch.stack([m.layers[0].weight[:, : codes.shape[1]] for m in self.layers])  # (T, hidden, C)
        b = torch.stack([m.layers[0].bias for m in self.layers])  # (T, hidden)
        return torch.einsum("mhc,mc->mh", w[types], codes) + b[types]

    def forward(
        self, x: torch.Tensor, counts: list[int], response: torch.Tensor, tap: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs (E, d_out) of edges sorted by type (`counts[t]` edges of type t), from their per-edge inputs
        x (E, D) and their nodes' `response` (E, hidden); with `tap`, also the pre-activation of the last hidden
        layer (E, hidden) (the colour branch's input), else None."""
        outs, taps = [], []
        groups = zip(self.layers, torch.split(x, counts), torch.split(response, counts), strict=True)
        for member, rows, node_part in groups:  # split, not sliced: a slice's gradient is a full-size tensor
            if len(rows) == 0:
                continue
            first, rest = member.layers[0], member.layers[1:]
            h = nn.functional.linear(rows, first.weight[:, -x.shape[1] :]) + node_part
            if tap:
                h = rest[:-2](h)
                taps.append(h)
                outs.append(rest[-2:](h))
            else:
                outs.append(rest(h))
        return torch.cat(outs), (torch.cat(taps) if tap else None)


def _softplus100() -> nn.Module:
    return nn.Softplus(beta=100)


class IdentityNetwork(nn.Module):
    """MonoNPHM's canonical SDF and colour field; module names follow the official `NPHM` class."""

    def __init__(self, dims: MonoNPHMDims) -> None:
        super().__init__()
        self.dims = dims
        d_pos = 3 + dims.n_hyper
        self.deepSDFensemble = _Ensemble(
            dims.n_mlps,
            dims.lat_dim_glob + dims.lat_dim_loc + d_pos,
            dims.hidden_dim_geo,
            dims.n_layers_geo,
            1,
            _softplus100,
        )
        self.communcation_bottleneck1 = nn.Linear(dims.hidden_dim_geo, COMMUNICATION_DIM)  # sic: the official name
        self.communcation_bottleneck2 = nn.Linear(COMMUNICATION_DIM, COMMUNICATION_DIM)
        self.aggr_app = _Ensemble(
            dims.n_mlps,
            dims.lat_dim_glob + dims.lat_dim_loc + COMMUNICATION_DIM,
            dims.hidden_dim_app,
            dims.n_layers_app,
            3,
            nn.ReLU,
        )
        self.mlp_pos = _mlp(dims.lat_dim_glob, ANCHOR_MLP_WIDTH, 2, dims.n_anchors * 3, nn.ReLU)
        self.register_buffer("types", anchor_types(dims), persistent=False)
        self.register_buffer("mirrored", mirrored_anchors(dims), persistent=False)

    def anchors(self, template: torch.Tensor, z_geo: torch.Tensor) -> torch.Tensor:
        """(A, 3) this identity's anchors: the template (A, 3) moved by an MLP of the global geometry code."""
        return template + self.mlp_pos(z_geo[: self.dims.lat_dim_glob]).view(-1, 3)

    def forward(
        self, x: torch.Tensor, anchors: torch.Tensor, z_geo: torch.Tensor, z_app: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SDF (N,) and colour (N, 3) in [-1, 1] (None without z_app) of canonical points x (N, 3 + n_hyper)."""
        d = self.dims
        n, k = len(x), d.n_neighbors + 1
        global_node = x.new_full((n, 1), d.n_anchors, dtype=torch.long)
        idx = torch.cat([nearest_anchors(x[:, :3], anchors, d.n_neighbors), global_node], 1)  # (N, K + 1)
        nodes = torch.cat([anchors, anchors.new_zeros(1, 3)])  # (A + 1, 3): the global node sits at the origin
        nodes = torch.cat([nodes, nodes.new_zeros(len(nodes), x.shape[1] - 3)], 1)  # (A + 1, 3 + H)
        delta = x[:, None, :] - nodes[idx]  # (N, K + 1, 3 + H)
        flip = torch.where(self.mirrored[idx], -1.0, 1.0).to(x.dtype)  # (N, K + 1)
        delta = torch.cat([delta[..., :1] * flip[..., None], delta[..., 1:]], -1)
        types = self.types[idx].reshape(-1)  # (E,) with E = N (K + 1)
        types, order = torch.sort(types, stable=True)  # edges grouped by MLP
        counts = torch.bincount(types, minlength=d.n_mlps).tolist()
        node = idx.reshape(-1)[order]  # (E,)
        glob, local = z_geo[: d.lat_dim_glob], z_geo[d.lat_dim_glob :].view(d.n_anchors + 1, d.lat_dim_loc)
        codes = torch.cat([glob.expand(d.n_anchors + 1, -1), local], 1)  # (A + 1, G + L)
        response = self.deepSDFensemble.node_response(codes, self.types)[node]  # (E, hidden)
        sdf_e, feats = self.deepSDFensemble(delta.reshape(n * k, -1)[order], counts, response, tap=z_app is not None)
        distances = delta[..., :3].norm(dim=-1)
        distances = torch.cat([distances[:, :-1], torch.full_like(distances[:, -1:], GLOBAL_NODE_DISTANCE)], 1)
        w = blend_weights(distances, d.blend_std)  # (N, K + 1)
        sdf = (w * _unsort(sdf_e, order).view(n, k)).sum(-1)
        if z_app is None:
            return sdf, None
        comm = self.communcation_bottleneck2(torch.relu(self.communcation_bottleneck1(feats)))  # (E, 16)
        glob, local = z_app[: d.lat_dim_glob], z_app[d.lat_dim_glob :].view(d.n_anchors + 1, d.lat_dim_loc)
        codes = torch.cat([glob.expand(d.n_anchors + 1, -1), local], 1)
        response = self.aggr_app.node_response(codes, self.types)[node]
        color_e, _ = self.aggr_app(comm, counts, response)  # (E, 3)
        return sdf, (w[..., None] * _unsort(color_e, order).view(n, k, 3)).sum(1)


def _unsort(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows back in edge order: `values[i]` belongs to edge `order[i]`."""
    out = torch.empty_like(values)
    out[order] = values
    return out


class _SkipMLP(nn.Module):
    """The expression MLP (official `DeepSDF`: layers `lin{k}`, input re-fed at layer n_layers // 2)."""

    def __init__(self, d_in: int, hidden: int, n_hidden: int, d_out: int) -> None:
        super().__init__()
        self.skip = n_hidden // 2
        dims = [d_in] + [hidden] * n_hidden + [d_out]
        self.n_linear = len(dims) - 1
        for k in range(self.n_linear):
            setattr(self, f"lin{k}", nn.Linear(dims[k] + (d_in if k == self.skip else 0), dims[k + 1]))
        self.activation = nn.Softplus(beta=100)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        h = inp
        for k in range(self.n_linear):
            if k == self.skip:
                h = torch.cat([h, inp], -1) / math.sqrt(2)
            h = getattr(self, f"lin{k}")(h)
            if k < self.n_linear - 1:
                h = self.activation(h)
        return h


class ExpressionNetwork(nn.Module):
    """MonoNPHM's backward deformation; module names follow the official `DeformationNetwork` ('compress')."""

    def __init__(self, dims: MonoNPHMDims) -> None:
        super().__init__()
        self.dims = dims
        id_in = dims.code_dim + 3 * dims.n_anchors
        self.compressor = nn.Sequential(nn.Linear(id_in, dims.lat_dim_id))
        self.defDeepSDF = _SkipMLP(
            3 + dims.lat_dim_id + dims.lat_dim_ex, dims.hidden_dim_ex, dims.n_layers_ex, 3 + dims.n_hyper
        )

    def forward(
        self, x_posed: torch.Tensor, z_ex: torch.Tensor, z_geo: torch.Tensor, anchors: torch.Tensor
    ) -> torch.Tensor:
        """Canonical coordinates (N, 3 + n_hyper) = [x + offsets, hyper] of posed points (N, 3), codes (N, D_ex)."""
        identity = self.compressor(torch.cat([z_geo, anchors.reshape(-1)]))  # (lat_dim_id,)
        n = len(x_posed)
        out = self.defDeepSDF(torch.cat([x_posed, identity.expand(n, -1), z_ex.expand(n, -1)], -1))
        return torch.cat([x_posed + out[:, :3], out[:, 3:]], -1)


# ---- loading -------------------------------------------------------------------------------------------------------


def _check_state_dict(net: nn.Module, state: Any, name: str, source: Path) -> None:
    """Raise naming the first missing, unexpected or mis-shaped key before `load_state_dict(strict=True)`."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{source}: '{name}' is not a state dict")
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        raise ValueError(
            f"{source}: '{name}' lacks key {missing[0]!r} ({len(missing)} missing); the checkpoint does "
            "not fit this configs.yaml"
        )
    if extra:
        raise ValueError(
            f"{source}: '{name}' has unexpected key {extra[0]!r} ({len(extra)} extra); the checkpoint "
            "does not fit this configs.yaml"
        )
    for k, v in expected.items():
        if not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape:
            got = tuple(state[k].shape) if isinstance(state[k], torch.Tensor) else type(state[k]).__name__
            raise ValueError(f"{source}: '{name}' key {k!r} has shape {got}, expected {tuple(v.shape)}")
    net.load_state_dict(state, strict=True)


def read_dims(config: Path) -> MonoNPHMDims:
    """The dimensions in an experiment's `configs.yaml`."""
    if not config.is_file():
        raise FileNotFoundError(f"MonoNPHM config not found: {config} (the experiment folder holds configs.yaml)")
    try:
        cfg = yaml.safe_load(config.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{config}: not YAML ({e})") from e
    return MonoNPHMDims.from_config(cfg or {}, str(config))


def read_anchors(path: Path | None, dims: MonoNPHMDims) -> torch.Tensor:
    """(A, 3) template anchors from `assets/anchors_{A}.npy` of the MonoNPHM repository (not in the checkpoint)."""
    if path is None:
        raise FileNotFoundError(
            f"MonoNPHM's template anchors are not in its checkpoint: pass the anchors file "
            f"(assets/anchors_{dims.n_anchors}.npy of the MonoNPHM repository)"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"MonoNPHM anchors file not found: {path} (assets/anchors_{dims.n_anchors}.npy of the MonoNPHM repository)"
        )
    anchors = load_npy(path, "a MonoNPHM anchors file (.npy)")
    if not np.issubdtype(anchors.dtype, np.number) or np.iscomplexobj(anchors):
        raise ValueError(f"{path}: dtype {anchors.dtype}, expected real numbers")
    if anchors.size != 3 * dims.n_anchors or not np.isfinite(anchors).all():
        raise ValueError(f"{path}: shape {anchors.shape}, expected {dims.n_anchors} finite 3-d anchors")
    return torch.from_numpy(np.asarray(anchors, dtype=np.float32).reshape(dims.n_anchors, 3))


def load_networks(checkpoint: Path, dims: MonoNPHMDims) -> tuple[IdentityNetwork, ExpressionNetwork]:
    """Both networks from an official checkpoint, strictly; `weights_only` loading never runs code from the file."""
    state = load_torch(checkpoint, "a MonoNPHM checkpoint")
    if not isinstance(state, Mapping):
        raise ValueError(f"{checkpoint}: expected a dict with 'id_decoder' and 'ex_decoder'")
    nets = IdentityNetwork(dims), ExpressionNetwork(dims)
    for net, name in zip(nets, ("id_decoder", "ex_decoder"), strict=True):
        if name not in state:
            raise ValueError(f"{checkpoint}: no '{name}' state dict (keys: {sorted(state)})")
        _check_state_dict(net, state[name], name, checkpoint)
    return nets


def checkpoint_path(experiment: Path, epoch: int | None = None) -> Path:
    """`{experiment}/checkpoints/checkpoint_epoch_{epoch}.tar`; without `epoch`, the latest one there."""
    folder = Path(experiment) / "checkpoints"
    if epoch is not None:
        return folder / f"checkpoint_epoch_{epoch}.tar"
    found = sorted(folder.glob("checkpoint_epoch_*.tar"), key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
    if not found:
        raise FileNotFoundError(f"no checkpoint_epoch_N.tar in {folder}")
    return found[-1]


# ---- the head model ------------------------------------------------------------------------------------------------


def _resolve(path: str | Path, base_dir: Path | None) -> Path:
    path = Path(path)
    return path if path.is_absolute() or base_dir is None else base_dir / path


class MonoNPHM:
    """One identity (z_geo, z_app) of MonoNPHM: the `HeadModel` protocol on CPU or CUDA (device of the inputs)."""

    def __init__(
        self,
        identity: IdentityNetwork,
        expression: ExpressionNetwork,
        template: torch.Tensor,
        z_geo: torch.Tensor,
        z_app: torch.Tensor,
        bounds: torch.Tensor | None = None,
        files: Mapping[str, str] | None = None,
    ) -> None:
        dims = identity.dims
        for name, z in (("z_geo", z_geo), ("z_app", z_app)):
            if z.numel() != dims.code_dim:
                raise ValueError(f"{name} has {z.numel()} values, this MonoNPHM needs {dims.code_dim}")
            if not torch.isfinite(z).all():
                raise ValueError(f"{name} contains NaN or inf")
        self.dims = dims
        self.identity_net = identity.eval().requires_grad_(False)
        self.expression_net = expression.eval().requires_grad_(False)
        self.template = template.float()  # (A, 3)
        self.z_geo = z_geo.float().reshape(-1)  # (C,)
        self.z_app = z_app.float().reshape(-1)  # (C,)
        self._bounds = torch.tensor(DEFAULT_BOUNDS) if bounds is None else bounds.float()
        self.files = dict(files or {})  # checkpoint, config, anchors: what `description` points at

    @classmethod
    def load(
        cls,
        checkpoint: Path,
        config: Path,
        anchors: Path | None,
        z_geo: np.ndarray,
        z_app: np.ndarray,
        bounds: torch.Tensor | None = None,
    ) -> MonoNPHM:
        """From the official files: a checkpoint, its experiment's `configs.yaml` and the template anchors."""
        dims = read_dims(Path(config))
        template = read_anchors(anchors, dims)
        identity, expression = load_networks(Path(checkpoint), dims)
        files = {"checkpoint": str(checkpoint), "config": str(config), "anchors": str(anchors)}
        z = [torch.as_tensor(np.asarray(c, dtype=np.float32)) for c in (z_geo, z_app)]
        return cls(identity, expression, template, z[0], z[1], bounds, files)

    @classmethod
    def from_description(cls, description: dict[str, Any], base_dir: Path | None = None) -> MonoNPHM:
        """Rebuild from `description()`; relative file paths are relative to `base_dir`."""
        bounds = description.get("bounds")
        return cls.load(
            _resolve(description["checkpoint"], base_dir),
            _resolve(description["config"], base_dir),
            _resolve(description["anchors"], base_dir) if description.get("anchors") else None,
            np.asarray(description["z_geo"], dtype=np.float32),
            np.asarray(description["z_app"], dtype=np.float32),
            torch.tensor(bounds, dtype=torch.float32) if bounds is not None else None,
        )

    def description(self) -> dict[str, Any]:
        if not {"checkpoint", "config", "anchors"} <= set(self.files):
            raise ValueError("this MonoNPHM was not loaded from files (MonoNPHM.load), so no description can name them")
        files = {k: self.files[k] for k in ("checkpoint", "config", "anchors")}
        codes = {"z_geo": self.z_geo.tolist(), "z_app": self.z_app.tolist()}
        return {"type": "mononphm", **files, "bounds": self._bounds.tolist(), **codes}

    @property
    def expression_dim(self) -> int:
        return self.dims.lat_dim_ex

    @property
    def bounds(self) -> torch.Tensor:
        return self._bounds.clone()

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(anchors (A, 3), z_geo, z_app) on `device`, the networks moved there (a no-op when they are)."""
        self.identity_net.to(device)
        self.expression_net.to(device)
        z_geo = self.z_geo.to(device)
        return self.identity_net.anchors(self.template.to(device), z_geo), z_geo, self.z_app.to(device)

    def _canonical_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 3:
            return torch.cat([x, x.new_zeros(len(x), self.dims.n_hyper)], -1)
        if x.shape[-1] != 3 + self.dims.n_hyper:
            raise ValueError(f"canonical points must be (N, 3) or (N, {3 + self.dims.n_hyper}), got {tuple(x.shape)}")
        return x

    def _fields(self, x: torch.Tensor, with_color: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self._canonical_input(x.float())
        anchors, z_geo, z_app = self._on(x.device)
        sdfs, colors = [], []
        for i in range(0, len(x), SDF_CHUNK):
            s, c = self.identity_net(x[i : i + SDF_CHUNK], anchors, z_geo, z_app if with_color else None)
            sdfs.append(s)
            colors.append(c)
        return torch.cat(sdfs), (torch.cat(colors) if with_color else None)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """Signed distance (N,) of canonical points (N, 3) (hyper = 0) or (N, 3 + n_hyper)."""
        return self._fields(x, with_color=False)[0]

    def color(self, x: torch.Tensor) -> torch.Tensor:
        """RGB (N, 3) in [0, 1] of canonical points; MonoNPHM's colours are in [-1, 1]."""
        return ((self._fields(x, with_color=True)[1] + 1) / 2).clamp(0.0, 1.0)

    def canonical_coordinates(self, x_posed: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
        """MonoNPHM's full canonical coordinates (N, 3 + n_hyper) of posed points (N, 3) under codes (D,) or (N, D)."""
        x_posed = x_posed.float()
        anchors, z_geo, _ = self._on(x_posed.device)
        z = z_ex.to(x_posed).reshape(-1, self.dims.lat_dim_ex)  # (1 or N, D)
        out = []
        for i in range(0, len(x_posed), SDF_CHUNK):
            zi = z if len(z) == 1 else z[i : i + SDF_CHUNK]
            out.append(self.expression_net(x_posed[i : i + SDF_CHUNK], zi, z_geo, anchors))
        return torch.cat(out)

    def backward(self, x_posed: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
        """Canonical xyz (N, 3) of posed points (N, 3): the hyper-coordinates are dropped (Gaussians live in 3-D)."""
        return self.canonical_coordinates(x_posed, z_ex)[:, :3].to(x_posed.dtype)

    def normals(self, x: torch.Tensor) -> torch.Tensor:
        """Outward unit normals (N, 3) at canonical points, from the SDF's autograd gradient."""
        out = []
        for i in range(0, len(x), SDF_CHUNK):
            with torch.enable_grad():
                xi = x[i : i + SDF_CHUNK].detach().float().requires_grad_(True)
                (g,) = torch.autograd.grad(self.sdf(xi).sum(), xi)
            out.append(torch.nn.functional.normalize(g, dim=-1))
        return torch.cat(out) if out else x.new_zeros(0, 3)

    def mouth_region(self) -> None:
        """None: MonoNPHM's anchors carry no names, and its mouth opens through the hyper-coordinates npga drops
        (docs/real-data.md); give the region with `--detail.mouth.center` and `--detail.mouth.radii`."""
        return None

    def canonical_mesh(self, resolution: int = 128, device: torch.device | str = "cpu") -> Mesh:
        """Zero level set by marching cubes on a `resolution`^3 grid over `bounds`, evaluated slab by slab."""
        return zero_level_mesh(self.sdf, self.normals, self._bounds, resolution, device=device)
