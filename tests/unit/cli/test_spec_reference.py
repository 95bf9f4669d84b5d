"""docs/pipeline-reference.md is the parser's key table, rendered."""

from __future__ import annotations

from streams.cli.spec_reference import render_reference
from streams.features.spec import KINDS_BY_NAME
from streams.settings import REPO_ROOT
from streams.spec_keys import SPEC_TABLES

PAGE = REPO_ROOT / "docs" / "pipeline-reference.md"


def test_the_reference_page_is_what_the_key_table_renders() -> None:
    assert PAGE.read_text() == render_reference(), (
        "docs/pipeline-reference.md is stale: run "
        "`python -m streams.cli.spec_reference > docs/pipeline-reference.md`"
    )


def test_every_key_and_kind_has_a_row() -> None:
    text = render_reference()
    for table in SPEC_TABLES:
        section = text.split(f"## `{table.header}`", 1)[1].split("\n## ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        assert [row.split("`")[1] for row in rows] == list(table.names), table.header
    for kind in KINDS_BY_NAME:
        assert f"| `{kind}` |" in text
