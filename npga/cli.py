"""The `npga` entry point: dispatch to one command module per subcommand, nothing else.

`npga SUB [--config preset.yaml] [--field value ...]`: the preset fills the subcommand's config, the command
line overrides it. Each module in `npga.commands` has a tyro `Config` dataclass and `main(cfg)`; modules are
imported only when chosen, so `npga --help` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import tyro

from npga.config import check_options, load_config

# subcommand -> (module with `Config` and `main`, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("npga.commands.synth", "write a synthetic multi-view capture (no download)"),
    "import-rig": ("npga.commands.import_rig", "a capture from calibrated per-camera videos (OpenCV, JSON, COLMAP)"),
    "import-tracking": ("npga.commands.import_tracking", "MonoNPHM tracking of a sequence as the capture's tracking"),
    "prepare": ("npga.commands.prepare", "decode a capture's videos once into a frame cache"),
    "distill": ("npga.commands.distill", "distill the forward deformation field"),
    "train": ("npga.commands.train", "train an avatar on a capture; writes RUN/avatar.npga"),
    "eval": ("npga.commands.eval", "PSNR / SSIM / LPIPS of an avatar on its held-out views"),
    "render": ("npga.commands.render", "orbit and expression videos of an avatar"),
    "submit": ("npga.commands.submit", "NeRSemble NVS benchmark submission zip from an avatar"),
    "export": ("npga.commands.export", "an avatar posed for a frame as a 3DGS PLY or .splat file"),
    "track": ("npga.commands.track", "expression codes and head pose from a monocular video of a face"),
    "reenact": ("npga.commands.reenact", "drive an avatar with codes tracked from a video (self / cross)"),
    "view": ("npga.commands.view", "look at an avatar in the browser (viser): turn it, play it, move its expression"),
    "fleet": (
        "npga.commands.fleet",
        "many participants: plan, run (Slurm / local / debug via submitit), status, report",
    ),
}


def _usage() -> str:
    width = max((len(n) for n in SUBCOMMANDS), default=0)
    lines = ["usage: npga SUBCOMMAND [--config PRESET.yaml] [options]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "`npga SUBCOMMAND --help` lists the options of one subcommand."]
    return "\n".join(lines)


def _pop_config_path(args: list[str]) -> tuple[str | None, list[str]]:
    """Split `--config PATH` / `--config=PATH` out of the arguments."""
    rest: list[str] = []
    path = None
    it = iter(args)
    for a in it:
        if a == "--config":
            path = next(it, None)
            if path is None:
                raise SystemExit("npga: --config needs a path")
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        else:
            rest.append(a)
    return path, rest


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        raise SystemExit(f"npga: unknown subcommand {name!r}\n\n{_usage()}")
    module_name, help_ = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    preset, rest = _pop_config_path(rest)
    try:
        default = load_config(module.Config, preset) if preset else None
    except (OSError, ValueError) as e:
        raise SystemExit(f"npga {name}: {e}") from None
    cfg = tyro.cli(module.Config, args=rest, default=default, prog=f"npga {name}", description=help_)
    try:
        check_options(cfg)  # every option's value, before the command does any work or writes any file
    except ValueError as e:
        raise SystemExit(f"npga {name}: error: {e}") from None
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        module.main(cfg)
    except KeyboardInterrupt:
        print(f"npga {name}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        # Bad input (a file, a value) or a disk that failed us: one clear line, no traceback. NPGA_DEBUG=1 shows
        # the traceback.
        if os.environ.get("NPGA_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            message = os_error_line(e)
        raise SystemExit(f"npga {name}: error: {message}") from None


def os_error_line(e: OSError) -> str:
    """A failed file operation as one line: the path, the problem, and on a full disk how much is free there."""
    if e.filename is None:
        return str(e)
    where = str(e.filename) if e.filename2 is None else f"{e.filename} -> {e.filename2}"
    line = f"{where}: {e.strerror or e}"
    if e.errno == errno.ENOSPC:
        folder = next((p for p in Path(e.filename).absolute().parents if p.is_dir()), Path("/"))
        line += f" ({shutil.disk_usage(folder).free / 1e6:.0f} MB free on the disk of {folder})"
    return line


if __name__ == "__main__":
    main()
