"""The dead-letter tables of docs/concepts.md name every reason the decoder and label reader
raise."""

from __future__ import annotations

import re

import streams.serialization.codec
from streams.models.labels import LABEL_REASONS
from streams.serialization.codec import REASONS
from streams.settings import REPO_ROOT


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end != -1 else None]


def test_concepts_page_lists_every_dead_letter_reason() -> None:
    section = _section((REPO_ROOT / "docs" / "concepts.md").read_text(), "### Dead letters")
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = [name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])]
    assert len(documented) == len(set(documented)), "a reason is listed twice"
    # Later stages may document reasons of their own (e.g. ``late`` from features).
    assert set(REASONS) <= set(documented)
    assert set(LABEL_REASONS) <= set(documented)


def test_codec_docstring_lists_every_reason() -> None:
    doc = " ".join((streams.serialization.codec.__doc__ or "").split())
    start = doc.index("stable ``reason``:") + len("stable ``reason``:")
    assert re.findall(r"``([a-z_]+)``", doc[start:]) == list(REASONS)
