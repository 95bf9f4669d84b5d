"""The docs' benchmark tables come from the committed report, and say what it holds.

``quick_report.json`` beside this file is the report of a ``riverline bench --quick``
run (every section), kept as a fixture of the report's shape: its numbers are not a
measurement the docs quote.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.bench import checkout_commit
from benchmarks.render import (
    DOCS,
    newest_report,
    render_block,
    render_docs,
    rendered_text,
)
from streams.errors import RiverlineError
from streams.settings import REPO_ROOT

QUICK = Path(__file__).with_name("quick_report.json")


def _rows(markdown: str) -> dict[str, list[str]]:
    """A Markdown table's rows by their first cell."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def test_every_docs_table_is_what_the_newest_committed_report_gives() -> None:
    report = newest_report()
    for doc in DOCS:
        text = doc.read_text()
        assert "<!-- bench:" in text, f"{doc} has no generated benchmark block"
        assert text == rendered_text(text, report), (
            f"{doc}'s benchmark tables differ from {report}: run `python -m benchmarks.render`"
        )


def test_the_pipeline_table_has_each_contenders_numbers_from_the_report() -> None:
    report = json.loads(QUICK.read_text())
    section = report["sections"]["pipeline"]
    rows = _rows(render_block("headline", QUICK))
    for kind, result in section["results"].items():
        row = next(cells for name, cells in rows.items() if name.startswith(f"`{kind}`"))
        events_per_s, ratio, rss, p50, p95, p99, top = row
        assert events_per_s == f"{result['events_per_s']:,}"
        assert rss == f"{result['peak_rss_mib']:,.0f} MiB"
        latency = result["latency"]
        assert [p50, p95, p99, top] == [
            f"{latency[f'{q}_ms']:,.1f} ms" for q in ("p50", "p95", "p99", "max")
        ]
        expected = section["ratios"].get(f"riverline/{kind}")
        assert ratio == ("" if expected is None else f"{expected:.2f}")
    assert len(rows) == 1 + len(section["results"])  # the header and one row each


def test_the_results_block_names_its_run_and_has_every_section() -> None:
    report = json.loads(QUICK.read_text())
    text = render_block("results", QUICK)
    assert text.startswith(f"From `{QUICK.relative_to(REPO_ROOT)}`")
    assert "A `--quick` run: rough numbers." in text
    for section in report["sections"].values():
        assert f"**{section['title']}**" in text
    latency = report["sections"]["pipeline"]["latency"]
    assert f"{latency['offered_per_s']:,} events/s ({latency['load']:.0%}" in text
    for goal in report["sections"]["pipeline"]["goals"]:
        assert f"{goal}: " in text
    learner = report["sections"]["decoupled"]["learner"]
    assert f"learner: records_per_s {learner['records_per_s']:,}, " in text
    ingest_rows = _rows(text.split("**" + report["sections"]["ingest"]["title"] + "**")[1])
    formats = [row["format"] for row in report["sections"]["ingest"]["rows"]]
    assert [name for name in ingest_rows if name in formats] == formats


def test_blocks_are_rewritten_between_their_markers_only(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\n<!-- bench:headline -->\nstale\n<!-- bench:end -->\n\nAfter.\n")
    assert render_docs([doc], QUICK, check=True) == [doc]
    assert "stale" in doc.read_text()  # a check writes nothing
    assert render_docs([doc], QUICK) == [doc]
    text = doc.read_text()
    assert text.startswith("# Title\n\n<!-- bench:headline -->\n\nFrom `")
    assert text.endswith("<!-- bench:end -->\n\nAfter.\n")
    assert "stale" not in text
    assert render_docs([doc], QUICK, check=True) == []  # up to date now


def test_without_a_report_the_block_says_how_to_make_one() -> None:
    assert "`make bench` writes one" in render_block("results", None)


def test_a_report_that_is_not_the_benchmarks_json_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "2026-01-01.json"
    broken.write_text("{not json")
    with pytest.raises(RiverlineError, match=r"cannot render the benchmark report .*2026-01-01"):
        render_block("results", broken)
    with pytest.raises(RiverlineError, match=r"unknown benchmark block .*known: results"):
        render_block("everything", QUICK)


def test_the_newest_report_is_the_latest_dated_one(tmp_path: Path) -> None:
    assert newest_report(tmp_path) is None
    for name in ("2026-11-30.json", "2026-12-02.json", "2026-12-01.json"):
        (tmp_path / name).write_text("{}")
    assert newest_report(tmp_path) == tmp_path / "2026-12-02.json"


def test_a_report_names_the_commit_it_measured(tmp_path: Path) -> None:
    assert checkout_commit(tmp_path) is None  # not a git checkout

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "--short", "HEAD")
    assert checkout_commit(tmp_path) == head
    (tmp_path / "a.txt").write_text("two")
    assert checkout_commit(tmp_path) == f"{head}+changes"
