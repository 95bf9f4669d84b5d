"""The docs' benchmark tables, rendered from a committed report of ``riverline bench``.

The docs quote one run: the newest report under ``benchmarks/results/`` (named
``<YYYY-MM-DD>.json``, as ``make bench`` writes it). Its tables are not typed in by hand:
docs/benchmark.md and README.md hold generated blocks ::

    <!-- bench:results -->      every section of the run (docs/benchmark.md)
    <!-- bench:headline -->     the pipeline section's table (README.md)
    ...
    <!-- bench:end -->

that ``python -m benchmarks.render`` rewrites from that report (``--check``: only say
whether they are up to date). ``tests/unit/benchmarks/test_render.py`` checks in
``make test`` that every block is what this module renders from the committed report.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from streams.errors import RiverlineError
from streams.settings import REPO_ROOT

__all__ = [
    "DOCS",
    "RESULTS",
    "main",
    "newest_report",
    "render_block",
    "render_docs",
    "rendered_text",
]

#: Where the reports the docs quote are committed.
RESULTS: Final = REPO_ROOT / "benchmarks" / "results"
#: The documents with generated blocks.
DOCS: Final = (REPO_ROOT / "docs" / "benchmark.md", REPO_ROOT / "README.md")

_BLOCK = re.compile(r"(<!-- bench:(?P<kind>[a-z]+) -->\n)(?P<body>.*?)(<!-- bench:end -->)", re.S)
_NAMES: Final = {
    "raw": "`raw` (aiokafka)",
    "empty": "`empty` (Riverline's agent, empty stages)",
    "floor": "`floor` (Faust)",
    "naive": "`naive` (Faust and River, per event)",
    "riverline": "`riverline`",
}
_NONE = "No run is committed under `benchmarks/results/` yet: `make bench` writes one.\n"


def newest_report(folder: Path = RESULTS) -> Path | None:
    """The newest report in ``folder`` (names sort by date), or None."""
    reports = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return reports[-1] if reports else None


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _table(header: Iterable[str], rows: Iterable[Iterable[str]], right: int = 1) -> str:
    """A Markdown table; columns from ``right`` on are right-aligned."""
    names = list(header)
    rule = ["---" if i < right else "---:" for i in range(len(names))]
    lines = [names, rule, *(list(r) for r in rows)]
    return "".join("| " + " | ".join(line) + " |\n" for line in lines)


def _source(report: Mapping[str, Any], path: str) -> str:
    """Which run this is: the file, when, which commit, on what machine."""
    when = [f"`{path}`"]
    if report.get("date"):
        when.append(f"run {report['date']}")
    if report.get("commit"):
        when.append(f"commit {report['commit']}")
    machine = f"{report.get('cpus', '?')} CPUs"
    if report.get("cpu_model"):
        machine += f" ({report['cpu_model']})"
    if report.get("memory_gib"):
        machine += f", {report['memory_gib']:g} GiB"
    quick = " A `--quick` run: rough numbers." if report.get("quick") else ""
    return (
        f"From {', '.join(when)}: Python {report.get('python', '?')} on "
        f"{report.get('platform', '?')}, {machine}.{quick}\n"
    )


def _ms(latency: Mapping[str, Any] | None, q: str) -> str:
    return f"{latency[f'{q}_ms']:,.1f} ms" if latency and f"{q}_ms" in latency else ""


def _pipeline_table(section: Mapping[str, Any]) -> str:
    results: Mapping[str, Any] = section.get("results", {})
    ratios: Mapping[str, float] = section.get("ratios", {})
    rows = []
    for kind, r in results.items():
        ratio = ratios.get(f"riverline/{kind}")
        latency = r.get("latency")
        rows.append(
            [
                _NAMES.get(kind, f"`{kind}`"),
                f"{r['events_per_s']:,}",
                "" if ratio is None else f"{ratio:.2f}",
                f"{r['peak_rss_mib']:,.0f} MiB",
                *(_ms(latency, q) for q in ("p50", "p95", "p99", "max")),
            ]
        )
    header = ["contender", "events/s", "riverline / it", "peak RSS", "p50", "p95", "p99", "max"]
    return _table(header, rows)


def _over(section: Mapping[str, Any], kind: str) -> str:
    over = section.get(f"latency_over_{kind}") or {}
    qs = " / ".join(f"{over[f'{q}_ms']:g}" for q in ("p50", "p95", "p99") if f"{q}_ms" in over)
    return f"{qs} ms over `{kind}`" if qs else ""


def _pipeline_notes(section: Mapping[str, Any]) -> str:
    """The latency run, what Riverline adds to its baselines, the CPUs, the goals."""
    notes = []
    latency = section.get("latency")
    if latency:
        notes.append(
            f"Latency: every contender at the same offered load, "
            f"{latency['offered_per_s']:,} events/s ({latency['load']:.0%} of Riverline's "
            f"measured events/s), {latency['events']:,} events each."
        )
    over = [o for o in (_over(section, "raw"), _over(section, "empty")) if o]
    if over:
        notes.append(f"Riverline's p50 / p95 / p99: {' and '.join(over)}.")
    cpu = section.get("latency_cpu") or {}
    if cpu.get("processes"):
        shares = ", ".join(f"{name} {share:.0%}" for name, share in cpu["processes"].items())
        thread = cpu.get("thread") or {}
        loop = (
            f"; the worker's event-loop thread ran {thread['ran']:.0%} of the time and waited "
            f"for a CPU {thread['waited_for_cpu']:.0%}"
            if thread
            else ""
        )
        notes.append(
            f"CPU during Riverline's latency run ({cpu['seconds']:g} s, share of one core): "
            f"{shares}; machine idle {cpu['machine_idle']:.0%}{loop}."
        )
    stalls = section.get("machine_stalls") or {}
    for when, probe in stalls.items():
        if probe and probe.get("units"):
            notes.append(
                f"Stall probe, {when.replace('_', ' ')}: {probe['stalled']:,} of "
                f"{probe['units']:,} units at 3x the median ({probe['median_ms']:g} ms) or "
                f"more, the longest {probe['longest_ms']:g} ms, {probe['lost_share']:.1%} of "
                f"the probe's CPU time lost."
            )
    goals = section.get("goals") or {}
    if goals:
        met = "; ".join(f"{goal}: {'met' if ok else 'not met'}" for goal, ok in goals.items())
        notes.append(f"Goals: {met}.")
    return "".join(f"\n{note}\n" for note in notes)


def _rows_table(section: Mapping[str, Any]) -> str:
    rows: list[Mapping[str, Any]] = section.get("rows", [])
    columns = list(dict.fromkeys(k for row in rows for k in row))
    body = [[_number(row.get(c, "")) for c in columns] for row in rows]
    return _table(columns, body)


def _scalars(values: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key value`` for each number or string, nested dicts' keys prefixed; lists left out."""
    shown = []
    for key, value in values.items():
        if isinstance(value, Mapping):
            shown += _scalars(value, f"{prefix}{key} ")
        elif not isinstance(value, list) and value is not None:
            shown.append(f"{prefix}{key} {_number(value)}")
    return shown


def _flat(name: str, values: Any) -> str:
    if isinstance(values, Mapping):
        shown = ", ".join(_scalars(values))
        return f"\n{name}: {shown}.\n" if shown else ""
    return f"\n{name}: {values}.\n" if values else ""


def _results(report: Mapping[str, Any], path: str) -> str:
    parts = [_source(report, path)]
    for name, section in report.get("sections", {}).items():
        parts.append(f"\n**{section.get('title', name)}**\n\n")
        if name == "pipeline":
            parts.append(_pipeline_table(section) + _pipeline_notes(section))
            continue
        parts.append(_rows_table(section))
        for key in ("before", "baseline", "ratios", "learner", "staleness", "capacity"):
            parts.append(_flat(key, section.get(key)))
    return "".join(parts)


def _headline(report: Mapping[str, Any], path: str) -> str:
    section = report.get("sections", {}).get("pipeline")
    if section is None:
        return _source(report, path) + "\nThis run has no pipeline section.\n"
    return f"{_source(report, path)}\n{_pipeline_table(section)}{_pipeline_notes(section)}"


_KINDS: Final[dict[str, Callable[[Mapping[str, Any], str], str]]] = {
    "results": _results,
    "headline": _headline,
}


def render_block(kind: str, report: Path | None) -> str:
    """The body of a ``bench:<kind>`` block for ``report`` (None: no run committed yet)."""
    if kind not in _KINDS:
        raise RiverlineError(
            f"unknown benchmark block <!-- bench:{kind} -->; known: {', '.join(_KINDS)}"
        )
    if report is None:
        return _NONE
    try:
        data = json.loads(report.read_text())
        inside = report.resolve().is_relative_to(REPO_ROOT)
        where = str(report.resolve().relative_to(REPO_ROOT)) if inside else str(report)
        return _KINDS[kind](data, where)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RiverlineError(
            f"cannot render the benchmark report {report}: {exc!r}. Is it the JSON that "
            "`riverline bench --json` wrote?"
        ) from exc


def rendered_text(text: str, report: Path | None) -> str:
    """``text`` with each ``bench:`` block's body rendered anew from ``report``."""
    return _BLOCK.sub(
        lambda m: m.group(1) + "\n" + render_block(m["kind"], report) + "\n" + m.group(4), text
    )


def render_docs(
    docs: Iterable[Path] = DOCS, report: Path | None = None, *, check: bool = False
) -> list[Path]:
    """Rewrite the blocks of ``docs`` from ``report`` (default: the newest committed).

    Returns the documents that were (``check``: that would be) changed.
    """
    source = report if report is not None else newest_report()
    changed = []
    for doc in docs:
        text = doc.read_text()
        new = rendered_text(text, source)
        if new != text:
            changed.append(doc)
            if not check:
                doc.write_text(new)
    return changed


def main(argv: list[str]) -> int:
    """``python -m benchmarks.render [--check] [REPORT]``: the docs' blocks from a report."""
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"]
    report = paths[0] if paths else None
    changed = render_docs(report=report, check=check)
    for doc in changed:
        print(f"{doc}: {'out of date' if check else 'rewritten'}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
