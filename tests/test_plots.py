import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from npga.io.plots import plot_training_curves, read_log


def test_training_curve_png_from_a_jsonl_log(tmp_path):
    log = tmp_path / "train.jsonl"
    lines = [
        json.dumps({"step": s, "loss": 1 / (s + 1), "loss/l1": 0.5 / (s + 1), "psnr": 10 + s / 10}) for s in range(50)
    ]
    lines.append(json.dumps({"step": 49, "val_psnr": 14.0}))
    log.write_text("\n".join(lines) + '\n{"step": 50, "lo')  # a torn last line is skipped
    assert len(read_log(log)) == 51
    png = plot_training_curves(log, tmp_path / "curves.png", title="demo")
    import imageio.v2 as imageio

    img = imageio.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 600 and np.asarray(img).std() > 10


def test_empty_log_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no training records"):
        plot_training_curves(tmp_path / "empty.jsonl", tmp_path / "x.png")


def test_importing_npga_leaves_the_matplotlib_backend_alone(tmp_path):
    script = textwrap.dedent(f"""
        import importlib, pkgutil
        import matplotlib
        before = dict.__getitem__(matplotlib.rcParams, "backend")
        import npga
        for m in pkgutil.walk_packages(npga.__path__, "npga."):
            importlib.import_module(m.name)
        from npga.io.plots import plot_training_curves
        log = {str(tmp_path / "log.jsonl")!r}
        open(log, "w").write('{{"step": 1, "loss": 0.5, "psnr": 20}}\\n{{"step": 2, "loss": 0.25, "psnr": 22}}\\n')
        plot_training_curves(log, {str(tmp_path / "c.png")!r})
        after = dict.__getitem__(matplotlib.rcParams, "backend")
        import sys
        assert after is before or after == before, (before, after)
        assert "matplotlib.pyplot" not in sys.modules
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "c.png").stat().st_size > 0
