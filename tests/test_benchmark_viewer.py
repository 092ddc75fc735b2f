"""benchmarks/viewer.py --parts load: tabs speaking viser's protocol move cameras and sliders on one viewer."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest

from npga.avatar.file import save_avatar
from tests.helpers.viewer_avatar import vivid_avatar

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "viewer.py"


@pytest.mark.slow
def test_every_tab_keeps_being_answered_and_none_leaves_anything_behind(tmp_path, monkeypatch, capsys):
    avatar = save_avatar(vivid_avatar(), tmp_path / "vivid.npga")
    out = tmp_path / "viewer.json"
    argv = ["viewer.py", "--avatar", str(avatar), "--parts", "load", "--clients", "2", "--seconds", "3"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(out)])
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # the script imports its sibling chromium.py
    runpy.run_path(str(SCRIPT), run_name="__main__")
    runs = json.loads(out.read_text())["load"]
    assert [run["path"] for run in runs] == ["server", "splats"]
    for run in runs:
        assert run["error"] is None, run["path"]
        assert len(run["answers_per_s"]) == 2 and min(run["answers_per_s"]) > 0, run["path"]
        assert math.isfinite(run["wait_max_s"]), f"{run['path']}: an ask was never answered"
        assert run["churned_tabs"] >= 1  # tabs dropped mid-frame meanwhile
        assert (run["tabs_left_in_app"], run["clients_left_in_viser"], run["threads_left"]) == (0, 0, []), run["path"]
    assert "ask -> next image" in capsys.readouterr().out
