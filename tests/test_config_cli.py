"""Presets, command-line overrides and the `npga` dispatch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import pytest

from npga import cli
from npga.config import Range, check_options, from_dict, load_config, save_config


@dataclasses.dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    """Learning rate."""
    sizes: tuple[int, ...] = (1, 2)
    """Layer sizes."""


@dataclasses.dataclass(frozen=True)
class Outer:
    out: Path = Path("runs/x")
    """Output folder."""
    steps: int = 10
    """Number of steps."""
    mode: Literal["a", "b"] = "a"
    """A choice."""
    seed: int | None = None
    """Optional seed."""
    inner: Inner = Inner()
    """Nested settings."""


def test_yaml_round_trip_keeps_types(tmp_path):
    cfg = Outer(out=Path("somewhere"), steps=3, mode="b", seed=4, inner=Inner(lr=0.5, sizes=(3, 4, 5)))
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == cfg


def test_unknown_or_bad_keys_name_the_file_and_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("steps: 3\ninner:\n  lrr: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml.inner.*lrr"):
        load_config(Outer, p)
    with pytest.raises(ValueError, match="not one of"):
        from_dict(Outer, {"mode": "c"})
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(Outer, tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("steps: abc", r"steps: expected int, got 'abc'"),
        ("steps: 3.5", r"steps: expected int, got 3.5"),
        ("steps: true", r"steps: expected int, got True"),
        ("out: 3", r"out: expected a path, got 3"),
        ("inner:\n  lr: fast", r"inner.lr: expected float, got 'fast'"),
        ("inner:\n  sizes: 4", r"inner.sizes: expected a list, got 4"),
        ("inner: 5", r"inner: expected a mapping for Inner, got 5"),
    ],
)
def test_a_preset_value_of_the_wrong_type_is_refused_before_the_command_runs(tmp_path, monkeypatch, text, message):
    seen = []
    module = type("M", (), {"Config": Outer, "main": staticmethod(seen.append)})
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", ("m", "a fake subcommand"))
    preset = tmp_path / "p.yaml"
    preset.write_text(text + "\n")
    with pytest.raises(SystemExit, match=rf"npga fake: .*p.yaml.{message}"):
        cli.main(["fake", "--config", str(preset)])
    assert seen == []


def test_a_preset_value_out_of_range_names_the_option():
    @dataclasses.dataclass(frozen=True)
    class Checked:
        steps: Annotated[int, Range(1)] = 1
        rate: float = 0.1
        inner: Inner = Inner()

    check_options(Checked())
    with pytest.raises(ValueError, match="--steps must be at least 1, got 0"):
        check_options(Checked(steps=0))
    with pytest.raises(ValueError, match="--rate must be at least 0, got -0.1"):
        check_options(Checked(rate=-0.1))
    with pytest.raises(ValueError, match=r"--inner.sizes must be at least 0, got \(1, -2\)"):
        check_options(Checked(inner=Inner(sizes=(1, -2))))


def test_cli_preset_then_command_line_override(tmp_path, monkeypatch):
    seen = []
    module = type("M", (), {"Config": Outer, "main": staticmethod(seen.append)})
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", ("m", "a fake subcommand"))
    preset = tmp_path / "p.yaml"
    preset.write_text("steps: 7\nmode: b\ninner:\n  lr: 0.25\n")
    cli.main(["fake", "--config", str(preset), "--steps", "9"])
    assert seen[-1] == Outer(steps=9, mode="b", inner=Inner(lr=0.25))
    cli.main(["fake"])
    assert seen[-1] == Outer()


def test_cli_reports_bad_input_without_traceback(monkeypatch):
    def fail(cfg):
        raise ValueError("capture/calibration/camera_params.json: malformed")

    module = type("M", (), {"Config": Outer, "main": staticmethod(fail)})
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: module)
    monkeypatch.setitem(cli.SUBCOMMANDS, "fake", ("m", "a fake subcommand"))
    monkeypatch.delenv("NPGA_DEBUG", raising=False)
    with pytest.raises(SystemExit, match="npga fake: error: .*camera_params.json"):
        cli.main(["fake"])
    with pytest.raises(SystemExit, match="unknown subcommand"):
        cli.main(["no-such-thing"])


def test_every_registered_subcommand_has_a_config_and_function():
    import importlib

    for name, (module_name, help_) in cli.SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        assert module_name == f"npga.commands.{module_name.rsplit('.', 1)[1]}", name
        assert dataclasses.is_dataclass(module.Config), name
        assert callable(module.main), name
        assert help_, name


# command -> (its required fields as arguments and in a preset, its default precision); reenact joins when it
# takes RuntimeOptions
RUNTIME_COMMANDS = {
    "render": (["run"], {"avatar": "run"}, "auto"),
    "view": (["run"], {"avatar": "run"}, "auto"),
    "eval": (["run"], {"avatar": "run"}, "float32"),
    "reenact": (["--avatar", "run", "--out", "o"], {"avatar": "run", "out": "o"}, "auto"),
    "track": (["--avatar", "run", "--video", "v.mp4"], {"avatar": "run", "video": "v.mp4"}, "float32"),
    "export": (["run", "--ply", "x.ply"], {"avatar": "run", "ply": "x.ply"}, "float32"),
    "submit": (["run", "--out", "s.zip"], {"avatar": "run", "out": "s.zip"}, "float32"),
}


@pytest.mark.parametrize(
    ("name", "args", "required", "precision"),
    [(n, *v) for n, v in RUNTIME_COMMANDS.items()],
    ids=list(RUNTIME_COMMANDS),
)
def test_device_and_precision_flags_fill_the_shared_runtime_options(
    name, args, required, precision, monkeypatch, tmp_path
):
    import importlib

    import yaml

    from npga.commands.common import RuntimeOptions

    seen = []
    monkeypatch.setattr(importlib.import_module(cli.SUBCOMMANDS[name][0]), "main", seen.append)
    cli.main([name, *args])
    assert seen[-1].runtime == RuntimeOptions(device="auto", precision=precision)
    cli.main([name, *args, "--device", "cpu", "--precision", "bfloat16"])
    assert seen[-1].runtime == RuntimeOptions(device="cpu", precision="bfloat16")
    with pytest.raises(SystemExit):
        cli.main([name, *args, "--runtime.device", "cpu"])  # the flags carry no prefix
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({**required, "runtime": {"device": "cpu"}}))
    cli.main([name, "--config", str(preset)])  # a preset naming only the device keeps the precision
    assert seen[-1].runtime == RuntimeOptions(device="cpu", precision=precision)


def test_a_nested_mapping_fills_the_fields_default_not_the_class_defaults():
    @dataclasses.dataclass(frozen=True)
    class WithOwnDefault:
        inner: Inner = Inner(lr=0.5)
        """Nested settings with a default of their own."""

    assert from_dict(WithOwnDefault, {"inner": {"sizes": [7]}}) == WithOwnDefault(Inner(lr=0.5, sizes=(7,)))
    assert from_dict(Outer, {"inner": {"sizes": [7]}}) == Outer(inner=Inner(sizes=(7,)))
