"""FLAME as a head model: the identity's neutral mesh, FLAME's own skinning as the forward deformation.

The model file is the user's (FLAME is licensed; npga never ships or downloads it), FLAME's arrays as `.npz`:
the official `.pkl` is refused, since reading it means unpickling, which runs whatever code the file names.
Model file, its conversion, and the split of FLAME's parameters into code and head pose: docs/real-data.md.

- canonical surface: the identity's neutral mesh (zero expression, every joint at rest);
- forward: posed(x_c, z) = FLAME's linear blend skinning with global and neck at rest, exact at the vertices
  and linear across each triangle (the mesh as FLAME draws it). Off the surface a point moves with its closest
  surface point, which keeps the field defined in the band distillation samples;
- backward: the fixed point x <- x_posed - D(x, z) (as the synthetic head), exact where it converges.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from npga.geometry import axis_angle_to_matrix
from npga.headmodel.base import Mesh, MouthRegion
from npga.io.untrusted import load_npz

N_SHAPE = 300  # FLAME's shape components come first in `shapedirs`, the expression components after them
N_JOINTS = 5  # global, neck, jaw, left eye, right eye
JAW, EYES = 2, (3, 4)
BACKWARD_ITERATIONS = 60
BACKWARD_TOLERANCE = 1e-10  # a point's fixed point stops once it moves less than this (head units)
CANDIDATE_VERTICES = 4  # closest-point search: the faces around this many nearest vertices
SKIN_TONE = (0.78, 0.6, 0.5)  # uniform start colour: FLAME's geometry has no appearance


@dataclass(frozen=True)
class FlameModel:
    """The arrays of a FLAME model file, checked (float64 torch tensors, int64 faces and parents)."""

    v_template: torch.Tensor  # (V, 3)
    shapedirs: torch.Tensor  # (V, 3, 300 + E)
    posedirs: torch.Tensor  # (V, 3, 9 * (J - 1))
    J_regressor: torch.Tensor  # (J, V)
    weights: torch.Tensor  # (V, J)
    parents: torch.Tensor  # (J,) parent joint, -1 for the root
    faces: torch.Tensor  # (F, 3)

    @property
    def n_expression(self) -> int:
        return int(self.shapedirs.shape[2]) - N_SHAPE


_SHAPES = {
    "v_template": ("V", 3),
    "shapedirs": ("V", 3, None),
    "posedirs": ("V", 3, 9 * (N_JOINTS - 1)),
    "J_regressor": (N_JOINTS, "V"),
    "weights": ("V", N_JOINTS),
    "kintree_table": (2, N_JOINTS),
    "f": (None, 3),
}


def load_flame_model(path: str | os.PathLike) -> FlameModel:
    """Read and check a FLAME model `.npz`; every error names the file and the offending array."""
    path = Path(path)
    if path.suffix == ".pkl":
        raise ValueError(
            f"{path}: the official FLAME .pkl needs unpickling (which can run code) and chumpy; "
            "convert it once to .npz as docs/real-data.md#the-flame-model-file shows"
        )
    if not path.is_file():
        raise FileNotFoundError(f"FLAME model file not found: {path} (pass your own licensed model, .npz)")
    arrays = {k: v for k, v in load_npz(path, "a FLAME model file (.npz)").items() if k in _SHAPES}
    missing = [k for k in _SHAPES if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing} of the FLAME layout")
    V = arrays["v_template"].shape[0] if arrays["v_template"].ndim == 2 else -1
    for name, shape in _SHAPES.items():
        a = arrays[name]
        want = tuple(V if s == "V" else s for s in shape)
        if a.ndim != len(want) or any(w is not None and w != n for w, n in zip(want, a.shape, strict=True)):
            shown = "(" + ", ".join("*" if w is None else str(w) for w in want) + ")"
            raise ValueError(f"{path}: '{name}' has shape {a.shape}, expected {shown}")
        if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
            raise ValueError(f"{path}: '{name}' is not finite numbers")
    if arrays["shapedirs"].shape[2] <= N_SHAPE:
        raise ValueError(
            f"{path}: 'shapedirs' has {arrays['shapedirs'].shape[2]} components; FLAME has "
            f"{N_SHAPE} shape components followed by the expression ones"
        )
    faces = arrays["f"].astype(np.int64)
    if faces.min() < 0 or faces.max() >= V:
        raise ValueError(f"{path}: 'f' indexes vertices outside [0, {V})")
    parents = arrays["kintree_table"][0].astype(np.int64)
    parents[0] = -1
    if any(not 0 <= parents[j] < j for j in range(1, N_JOINTS)):
        raise ValueError(f"{path}: 'kintree_table' must list each joint's parent before the joint")
    f64 = lambda k: torch.from_numpy(arrays[k].astype(np.float64))
    return FlameModel(
        f64("v_template"),
        f64("shapedirs"),
        f64("posedirs"),
        f64("J_regressor"),
        f64("weights"),
        torch.from_numpy(parents),
        torch.from_numpy(faces),
    )


def closest_points_on_triangles(p: torch.Tensor, tri: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest points (M, 3) on triangles tri (M, 3 corners, 3) to points p (M, 3), and their barycentrics (M, 3).

    Either the projection onto the plane (when it falls inside) or the closest point of one of the three edges.
    """
    a, b, c = tri.unbind(1)
    n = torch.cross(b - a, c - a, dim=-1)
    nn2 = (n * n).sum(-1).clamp_min(1e-30)
    q = p - ((p - a) * n).sum(-1, keepdim=True) * n / nn2[:, None]  # plane projection
    wa = (torch.cross(c - b, q - b, dim=-1) * n).sum(-1) / nn2
    wb = (torch.cross(a - c, q - c, dim=-1) * n).sum(-1) / nn2
    bary_in = torch.stack([wa, wb, 1 - wa - wb], -1)
    inside = (bary_in >= 0).all(-1)
    best_q, best_bary = q, bary_in
    best_d = torch.where(inside, ((p - q) ** 2).sum(-1), torch.full_like(wa, float("inf")))
    corners = torch.eye(3, dtype=p.dtype, device=p.device)
    for i, j in ((0, 1), (1, 2), (2, 0)):
        u, v = tri[:, i], tri[:, j]
        t = (((p - u) * (v - u)).sum(-1) / ((v - u) ** 2).sum(-1).clamp_min(1e-30)).clamp(0, 1)[:, None]
        qe = u + t * (v - u)
        de = ((p - qe) ** 2).sum(-1)
        better = de < best_d
        best_d = torch.where(better, de, best_d)
        best_q = torch.where(better[:, None], qe, best_q)
        best_bary = torch.where(better[:, None], (1 - t) * corners[i] + t * corners[j], best_bary)
    return best_q, best_bary


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (V, 3), following the faces' winding."""
    v = vertices[faces]  # (F, 3, 3)
    fn = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)  # (F, 3), length = 2 * area
    n = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), fn.repeat_interleave(3, 0))
    return torch.nn.functional.normalize(n, dim=-1)


class FlameHead:
    """One FLAME identity (shape coefficients + static offsets) behind npga's head-model protocol."""

    def __init__(
        self,
        model: FlameModel,
        shape: np.ndarray | None = None,
        static_offset: np.ndarray | None = None,
        model_path: str | os.PathLike | None = None,
    ) -> None:
        self.model = model
        self.model_path = None if model_path is None else Path(model_path).resolve()
        V = model.v_template.shape[0]
        shape = np.zeros(0) if shape is None else np.asarray(shape, dtype=np.float64).reshape(-1)
        if len(shape) > N_SHAPE:
            raise ValueError(f"FLAME has {N_SHAPE} shape coefficients, got {len(shape)}")
        offset = np.zeros((V, 3)) if static_offset is None else np.asarray(static_offset, dtype=np.float64)
        if offset.ndim != 2 or offset.shape[1] != 3 or offset.shape[0] < V:
            raise ValueError(f"static_offset must be (V >= {V}, 3) per-vertex offsets, got {offset.shape}")
        self.shape = shape
        # VHAP appends teeth vertices after FLAME's; their offsets belong to vertices this model does not have.
        self.static_offset = offset[:V]
        id_dirs = model.shapedirs[:, :, : len(shape)]  # (V, 3, S)
        self._v_identity = model.v_template + id_dirs @ torch.from_numpy(shape) + torch.from_numpy(self.static_offset)
        self._expr_dirs = model.shapedirs[:, :, N_SHAPE:]  # (V, 3, E)
        self._j_identity = model.J_regressor @ self._v_identity  # (J, 3)
        self._j_expr_dirs = torch.einsum("jv,vce->jce", model.J_regressor, self._expr_dirs)  # (J, 3, E)
        normals = vertex_normals(self._v_identity, model.faces)
        outward = ((self._v_identity - self._v_identity.mean(0)) * normals).sum(-1).mean() > 0
        self._normals = normals if outward else -normals  # (V, 3) pointing out of the head, whatever the winding
        self._tree = cKDTree(self._v_identity.numpy())
        # vertex -> incident faces, padded with -1: the candidates of the closest-point search
        F = len(model.faces)
        vf = torch.stack([model.faces.reshape(-1), torch.arange(F).repeat_interleave(3)], -1)  # (3F, 2)
        vf = vf[torch.argsort(vf[:, 0], stable=True)]
        counts = torch.bincount(vf[:, 0], minlength=V)
        slot = torch.arange(len(vf)) - (torch.cumsum(counts, 0) - counts)[vf[:, 0]]
        self._vertex_faces = torch.full((V, max(int(counts.max()), 1)), -1, dtype=torch.long)
        self._vertex_faces[vf[:, 0], slot] = vf[:, 1]

    # ---- description --------------------------------------------------------------------------------------
    @classmethod
    def from_description(cls, description: dict[str, Any], base_dir: Path | None = None) -> FlameHead:
        """`model` (a path, relative to `base_dir` unless absolute), `shape`, optional `static_offset`."""
        path = Path(description["model"]).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        offset = description.get("static_offset")
        return cls(
            load_flame_model(path),
            np.asarray(description.get("shape", []), dtype=np.float64),
            None if offset is None else np.asarray(offset, dtype=np.float64),
            path,
        )

    def description(self) -> dict[str, Any]:
        if self.model_path is None:
            raise ValueError("a FLAME head built from arrays has no model file to describe; pass model_path")
        out: dict[str, Any] = {"type": "flame", "model": str(self.model_path), "shape": self.shape.tolist()}
        if np.any(self.static_offset):
            out["static_offset"] = np.round(self.static_offset, 7).tolist()
        return out

    # ---- protocol -----------------------------------------------------------------------------------------
    @property
    def n_expression(self) -> int:
        return self.model.n_expression

    @property
    def expression_dim(self) -> int:
        return self.n_expression + 9

    @property
    def bounds(self) -> torch.Tensor:
        v = self._v_identity
        lo, hi = v.min(0).values, v.max(0).values
        pad = 0.1 * float((hi - lo).max())
        return torch.stack([lo - pad, hi + pad]).float()

    def mouth_region(self) -> MouthRegion | None:
        """Around the lips' seam: where the jaw's skinning weight crosses one half on the front of the face (the
        upper lip follows the head, the lower lip the jaw) nearest the face's middle, the highest such place (the
        jaw's weight also fades under the chin); sized in proportion to the head (a fifth of its width, a tenth
        of its height, an eighth of its depth), deep enough for the teeth."""
        v, n = self._v_identity, self._normals
        lo, hi = v.min(0).values, v.max(0).values
        extent = hi - lo
        w = self.model.weights[:, JAW]
        seam = (w > 0.2) & (w < 0.8) & (n[:, 2] > 0.5)  # (V,) front-facing vertices where the jaw's weight changes
        if not seam.any():
            return None
        middle = (v[:, 0] - (lo[0] + hi[0]) / 2).abs()
        near = seam & (middle <= middle[seam].min() + 0.05 * extent[0])
        near &= v[:, 1] >= v[near, 1].max() - 0.03 * extent[1]
        radii = (0.2 * extent[0], 0.1 * extent[1], 0.125 * extent[2])
        return MouthRegion(tuple(float(c) for c in v[near].mean(0)), tuple(float(r) for r in radii))

    def canonical_mesh(self, resolution: int = 128, device: torch.device | str = "cpu") -> Mesh:
        """The neutral FLAME mesh itself (`resolution` and `device` are for implicit heads; FLAME's surface is
        its mesh)."""
        return Mesh(self._v_identity.float(), self.model.faces.clone(), self._normals.float())

    def color(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_tensor(SKIN_TONE).expand(len(x), 3).clone()

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """Distance to the neutral mesh, negative behind it (the side its normals point away from)."""
        xd = x.double()
        faces, bary = self._closest(xd)
        q = (bary[:, :, None] * self._v_identity[self.model.faces[faces]]).sum(1)
        n = (bary[:, :, None] * self._normals[self.model.faces[faces]]).sum(1)
        d = (xd - q).norm(dim=-1)
        return torch.where(((xd - q) * n).sum(-1) < 0, -d, d).to(x.dtype)

    def backward(self, x_posed: torch.Tensor, z_ex: torch.Tensor) -> torch.Tensor:
        """Canonical x with x + D(x, z) = x_posed, by the fixed point x <- x_posed - D(x, z)."""
        xp = x_posed.detach().double().cpu()
        z = z_ex.detach().double().cpu()
        z = z[None].expand(len(xp), -1) if z.ndim == 1 else z
        x = xp.clone()
        active = torch.arange(len(x))  # points still moving: converged ones leave the iteration
        for _ in range(BACKWARD_ITERATIONS):
            if len(active) == 0:
                break
            x_new = xp[active] - self.forward_displacement(x[active], z[active])
            moved = (x_new - x[active]).abs().amax(-1)
            x[active] = x_new
            active = active[moved >= BACKWARD_TOLERANCE]
        return x.to(device=x_posed.device, dtype=x_posed.dtype)

    # ---- FLAME ----------------------------------------------------------------------------------------------
    def forward_displacement(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """D(x_c, z) (N, 3) for canonical points x (N, 3) and codes z (D,) or (N, D): the skinned motion of the
        closest surface point (barycentric in its triangle)."""
        z = z[None].expand(len(x), -1) if z.ndim == 1 else z
        faces, bary = self._closest(x.double())
        idx = self.model.faces[faces]  # (N, 3)
        moved = self.skin(idx, z.double()) - self._v_identity[idx]  # (N, 3 corners, 3)
        return (bary[:, :, None] * moved).sum(1).to(x.dtype)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return x + self.forward_displacement(x, z)

    def posed_vertices(self, z: torch.Tensor) -> torch.Tensor:
        """All vertices (V, 3) of the mesh posed by one code z (D,): FLAME with global and neck at rest."""
        V = self._v_identity.shape[0]
        return self.skin(torch.arange(V)[None], z.double()[None])[0]

    def joints(self, expression: torch.Tensor) -> torch.Tensor:
        """Rest joints (T, J, 3) of the identity under expression coefficients (T, E) (FLAME regresses them
        from the expression-shaped mesh)."""
        return self._j_identity + torch.einsum("jce,te->tjc", self._j_expr_dirs, expression.double())

    def skin(self, idx: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Posed positions (N, K, 3) of vertices idx (N, K) under codes z (N, D): linear blend skinning of the
        expression-shaped, pose-corrected vertices, only for the vertices asked for."""
        m, E = self.model, self.n_expression
        if z.shape[-1] != self.expression_dim:
            raise ValueError(
                f"FLAME codes are {self.expression_dim}-d ({E} expression + jaw 3 + eyes 6), got {z.shape[-1]}"
            )
        expr = z[:, :E]  # (N, E)
        pose = torch.zeros(len(z), N_JOINTS, 3, dtype=z.dtype)
        pose[:, JAW] = z[:, E : E + 3]
        pose[:, EYES[0]], pose[:, EYES[1]] = z[:, E + 3 : E + 6], z[:, E + 6 : E + 9]
        rot = axis_angle_to_matrix(pose)  # (N, J, 3, 3)
        v = self._v_identity[idx] + torch.einsum("nkce,ne->nkc", self._expr_dirs[idx], expr)  # (N, K, 3)
        pose_feature = (rot[:, 1:] - torch.eye(3, dtype=z.dtype)).reshape(len(z), -1)  # (N, 9 (J - 1))
        v = v + torch.einsum("nkcp,np->nkc", m.posedirs[idx], pose_feature)
        J = self.joints(expr)  # (N, J, 3)
        # world transforms of the joints along the kinematic chain, then relative to the rest pose
        Rw, tw = [rot[:, 0]], [J[:, 0]]
        for j in range(1, N_JOINTS):
            p = int(m.parents[j])
            Rw.append(Rw[p] @ rot[:, j])
            tw.append(tw[p] + (Rw[p] @ (J[:, j] - J[:, p])[..., None])[..., 0])
        R = torch.stack(Rw, 1)  # (N, J, 3, 3)
        t = torch.stack(tw, 1) - (R @ J[..., None])[..., 0]  # (N, J, 3): x -> R x + t moves rest to posed
        w = m.weights[idx]  # (N, K, J)
        Rv = torch.einsum("nkj,njab->nkab", w, R)
        tv = torch.einsum("nkj,nja->nka", w, t)
        return (Rv @ v[..., None])[..., 0] + tv

    def _closest(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Face (N,) and barycentrics (N, 3) of the closest point of the neutral mesh to each x (N, 3)."""
        if len(x) == 0:
            return torch.zeros(0, dtype=torch.long), x.new_zeros(0, 3)
        k = min(CANDIDATE_VERTICES, len(self._v_identity))
        _, near = self._tree.query(x.numpy(), k=k)
        near = torch.from_numpy(np.asarray(near).reshape(len(x), k))
        cand = self._vertex_faces[near].reshape(len(x), -1)  # (N, C), -1 padded
        valid = cand >= 0
        cand = torch.where(valid, cand, cand.max(1, keepdim=True).values)
        N, C = cand.shape
        tri = self._v_identity[self.model.faces[cand.reshape(-1)]]  # (N C, 3, 3)
        q, bary = closest_points_on_triangles(x.repeat_interleave(C, 0), tri)
        d = ((x.repeat_interleave(C, 0) - q) ** 2).sum(-1).reshape(N, C)
        best = d.argmin(1)
        rows = torch.arange(N)
        return cand[rows, best], bary.reshape(N, C, 3)[rows, best]
