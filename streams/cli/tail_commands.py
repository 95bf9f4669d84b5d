"""``riverline tail --pipeline P``: the pipeline's predictions as JSON lines on stdout.

Reads ``P.predictions`` with ``read_committed`` isolation (nothing of an aborted or open
transaction), checks each record's ``rl.mac`` before it decodes it (records that do not
verify were not written by this deployment: skipped, and counted on stderr), and prints
each prediction record as one JSON object (times as epoch milliseconds). From the end
(new predictions only) unless ``--from-beginning``; until interrupted, ``-n`` records,
or, with ``--until-end``, the end the topic had when it started.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from streams.cli.commands import err_console, friendly, settings_of
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["TailReport", "prediction_line", "tail", "tail_predictions"]


@dataclass
class TailReport:
    printed: int = 0
    unsigned: int = 0
    undecodable: int = 0


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return (value - _EPOCH) // dt.timedelta(milliseconds=1)
    return value


def prediction_line(record: dict[str, Any]) -> str:
    """One prediction record as a JSON line (timestamps as epoch milliseconds).

    >>> when = dt.datetime(2024, 1, 1, 0, 0, 0, 123000, tzinfo=dt.UTC)
    >>> prediction_line({"event_id": "e1", "event_ts": when, "predict_ts": 1704067200124})
    '{"event_id": "e1", "event_ts": 1704067200123, "predict_ts": 1704067200124}'
    """
    return json.dumps({k: _plain(v) for k, v in record.items()})


async def tail_predictions(
    settings: Settings,
    spec: PipelineSpec,
    emit: Callable[[str], None],
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    until_end: bool = False,
) -> TailReport:
    """Emit ``P.predictions`` as JSON lines (see the module docstring)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.errors import RiverlineError
    from streams.kafka.auth import client_kwargs
    from streams.serialization.catalog import SchemaCatalog
    from streams.serialization.codec import decode_single_object
    from streams.trust.records import RecordSigner

    catalog = SchemaCatalog.load(settings.schemas_dir)
    schema = catalog.record("prediction")
    signer = RecordSigner(settings.signing_key_bytes())
    topic = spec.topics(settings.namespace).predictions
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
        **client_kwargs(settings),
    )
    await consumer.start()
    report = TailReport()
    try:
        parts = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})
        ]
        consumer.assign(parts)
        await (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*parts)
        ends = await consumer.end_offsets(parts) if until_end else None
        while limit is None or report.printed < limit:
            if ends is not None and all([await consumer.position(tp) >= ends[tp] for tp in parts]):
                break
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for tp, messages in batches.items():
                for m in messages:
                    if limit is not None and report.printed >= limit:
                        break
                    if not signer.verify(tp.topic, m.key, m.value, m.headers or ()):
                        report.unsigned += 1
                        continue
                    try:
                        _, record = decode_single_object(catalog, m.value or b"", schema)
                    except RiverlineError:
                        report.undecodable += 1
                        continue
                    emit(prediction_line(record))
                    report.printed += 1
    finally:
        await consumer.stop()
    return report


@click.command()
@click.option("--pipeline", type=click.Path(path_type=Path), required=True)
@click.option("--from-beginning", is_flag=True, help="Start at the first prediction kept.")
@click.option("-n", "limit", type=int, default=None, help="Stop after N predictions.")
@click.option("--until-end", is_flag=True, help="Stop at the end the topic has now.")
@click.pass_context
@friendly
def tail(
    ctx: click.Context, pipeline: Path, from_beginning: bool, limit: int | None, until_end: bool
) -> None:
    """Print the pipeline's predictions as JSON lines, decoded and MAC-checked."""
    from streams.spec import load_spec

    settings = settings_of(ctx)
    spec = load_spec(pipeline, settings.schemas_dir)

    def emit(line: str) -> None:
        click.echo(line)

    try:
        report = asyncio.run(
            tail_predictions(
                settings,
                spec,
                emit,
                from_beginning=from_beginning,
                limit=limit,
                until_end=until_end,
            )
        )
    except KeyboardInterrupt:
        return
    if report.unsigned or report.undecodable:
        err_console.print(
            f"[yellow]skipped {report.unsigned:,} records whose rl.mac did not verify (not "
            f"written by this deployment, or another RIVERLINE_SIGNING_KEY) and "
            f"{report.undecodable:,} that were not prediction records[/]",
            highlight=False,
        )
