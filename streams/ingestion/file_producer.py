"""Send a user's own file (JSON lines, CSV or Parquet, or stdin) to a pipeline's raw topic.

Events go as JSON; the ingest stage validates them against the subject's newest schema,
like any producer's, and makes each one it refuses a dead letter that names what was
wrong. Before that, this producer only:

- types CSV cells by the schema (:func:`~streams.ingestion.user_files.csv_coercer`);
- renames a column to its Avro field name when only that is in the schema (``riverline
  init`` names fields that way: ``unit price`` is ``unit_price``);
- fills the id field (``<run id>-<sequence>``) and the time field (the time it sends, in
  epoch ms) when a row lacks them or holds null, so a sample without them still flows;
- skips lines it cannot parse at all (not JSON, not an object, a CSV row with the wrong
  number of cells): it counts them and keeps the first few messages for the report, and
  goes on. Such a line has no event to dead-letter.

Each event's key is its ``key_field`` value (its id when the spec has no key field).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.ingestion.inference import avro_name
from streams.ingestion.producer import send_paced
from streams.ingestion.user_files import Row, csv_coercer
from streams.pipeline.stage import now_ms
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["FileReport", "file_events", "new_run_id", "produce_file"]

#: Skipped lines whose message the report keeps.
KEPT_PROBLEMS = 5


@dataclass
class FileReport:
    """What a file sent: events, lines skipped (with the first few reasons), time taken."""

    run_id: str
    sent: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def skip(self, row: Row) -> None:
        self.skipped += 1
        if len(self.problems) < KEPT_PROBLEMS:
            self.problems.append(f"line {row.number}: {row.error}")


def file_events(
    rows: Iterable[Row],
    spec: PipelineSpec,
    schema: Mapping[str, Any],
    report: FileReport,
    *,
    csv: bool = False,
) -> Iterator[dict[str, Any]]:
    """The events of a file's rows, ready to send (see the module docstring)."""
    fields = {str(f["name"]) for f in schema.get("fields", [])}
    coerce = csv_coercer(schema) if csv else None
    renames: dict[str, str] = {}
    sequence = 0
    for row in rows:
        if row.values is None:
            report.skip(row)
            continue
        values = row.values
        for column in values:
            if column not in renames:
                named = avro_name(column)
                renames[column] = named if column not in fields and named in fields else column
        event = {renames[c]: v for c, v in values.items()}
        if coerce is not None:
            event = coerce(event)
        if event.get(spec.id_field) is None:
            event[spec.id_field] = f"{report.run_id}-{sequence:07d}"
        if event.get(spec.time_field) is None:
            event[spec.time_field] = now_ms()
        sequence += 1
        yield event


async def produce_file(
    settings: Settings,
    spec: PipelineSpec,
    events: Iterable[dict[str, Any]],
    report: FileReport,
    *,
    rate: float | None = None,
    limit: int | None = None,
    on_sent: Callable[[int], None] | None = None,
) -> FileReport:
    """Send ``events`` as JSON to ``P.raw``; the report gets the count and the seconds.

    ``rate`` is events per second (None: as fast as the broker takes them);
    ``on_sent(n)`` is called with the running count every 100 events and at the end.
    """

    def messages() -> Iterator[tuple[None, bytes, bytes]]:
        for event in events:
            key = event.get(spec.key_field) if spec.key_field else None
            key = event[spec.id_field] if key is None else key
            yield None, str(key).encode(), json.dumps(event, default=str).encode()

    def sent_one(_: None, count: int) -> None:
        if on_sent and count % 100 == 0:
            on_sent(count)

    topic = spec.topics(settings.namespace).raw
    sent, seconds = await send_paced(
        settings, topic, messages(), rate=rate, limit=limit, on_sent=sent_one
    )
    if on_sent:
        on_sent(sent)
    report.sent = sent
    report.seconds = seconds
    return report


def new_run_id() -> str:
    """A short id for one run of the producer (event ids it fills start with it)."""
    return uuid.uuid4().hex[:8]
