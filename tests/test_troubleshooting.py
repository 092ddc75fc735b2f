"""docs/troubleshooting.md stays true: every message it lists is one the code raises, and every error class and
kind of file the loaders name is listed. A new message is documented by adding a table row; nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from npga.io import untrusted

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "troubleshooting.md"
# A table row's first cell as a code span (single or double backticks); `…` marks the parts that vary.
MESSAGE = re.compile(r"^\| (``? ?)(.+?) ?\1 \|", re.M)
MIN_CHUNK = 6  # shorter fixed parts (": ", " (") say nothing about which message it is


def documented_messages() -> list[str]:
    return [m.group(2) for m in MESSAGE.finditer(DOC.read_text())]


def source_text() -> str:
    """All of npga's code as its messages read: implicitly concatenated string literals joined (a message split
    over lines is whole), f-strings' doubled braces single."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "npga").rglob("*.py")))
    return re.sub(r"\"\s*\n\s*f?\"", "", text).replace("{{", "{").replace("}}", "}")


def fixed_parts(message: str) -> list[str]:
    return [c.strip() for c in message.split("…") if len(c.strip()) >= MIN_CHUNK]


def test_the_page_lists_messages():
    assert len(documented_messages()) >= 40


@pytest.mark.parametrize("message", documented_messages())
def test_every_documented_message_is_raised_by_the_code(message):
    source = source_text()
    parts = fixed_parts(message)
    assert parts, f"{message!r} has no fixed words to find it by"
    missing = [p for p in parts if p not in source]
    assert not missing, f"docs/troubleshooting.md lists {message!r}, but no code holds {missing}"


def test_every_loader_error_class_and_file_kind_is_documented():
    text = DOC.read_text()
    classes = [n for n, v in vars(untrusted).items() if isinstance(v, type) and issubclass(v, ValueError)]
    assert {"CorruptFile", "UnsafeFile", "NewerFormat"} <= set(classes)
    source = source_text()
    kinds = set(re.findall(r"^(?:KIND|CHECKPOINT) = \"(.+)\"$", source, re.M))
    kinds |= set(re.findall(r"(?:load_torch|load_npz|load_npy)\([^,()]+, \"([^\"]+)\"", source))
    assert len(kinds) >= 6, kinds
    undocumented = [c for c in classes if f"`{c}`" not in text] + [k for k in sorted(kinds) if f"| {k} |" not in text]
    assert not undocumented, f"add these to docs/troubleshooting.md: {undocumented}"
