"""Every relative link in README.md and docs/ names a file that exists, and a heading of it.

The README's content moved into docs/ pages; a link that still points at a section that
moved (``#dead-letters`` on the wrong page) fails here rather than on a reader.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.settings import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
#: Folders a doc links before they exist: the first committed ``make bench`` run makes it.
NOT_YET = {REPO_ROOT / "benchmarks" / "results"}


def _prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return _FENCE.sub("", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.

    >>> _slug("Bounded state: `key_ttl` and `max_keys`")
    'bounded-state-key_ttl-and-max_keys'
    """
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of every heading of a Markdown file."""
    headings = re.findall(r"^#+ (.+)$", _prose(path.read_text()), re.M)
    return {_slug(h) for h in headings}


def _relative_links(path: Path) -> list[str]:
    return [
        target
        for target in _LINK.findall(_prose(path.read_text()))
        if not re.match(r"[a-z]+:", target)
    ]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in _relative_links(doc):
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.exists() and linked not in NOT_YET:
            broken.append(f"{target}: no {linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: {linked.name} has no heading #{anchor}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_the_readme_links_every_docs_page() -> None:
    readme = REPO_ROOT / "README.md"
    linked = {(readme.parent / t.partition("#")[0]).resolve() for t in _relative_links(readme)}
    pages = set((REPO_ROOT / "docs").glob("*.md"))
    assert pages <= linked, f"not linked from the README: {sorted(p.name for p in pages - linked)}"
