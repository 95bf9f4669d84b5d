"""``riverline produce --from FILE`` (or ``-``): the user's own events, with progress.

:mod:`streams.ingestion.file_producer` says what is sent and what is skipped; this module
shows a progress bar (events sent, of how many when the file says) and the report.
"""

from __future__ import annotations

import asyncio

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from streams.cli.commands import console, err_console
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["produce_from_file"]


def produce_from_file(
    settings: Settings,
    spec: PipelineSpec,
    source: str,
    *,
    input_format: str | None,
    rate: float | None,
    limit: int | None,
) -> None:
    """Send ``source`` (a path, or ``-`` for stdin) to the pipeline's raw topic."""
    from streams.ingestion.file_producer import FileReport, file_events, new_run_id, produce_file
    from streams.ingestion.user_files import count_rows, read_rows, sniff_format
    from streams.serialization.catalog import SchemaCatalog

    schema = SchemaCatalog.load(settings.schemas_dir).latest(spec.subject).schema
    input_format = input_format or sniff_format(source)
    total = count_rows(source, input_format)
    if limit is not None and total is not None:
        total = min(total, limit)
    report = FileReport(new_run_id())
    topic = spec.topics(settings.namespace).raw
    events = file_events(
        read_rows(source, input_format), spec, schema, report, csv=input_format == "csv"
    )
    progress = Progress(
        TextColumn(f"[bold]{topic}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    with progress:
        task = progress.add_task("sending", total=total)

        def sent(n: int) -> None:
            progress.update(task, completed=n)

        asyncio.run(
            produce_file(settings, spec, events, report, rate=rate, limit=limit, on_sent=sent)
        )
    console.print(
        f"sent {report.sent:,} events (run {report.run_id}) in {report.seconds:.1f} s to {topic}",
        highlight=False,
    )
    if report.skipped:
        err_console.print(
            f"[yellow]skipped {report.skipped:,} lines that could not be read:[/]",
            highlight=False,
        )
        for line in report.problems:
            err_console.print(f"  {line}", highlight=False)
