"""Mutation check: apply realistic bugs to a copy of the code one at a time and run the tests meant to catch them.

Each mutant is an exact `old -> new` replacement in one file (`old` must occur exactly once, so the list fails
loudly when the code changes under it). For each, `npga/`, `tests/`, `configs/`, `data_tools/` and
`pyproject.toml` are copied into a temporary folder, the mutant applied there, and the mutant's tests run
with `python -m pytest` from the copy (the copy's `npga` is imported, not the editable install: checked once).
A mutant is killed when its tests fail (or time out). With `--baseline`, the union of all tests first runs on the
unmutated copy, and a mutant only counts as killed by tests that pass without it.

    .venv/bin/python benchmarks/mutants.py            # all mutants, table + benchmarks/out/mutants.json
    .venv/bin/python benchmarks/mutants.py -k deform  # those whose name contains "deform"

When a bug is found that the tests missed, add it here with the test that now catches it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("npga", "tests", "configs", "data_tools", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    description: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, `-k` selections


AVATAR = "tests/test_avatar.py"
GEOMETRY = "tests/test_geometry.py"
MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "distill_sign_flip",
        "npga/deform/distill.py",
        "pool_dx.append(x_p - x_c)",
        "pool_dx.append(x_c - x_p)",
        "cycle target x_c - x_p instead of x_p - x_c",
        ("tests/test_deform.py", "-k", "moves_the_points"),
    ),
    Mutant(
        "distill_wrong_code",
        "npga/deform/distill.py",
        "x_c = _backward_chunked(head, x_p, z)",
        "x_c = _backward_chunked(head, x_p, z.roll(1, 0))",
        "pairs mapped back under another point's code",
        ("tests/test_deform.py", "-k", "moves_the_points"),
    ),
    Mutant(
        "deform_identity_quat_xyzw",
        "npga/avatar/deform.py",
        "new_tensor([1.0, 0.0, 0.0, 0.0])",
        "new_tensor([0.0, 0.0, 0.0, 1.0])",
        "detail rotation residual around the xyzw identity (wxyz code)",
        (AVATAR, "-k", "independent"),
    ),
    Mutant(
        "deform_rotation_order",
        "npga/avatar/deform.py",
        "quats = quat_multiply(dq, quats)",
        "quats = quat_multiply(quats, dq)",
        "residual rotation applied before the canonical one",
        (AVATAR, "-k", "independent"),
    ),
    Mutant(
        "deform_position_residual_sign",
        "npga/avatar/deform.py",
        'means = means + r["position"] * nets.detail.cfg.position_scale',
        'means = means - r["position"] * nets.detail.cfg.position_scale',
        "detail position residual sign flip",
        (AVATAR, "-k", "independent or moves_the_rendered"),
    ),
    Mutant(
        "deform_coarse_sign",
        "npga/avatar/deform.py",
        "means = means + offset",
        "means = means - offset",
        "coarse field displacement sign flip",
        (AVATAR, "-k", "independent"),
    ),
    Mutant(
        "deform_scale_residual_dropped",
        "npga/avatar/deform.py",
        'log_scales = log_scales + r["scale"]',
        "log_scales = log_scales",
        "detail scale residual dropped",
        (AVATAR, "-k", "independent"),
    ),
    Mutant(
        "deform_opacity_residual_sign",
        "npga/avatar/deform.py",
        'opacity_logits = opacity_logits + r["opacity"][:, 0]',
        'opacity_logits = opacity_logits - r["opacity"][:, 0]',
        "detail opacity residual sign flip",
        (AVATAR, "-k", "independent"),
    ),
    Mutant(
        "deform_features_detached",
        "npga/avatar/deform.py",
        'features = params["features"] if "features" in params else None',
        'features = params["features"].detach() if "features" in params else None',
        "latent features cut from the graph (must carry gradient)",
        (AVATAR, "-k", "gradients"),
    ),
    Mutant(
        "cnn_features_detached",
        "npga/avatar/render.py",
        "g.features[:, : cnn.latent_channels]",
        "g.features[:, : cnn.latent_channels].detach()",
        "CNN latent channels detached from the features",
        (AVATAR, "-k", "cnn_sees"),
    ),
    Mutant(
        "cnn_wrong_latent_channels",
        "npga/avatar/render.py",
        "g.features[:, : cnn.latent_channels]",
        "g.features[:, -cnn.latent_channels :]",
        "CNN renders the last feature channels, not the first",
        (AVATAR, "-k", "cnn_sees"),
    ),
    Mutant(
        "cnn_latent_background",
        "npga/avatar/render.py",
        "bg.new_zeros(cnn.latent_channels)",
        "bg.new_ones(cnn.latent_channels)",
        "latent channels rendered on 1 instead of 0",
        (AVATAR, "-k", "cnn_sees"),
    ),
    Mutant(
        "head_pose_transposed",
        "npga/avatar/deform.py",
        "means_w = means @ A.T",
        "means_w = means @ A",
        "head pose applied with the transposed rotation",
        (AVATAR, "-k", "head_pose"),
    ),
    Mutant(
        "head_pose_scale_root",
        "npga/avatar/deform.py",
        ".pow(1.0 / 3.0)",
        ".pow(1.0 / 2.0)",
        "similarity scale from the wrong root of det(sR)",
        (AVATAR, "-k", "head_pose"),
    ),
    Mutant(
        "quat_to_matrix_transposed",
        "npga/geometry.py",
        ").reshape(*q.shape[:-1], 3, 3)",
        ").reshape(*q.shape[:-1], 3, 3).transpose(-1, -2)",
        "rotation matrix of a quaternion transposed",
        (GEOMETRY, "-k", "quat"),
    ),
    Mutant(
        "quat_xyzw",
        "npga/geometry.py",
        "w, x, y, z = F.normalize(q, dim=-1).unbind(-1)",
        "x, y, z, w = F.normalize(q, dim=-1).unbind(-1)",
        "quaternions (the rasterizer's among them) read as xyzw",
        (GEOMETRY, "-k", "quat"),
    ),
    Mutant(
        "look_at_opengl",
        "npga/cameras.py",
        "y = np.cross(z, x)",
        "y = np.cross(x, z)",
        "look-at with OpenGL's y up instead of OpenCV's y down",
        ("tests/test_cameras.py",),
    ),
    Mutant(
        "ssim_window_7",
        "npga/metrics.py",
        "SSIM_WINDOW = 11",
        "SSIM_WINDOW = 7",
        "SSIM window of 7 taps",
        ("tests/test_metrics.py", "-k", "scikit"),
    ),
    Mutant(
        "ssim_sigma",
        "npga/metrics.py",
        "SSIM_SIGMA = 1.5",
        "SSIM_SIGMA = 1.0",
        "SSIM Gaussian sigma 1.0",
        ("tests/test_metrics.py", "-k", "scikit"),
    ),
    Mutant(
        "loss_weight_dropped",
        "npga/losses.py",
        "getattr(weights, name) * value",
        "value",
        "total loss ignores the weights",
        ("tests/test_losses.py",),
    ),
    Mutant(
        "loss_alpha_term_dropped",
        "npga/losses.py",
        '"alpha": lambda: l1(alpha, gt_alpha)',
        '"alpha": lambda: zero',
        "silhouette term dropped",
        ("tests/test_losses.py",),
    ),
    Mutant(
        "eval_frames_off_by_one",
        "npga/evaluate.py",
        "range(0, cache.n_frames(seq), every)",
        "range(1, cache.n_frames(seq), every)",
        "evaluation skips each sequence's first frame",
        ("tests/test_evaluate.py", "-k", "perfect_and_noisy"),
    ),
    Mutant(
        "eval_masked_with_pred",
        "npga/evaluate.py",
        "pred_masked = composite(pred, gt_alpha, background)",
        "pred_masked = pred",
        "masked metrics do not mask",
        ("tests/test_evaluate.py", "-k", "known_errors"),
    ),
    Mutant(
        "eval_video_sides_swapped",
        "npga/evaluate.py",
        "np.concatenate([gt[0].numpy(), pred[0].numpy()], 1)",
        "np.concatenate([pred[0].numpy(), gt[0].numpy()], 1)",
        "video shows render | truth, not truth | render",
        ("tests/test_evaluate.py", "-k", "known_errors"),
    ),
    Mutant(
        "densify_relocated_keep_moments",
        "npga/avatar/densify.py",
        "m[dead_idx] = 0",
        "m[dead_idx] = m[dead_idx]",
        "relocated rows keep the moments of the Gaussian they replaced",
        ("tests/test_densify.py", "-k", "relocate_dead"),
    ),
    Mutant(
        "densify_add_samples_off_by_one",
        "npga/avatar/densify.py",
        "return torch.cat([p, p[src]])",
        "return torch.cat([p, p[src - 1]])",
        "appended copies taken from the row before their source",
        ("tests/test_densify.py", "-k", "add_samples"),
    ),
    Mutant(
        "refine_gauge_unpinned",
        "npga/train/trainer.py",
        "                self.corrections.remove_mean()\n",
        "",
        "tracking corrections keep the offset every frame shares (the gauge drifts)",
        ("tests/test_train.py", "-k", "refinement_removes"),
    ),
    Mutant(
        "refine_corrections_frozen",
        "npga/train/trainer.py",
        "                self.refine_optimizer.step()\n",
        "",
        "--refine-tracking never moves the corrections",
        ("tests/test_train.py", "-k", "refinement_removes"),
    ),
    Mutant(
        "avatar_pose_transposed",
        "npga/train/trainer.py",
        "head_pose=torch.from_numpy(tracking.head_poses).float(),",
        "head_pose=torch.from_numpy(tracking.head_poses).transpose(1, 2).float(),",
        "avatar file stores the head poses transposed",
        ("tests/test_avatar_file.py", "-k", "fresh_process"),
    ),
    Mutant(
        "checkpoint_unpickles_anything",
        "npga/io/untrusted.py",
        "torch.load(path, map_location=map_location, weights_only=True)",
        "torch.load(path, map_location=map_location, weights_only=False)",
        "untrusted torch files (checkpoints, distill.pt, MonoNPHM) loaded with the full unpickler (runs code)",
        ("tests/test_avatar_file.py", "-k", "crafted"),
    ),
    Mutant(
        "plots_switch_backend",
        "npga/io/plots.py",
        "from matplotlib.figure import Figure\n",
        "import matplotlib\n\nmatplotlib.use('Agg')\nfrom matplotlib.figure import Figure  # noqa: E402\n",
        "importing npga switches matplotlib's backend",
        ("tests/test_plots.py", "-k", "matplotlib"),
    ),
    Mutant(
        "ply_rotation_xyzw",
        "npga/io/splats.py",
        "        q / np.linalg.norm(q, axis=1, keepdims=True),\n",
        "        np.roll(q / np.linalg.norm(q, axis=1, keepdims=True), -1, 1),\n",
        "PLY rot_0..3 written x y z w",
        ("tests/test_export.py", "-k", "ply_read_back"),
    ),
    Mutant(
        "ply_color_not_sh",
        "npga/io/splats.py",
        "(_numpy(colors) - 0.5) / SH_C0",
        "(_numpy(colors) - 0.5)",
        "PLY f_dc without the SH basis constant",
        ("tests/test_export.py", "-k", "ply_read_back"),
    ),
    Mutant(
        "camera_path_tangent_sign",
        "npga/camera_path.py",
        "h00 * values[i] + h10 * h * tangent(i)",
        "h00 * values[i] - h10 * h * tangent(i)",
        "spline leaves a keyframe against its tangent",
        ("tests/test_camera_path.py", "-k", "straight_track"),
    ),
    Mutant(
        "fov_horizontal",
        "npga/geometry.py",
        "centred_intrinsics(0.5 * height / math.tan",
        "centred_intrinsics(0.5 * width / math.tan",
        "field of view taken as horizontal",
        (GEOMETRY, "-k", "field_of_view"),
    ),
    Mutant(
        "rig_opencv_pixel_centre",
        "npga/data/rig.py",
        "cams[name] = _camera_from_fields(name, get, str(path), pixel_shift=0.5)",
        "cams[name] = _camera_from_fields(name, get, str(path), pixel_shift=0.0)",
        "OpenCV principal point taken in npga's pixel convention",
        ("tests/test_import_rig.py", "-k", "same_cameras"),
    ),
    Mutant(
        "mouth_weight_inverted",
        "npga/avatar/mouth.py",
        "t = ((1.0 - r) / FADE).clamp(0.0, 1.0)",
        "t = ((r - 1.0) / FADE).clamp(0.0, 1.0)",
        "the mouth network acts everywhere but the mouth",
        ("tests/test_mouth.py",),
    ),
    Mutant(
        "mouth_code_unclamped",
        "npga/avatar/mouth.py",
        "z = z_ex.clamp(self.code_low, self.code_high)",
        "z = z_ex",
        "the mouth network extrapolates beyond the training codes",
        ("tests/test_mouth.py",),
    ),
    Mutant(
        "mouth_additive_without_neutral",
        "npga/avatar/mouth.py",
        "return h[0] + (h[1:] - h[0]).sum(0)",
        "return (h[1:] - h[0]).sum(0)",
        "the additive mouth network forgets its value at the neutral code",
        ("tests/test_mouth.py", "-k", "additive"),
    ),
    Mutant(
        "flame_mouth_under_the_chin",
        "npga/headmodel/flame.py",
        "near &= v[:, 1] >= v[near, 1].max() - 0.03 * extent[1]",
        "near &= v[:, 1] <= v[near, 1].min() + 0.03 * extent[1]",
        "FLAME's mouth found where the jaw's weight fades under the chin",
        ("tests/test_mouth.py",),
    ),
    Mutant(
        "mouth_under_the_size_priors",
        "npga/avatar/deform.py",
        "residuals = nets.detail(x_c.detach(), features, code)  # (N, 14), under the losses' size priors",
        "residuals = nets.detail(x_c.detach(), features, code) + (0 if nets.detail.mouth is None else "
        "nets.detail.mouth(x_c.detach(), code))",
        "the mouth's residuals held near zero by the priors meant for the shared network's",
        ("tests/test_mouth.py",),
    ),
    Mutant(
        "mouth_rate_not_decayed",
        "npga/train/trainer.py",
        'mouth["lr"] = self.cfg.lr.mouth * self.cfg.lr.mouth_final**frac',
        'mouth["lr"] = self.cfg.lr.mouth',
        "the mouth network keeps its first, large rate to the end",
        ("tests/test_train.py::test_the_mouth_network_s_rate_decays_to_its_final_factor_and_no_other_network_s_does",),
    ),
    Mutant(
        "mouth_window_not_weighted",
        "npga/train/trainer.py",
        "(loss * share / (k * len(batch.viewmats)))",
        "(loss / (k * len(batch.viewmats)))",
        "the mouth phase's window weighs as much as a frame: with the joint steps' Adam moments, steps far too large",
        ("tests/test_mouth_phase.py::test_a_mouth_step_follows_the_frame_loss_over_the_mouth_s_window",),
    ),
    Mutant(
        "mouth_window_shifted_wrong_way",
        "npga/train/mouth_phase.py",
        "out[0, 2] -= x0",
        "out[0, 2] += x0",
        "the window's intrinsics move the principal point the wrong way: the window renders another part of the frame",
        ("tests/test_mouth_phase.py::test_a_window_rendered_through_shifted_intrinsics_is_that_window_of_the_frame",),
    ),
    Mutant(
        "mouth_phase_means_over_the_kept",
        "npga/train/mouth_phase.py",
        "terms[name] = terms[name] * (len(g.means) / n_gaussians)",
        "terms[name] = terms[name]",
        "the mouth phase's per-Gaussian priors averaged over the Gaussians it drew, not the avatar's",
        ("tests/test_mouth_phase.py", "-k", "fewer"),
    ),
    Mutant(
        "mouth_phase_kept_by_centres",
        "npga/render/projection.py",
        "r = torch.ceil(MAX_EXTENT_SIGMAS * sigma)",
        "r = torch.zeros_like(sigma)",
        "the mouth phase keeps the Gaussians whose centres reach a window, not their footprints",
        ("tests/test_mouth_phase.py", "-k", "fewer"),
    ),
    Mutant(
        "may_draw_on_axis_stretch",
        "npga/render/projection.py",
        "stretch = f * rz * torch.sqrt(1.0 + (x * x + y * y) * rz * rz)",
        "stretch = f * rz",
        "the footprint bound forgets that the projection stretches Gaussians off the optical axis",
        ("tests/test_render.py", "-k", "may_draw"),
    ),
    Mutant(
        "fleet_failure_not_recorded",
        "npga/commands/fleet.py",
        "status.end(stage, FAILED, time.monotonic() - start, error=one_line(e))",
        "status.end(stage, FAILED, time.monotonic() - start)",
        "a participant's failing stage leaves no error in its status file (the report and the exit say nothing)",
        ("tests/test_fleet.py", "-k", "debug_fleet"),
    ),
    Mutant(
        "fleet_reruns_done_stages",
        "npga/commands/fleet.py",
        "            if stage_done(layout, pid, stage, status):\n                continue\n",
        "",
        "a participant's job runs every stage again, done or not",
        ("tests/test_fleet.py", "-k", "debug_fleet"),
    ),
    Mutant(
        "fleet_training_restarts",
        "npga/commands/fleet.py",
        "resume=bool(RunLayout(train.out).list_checkpoints())",
        "resume=False",
        "a requeued participant's training starts afresh instead of resuming from its checkpoint",
        ("tests/test_fleet.py", "-k", "preempted"),
    ),
    Mutant(
        "fleet_slurm_array_unbounded",
        "npga/fleet/executors.py",
        '"array_parallelism": opts.max_parallel or n_jobs,',
        '"array_parallelism": n_jobs,',
        "--max-parallel does not reach the job array's %N",
        ("tests/test_fleet.py", "-k", "slurm"),
    ),
    Mutant(
        "frames_per_step_unweighted",
        "npga/train/trainer.py",
        "(loss / k).backward()",
        "loss.backward()",
        "a step of K frames follows the sum of their gradients, not the mean",
        ("tests/test_distributed.py", "-k", "mean_of"),
    ),
    Mutant(
        "ranks_densify_on_their_own_statistics",
        "npga/train/trainer.py",
        "self.world.sum_([p.grad for p in params] + added + [totals], params + added + [totals])",
        "self.world.sum_([p.grad for p in params] + [totals], params + [totals])",
        "each rank grows and prunes from the screen-space gradients of its own frames",
        ("tests/test_distributed.py", "-k", "two_ranks"),
    ),
)


def copy_tree(dst: Path, tests_from: Path | None = None) -> None:
    for name in COPIED:
        src = tests_from if name == "tests" and tests_from is not None else ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        else:
            shutil.copy2(src, dst / name)


def apply(mutant: Mutant, root: Path) -> None:
    path = root / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"{mutant.name}: {mutant.old!r} occurs {count} times in {mutant.file} (must be once)")
    path.write_text(text.replace(mutant.old, mutant.new))


def run_pytest(root: Path, args: tuple[str, ...], timeout: float) -> tuple[str, float, str]:
    """('passed' | 'failed' | 'timeout', seconds, last lines of output)."""
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    status = "passed" if proc.returncode == 0 else "failed" if proc.returncode == 1 else f"error {proc.returncode}"
    return status, time.perf_counter() - start, tail


def check_imports_the_copy(root: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", "import npga; print(npga.__file__)"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(out).resolve().is_relative_to(root.resolve()):
        raise RuntimeError(f"the copy imports npga from {out}, not from {root}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", default="", help="only mutants whose name contains this")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per test run")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run every selected test on the unmutated copy (doubles the time; `make test` "
        "already shows they pass on main)",
    )
    parser.add_argument("--tests-from", type=Path, help="another tests/ folder (e.g. an older suite: `before`)")
    parser.add_argument("--whole-files", action="store_true", help="run each mutant's test files whole (no -k)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "mutants.json")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if args.k in m.name]
    if args.whole_files:
        mutants = [dataclasses.replace(m, tests=tuple(t for t in m.tests if t.endswith(".py"))) for m in mutants]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="npga-mutants-") as tmp:
        clean = Path(tmp) / "clean"
        clean.mkdir()
        copy_tree(clean, args.tests_from)
        check_imports_the_copy(clean)
        for m in mutants:  # every mutant still applies
            text = (clean / m.file).read_text()
            if text.count(m.old) != 1:
                raise ValueError(f"{m.name}: {m.old!r} occurs {text.count(m.old)} times in {m.file} (must be once)")
        baseline = None
        if args.baseline:
            selections = sorted({m.tests for m in mutants})
            failing = []
            for sel in selections:
                status, seconds, tail = run_pytest(clean, sel, args.timeout)
                print(f"baseline {' '.join(sel)}: {status} ({seconds:.0f} s)", flush=True)
                if status != "passed":
                    failing.append({"tests": list(sel), "status": status, "output": tail})
            baseline = {"failing": failing, "seconds": time.perf_counter() - start}
            if failing:
                print("the unmutated code fails some of the selected tests; their mutants do not count", flush=True)
        results = []
        for m in mutants:
            root = Path(tmp) / m.name
            root.mkdir()
            copy_tree(root, args.tests_from)
            apply(m, root)
            status, seconds, tail = run_pytest(root, m.tests, args.timeout)
            killed = status != "passed"
            if baseline and any(f["tests"] == list(m.tests) for f in baseline["failing"]):
                killed = False
                status = "invalid (tests fail unmutated)"
            results.append({**asdict(m), "status": status, "killed": killed, "seconds": seconds, "output": tail})
            print(
                f"{'KILLED  ' if killed else 'SURVIVED'} {m.name:32s} {seconds:6.1f} s  {' '.join(m.tests)}", flush=True
            )
            shutil.rmtree(root)
    total = time.perf_counter() - start
    killed = sum(r["killed"] for r in results)
    print(f"\nkilled {killed}/{len(results)} in {total:.0f} s")
    survivors = [r["name"] for r in results if not r["killed"]]
    if survivors:
        print("survivors: " + ", ".join(survivors))
    print("\n| mutant | description | killed by | result | s |\n|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['name']} | {r['description']} | `{' '.join(r['tests'])}` | "
            f"{'killed' if r['killed'] else 'SURVIVED'} | {r['seconds']:.0f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"killed": killed, "total": len(results), "seconds": total, "baseline": baseline, "mutants": results},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
