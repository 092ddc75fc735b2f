"""The documentation stays true: its `npga` command lines parse, its relative links and anchors resolve.

Commands are parsed as `npga.cli.main` parses them (preset, then the subcommand's tyro `Config`), without
running them; a renamed option or subcommand fails here instead of in a reader's shell.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
import tyro

from npga import cli
from npga.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def shell_lines(body: str) -> list[str]:
    """The logical lines of a shell block: continuations joined, `$VAR` / `${VAR}` replaced by the name."""
    lines, current = [], ""
    for raw in body.splitlines():
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        lines.append(current + raw)
        current = ""
    if current:
        lines.append(current)
    return [re.sub(r"\$\{?(\w+)\}?", r"\1", line) for line in lines]


def npga_args(line: str) -> list[str] | None:
    """The arguments after `npga` (also `.venv/bin/npga`, after `VAR=value` prefixes, and after `-m npga.cli` of a
    `torchrun` line), or None for other lines."""
    if re.match(r"\s*(\w+=\S*\s+)*(\S*/)?torchrun\s.*\s-m\s+npga\.cli(\s|$)", line):
        words = shlex.split(line, comments=True)
        return words[words.index("npga.cli") + 1 :]
    if not re.match(r"\s*(\w+=\S*\s+)*(\S*/)?npga(\s|$)", line):
        return None
    words = shlex.split(line, comments=True)
    while re.fullmatch(r"\w+=\S*", words[0]):
        words = words[1:]
    return words[1:]


def doc_commands() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every `npga` command line in a shell block of the docs."""
    found = []
    for doc in DOCS:
        for language, body in fenced_blocks(doc.read_text()):
            if language not in SHELL_BLOCKS:
                continue
            for line in shell_lines(body):
                args = npga_args(line)
                if args is not None:
                    found.append((f"{doc.relative_to(ROOT)}: {line.strip()}", args))
    return found


@cache
def command_module(name: str):
    return importlib.import_module(cli.SUBCOMMANDS[name][0])


def parse_error(args: list[str]) -> str | None:
    """Why `npga ARGS` would not parse, or None. Presets are read relative to the repository root."""
    if not args or args[0] not in cli.SUBCOMMANDS:
        return f"unknown subcommand {args[:1]}"
    name, rest = args[0], args[1:]
    if "--help" in rest or "-h" in rest:
        return None
    module = command_module(name)
    preset, rest = cli._pop_config_path(rest)
    try:
        default = load_config(module.Config, ROOT / preset) if preset else None
    except (OSError, ValueError) as e:
        return str(e)
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            tyro.cli(module.Config, args=rest, default=default, prog=f"npga {name}")
    except SystemExit:
        lines = [line.strip(" │╭╰─-") for line in output.getvalue().splitlines()]
        return " / ".join(line for line in lines if line)[:600]
    return None


COMMANDS = doc_commands()


def test_the_docs_show_every_subcommand():
    shown = {args[0] for _, args in COMMANDS if args}
    assert set(cli.SUBCOMMANDS) <= shown, f"no example of {sorted(set(cli.SUBCOMMANDS) - shown)}"


@pytest.mark.parametrize("where, args", COMMANDS, ids=[where for where, _ in COMMANDS])
def test_command_line_parses(where, args):
    error = parse_error(args)
    assert error is None, f"{where}\n{error}"


def test_a_wrong_option_or_subcommand_is_caught():
    assert parse_error(["eval", "runs/demo", "--every", "2"]) is None
    assert parse_error(["eval", "runs/demo", "--evry", "2"]) is not None
    assert parse_error(["evaluate", "runs/demo"]) is not None
    assert parse_error(["train", "--config", "configs/demo.yaml", "--capture", "d", "--out", "r"]) is None
    assert parse_error(["train", "--config", "configs/nope.yaml", "--capture", "d", "--out", "r"]) is not None


def test_shell_lines_are_read_as_a_shell_would():
    body = "P=/data/443  # a participant\nnpga prepare --capture $P \\\n    --height 802  # once\nmake demo\n"
    lines = shell_lines(body)
    assert [npga_args(line) for line in lines] == [None, ["prepare", "--capture", "P", "--height", "802"], None]
    assert npga_args("OMP_NUM_THREADS=1 .venv/bin/npga view runs/demo") == ["view", "runs/demo"]
    assert npga_args("torchrun --nproc-per-node 4 -m npga.cli train --steps 9") == ["train", "--steps", "9"]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = FENCE.sub("", doc.read_text())
    seen: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#+\s+(.*)$", text, re.M):
        anchor = github_anchor(heading)
        n = seen.get(anchor, 0)
        seen[anchor] = n + 1
        result.add(anchor if n == 0 else f"{anchor}-{n}")
    return result


def links(doc: Path) -> list[str]:
    """Targets of `[text](target)` and `![alt](target)` outside code."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", doc.read_text()))
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


def broken_links(doc: Path) -> list[str]:
    broken = []
    for target in links(doc):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc):
    broken = broken_links(doc)
    assert not broken, f"{doc.relative_to(ROOT)}: no such file or heading: {broken}"


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "b.md").write_text("# The `avatar` file: format\n## Keys\n## Keys\n")
    doc = tmp_path / "a.md"
    doc.write_text(
        "[ok](b.md) [ok](b.md#the-avatar-file-format) [ok](b.md#keys-1) [ok](#top) ![web](https://x.y/z.png)\n"
        "# Top\n[gone](c.md) [gone](b.md#nothing) `[code](not-a-link.md)`\n"
    )
    assert broken_links(doc) == ["c.md", "b.md#nothing"]


def python_imports() -> list[tuple[str, str]]:
    """(where, statement) of every npga import in a python block of the docs."""
    found = []
    for doc in DOCS:
        for language, body in fenced_blocks(doc.read_text()):
            if language != "python":
                continue
            for line in body.splitlines():
                statement = line.split("#")[0].strip()
                if re.match(r"(from|import)\s+(npga|data_tools)\b", statement):
                    found.append((f"{doc.relative_to(ROOT)}: {statement}", statement))
    return found


IMPORTS = python_imports()


@pytest.mark.parametrize("where, statement", IMPORTS, ids=[where for where, _ in IMPORTS])
def test_python_examples_import_what_exists(where, statement):
    exec(statement, {})  # a moved or renamed module or name fails here, not in a reader's session
