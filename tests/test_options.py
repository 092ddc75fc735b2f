"""Every option is checked before a command does any work: a bad value is one line naming the option (as its flag),
a non-zero exit status, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from npga import cli

# (command line, the start of the error after "npga SUB: error: "); FILE is an existing file, DIR a folder
BAD = [
    ("train --steps 0", "--steps must be at least 1, got 0"),
    ("train --steps -5", "--steps must be at least 1"),
    ("train --distill.steps -1", "--distill.steps must be at least 0, got -1"),
    ("train --checkpoint-every 0", "--checkpoint-every must be at least 1"),
    ("train --knn 0", "--knn must be at least 1"),
    ("train --log-every 0", "--log-every must be at least 1"),
    ("train --keep-checkpoints 0", "--keep-checkpoints must be at least 1"),
    ("train --cameras-per-step 0", "--cameras-per-step must be at least 1"),
    ("train --height 0", "--height must be at least 1"),
    ("train --seed -1", "--seed must be at least 0"),
    ("train --lr.means nan", "--lr.means must be a finite number, got nan"),
    ("train --loss.ssim inf", "--loss.ssim must be a finite number"),
    ("train --background 1 1 2", "--background must be at least 0 and at most 1, got (1.0, 1.0, 2.0)"),
    ("train --densify.prune-opa 1.5", "--densify.prune-opa must be at least 0 and at most 1"),
    ("train --init.opacity 0", "--init.opacity must be above 0 and at most 1"),
    ("train --distill.batch-size 0", "--distill.batch-size must be at least 1"),
    ("train --out ''", "--out is empty"),
    ("train --out FILE", "--out FILE is a file, not a folder"),
    ("train --out FILE/run", "--out FILE/run: "),
    ("distill --distill.steps -1", "--distill.steps must be at least 0"),
    ("prepare --capture c --height 0", "--height must be at least 1"),
    ("prepare --capture c --out FILE", "--out FILE is a file"),
    ("synth --out ''", "--out is empty"),
    ("synth --out x --fps 0", "--fps must be above 0"),
    ("synth --out x --frames 0", "--frames must be at least 1"),
    ("synth --out x --jobs -1", "--jobs must be at least 0"),
    ("import-rig --videos v --calibration c.yml --out x --fps 0", "--fps must be above 0"),
    ("eval run --every 0", "--every must be at least 1"),
    ("eval run --out FILE", "--out FILE is a file"),
    ("render run --fps 0", "--fps must be above 0"),
    ("render run --height 1", "--height must be at least 2"),
    ("render run --orbit-frames 0", "--orbit-frames must be at least 1"),
    ("render run --camera-path orbit --frames 100000000 --out o.mp4", "--frames must be at least 1 and at most 30000"),
    ("render run --out ''", "--out is empty"),
    ("export run --ply ''", "--ply is empty"),
    ("submit run --out DIR", "--out DIR is a folder"),
    ("track --avatar run --video v.mp4 --out DIR", "--out DIR is a folder"),
    ("track --avatar run --video v.mp4 --fov 0", "--fov must be above 0 and at most 180"),
    ("track --avatar run --video v.mp4 --track.pyramid 0 1", "--track.pyramid must be above 0 and at most 1"),
    ("track --avatar run --video v.mp4 --track.min-iou 2", "--track.min-iou must be at least 0 and at most 1"),
    ("reenact --avatar run --out o --fov 200", "--fov must be above 0 and at most 180"),
    ("reenact --avatar run --out o --fps 0", "--fps must be above 0"),
    ("view run --port 70000", "--port must be at least 0 and at most 65535, got 70000"),
    ("view run --port -1", "--port must be at least 0 and at most 65535"),
    ("view run --host no-such-host.invalid", "--host 'no-such-host.invalid' is not a known host name or address"),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty current folder but for a file FILE and a folder DIR: nothing else may appear in it."""
    (tmp_path / "FILE").write_text("not a folder")
    (tmp_path / "DIR").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _args(line: str) -> list[str]:
    return [a.strip("'") for a in line.split()]


@pytest.mark.parametrize(("line", "message"), BAD, ids=[line for line, _ in BAD])
def test_a_bad_value_is_refused_in_one_line_before_anything_is_written(workdir, line, message, monkeypatch):
    monkeypatch.delenv("NPGA_DEBUG", raising=False)
    args = _args(line)
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    text = str(e.value.code)
    assert text.startswith(f"npga {args[0]}: error: {message}"), text
    assert "\n" not in text
    assert sorted(p.name for p in workdir.rglob("*")) == ["DIR", "FILE"]


def test_the_exit_status_is_not_zero_and_no_traceback(workdir):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "npga.cli", "train", "--steps", "0"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 1
    assert proc.stderr == "npga train: error: --steps must be at least 1, got 0\n"
    assert sorted(p.name for p in workdir.iterdir()) == ["DIR", "FILE"]
