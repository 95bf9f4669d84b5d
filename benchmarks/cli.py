"""``riverline bench``: the benchmark, added to the command line as a plugin.

Registered under the entry-point group ``riverline.commands`` in pyproject.toml (see
:mod:`streams.cli.plugins`), so no product module imports the benchmark. The run itself
is :func:`benchmarks.bench.run_bench`; this module parses the options and prints the
report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from streams.cli.commands import console, friendly, settings_of

__all__ = ["bench"]


F = TypeVar("F", bound=Callable[..., Any])

#: The options of the pipeline section: its size, its contenders, its latency runs.
_PIPELINE_OPTIONS = (
    click.option(
        "--events",
        type=int,
        default=None,
        help="Events of the pipeline, decoupled and guarantees sections (200,000; --quick 5,000).",
    ),
    click.option("--partitions", type=int, default=1, help="Partitions of the pipeline section."),
    click.option(
        "--contender",
        "contenders",
        multiple=True,
        help="Run only these contenders of the pipeline section (raw, empty, floor, naive, "
        "riverline); default: all. The latency runs need riverline.",
    ),
    click.option(
        "--latency-load",
        type=float,
        default=0.25,
        show_default=True,
        help="Offered load of the latency runs, as a share of Riverline's measured events/s.",
    ),
)


def _pipeline_options(fn: F) -> F:
    """Add :data:`_PIPELINE_OPTIONS` to a command, in their order."""
    for option in reversed(_PIPELINE_OPTIONS):
        fn = option(fn)
    return fn


@click.command()
@click.option("--quick", is_flag=True, help="Small runs (a few seconds): checks, not numbers.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the full report to this JSON file.",
)
@click.option(
    "--section",
    "sections",
    multiple=True,
    help=(
        "Run only these sections (ingest, features, stages, pipeline, decoupled, guarantees); "
        "default: all."
    ),
)
@click.option(
    "--stages-before",
    default=None,
    metavar="REV",
    help="Measure this git revision's stages beside this checkout's (the stages section).",
)
@_pipeline_options
@click.pass_context
@friendly
def bench(
    ctx: click.Context,
    quick: bool,
    json_path: Path | None,
    sections: tuple[str, ...],
    stages_before: str | None,
    events: int | None,
    partitions: int,
    contenders: tuple[str, ...],
    latency_load: float,
) -> None:
    """Throughput and latency of Riverline, side by side with baselines on one broker.

    Starts a broker on free ports for the run unless RIVERLINE_BOOTSTRAP is set.
    """
    from benchmarks.bench import CONTENDERS, BenchOptions, run_bench

    options = BenchOptions(
        settings_of(ctx),
        quick=quick,
        events_override=events,
        partitions=partitions,
        latency_load=latency_load,
        contenders=contenders or CONTENDERS,
        stages_before=stages_before,
        progress=lambda line: console.print(line, highlight=False),
    )
    report = run_bench(options, list(sections) or None)
    _print_report(report, quick)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {json_path}")


#: Section entries printed below its table, when present.
_SUMMARIES = (
    "ratios",
    "latency",
    "latency_cpu",
    "latency_over_raw",
    "latency_over_empty",
    "machine_stalls",
    "learner",
    "staleness",
    "capacity",
    "goals",
)


def _print_report(report: dict[str, Any], quick: bool) -> None:
    console.print(
        f"Python {report['python']} on {report['platform']}, {report['cpus']} CPUs"
        + (" (--quick: small runs, rough numbers)" if quick else "")
    )
    for section in report["sections"].values():
        console.print(_table(section))
        if section.get("baseline"):
            console.print(f"baseline: {section['baseline']}")
        for key in _SUMMARIES:
            if section.get(key):
                console.print(f"{key}: {section[key]}", highlight=False)


def _table(section: dict[str, Any]) -> Table:
    """A section's rows as a table, one column per key any row has."""
    rows = section.get("rows", [])
    table = Table(title=section.get("title"))
    columns = list(dict.fromkeys(k for row in rows for k in row))
    for column in columns:
        table.add_column(column, justify="left" if column == "format" else "right")
    for row in rows:
        table.add_row(
            *(f"{v:,}" if isinstance(v, int) else str(v) for v in (row.get(c, "") for c in columns))
        )
    return table
