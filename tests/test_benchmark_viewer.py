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
    load = json.loads(out.read_text())["load"]
    assert load["error"] is None
    assert len(load["fps"]) == 2 and min(load["fps"]) > 0
    assert math.isfinite(load["wait_max_s"]), "a camera message was never followed by an image"
    assert load["churned_tabs"] >= 1  # tabs dropped mid-frame meanwhile
    assert (load["tabs_left_in_app"], load["clients_left_in_viser"], load["threads_left"]) == (0, 0, [])
    assert "answered frames / s per tab" in capsys.readouterr().out
