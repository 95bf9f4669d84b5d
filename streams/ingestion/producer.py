"""Replay a dataset as events on a pipeline's raw topic, the way a user's producer would."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer

from streams.errors import RiverlineError
from streams.ingestion.datasets import dataset_rows
from streams.kafka.auth import client_kwargs
from streams.pipeline.stage import now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import encode_single_object
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["ProduceReport", "dataset_events", "produce_dataset", "send_paced"]

T = TypeVar("T")

WIRE_FORMATS = ("json", "avro")


@dataclass(frozen=True)
class ProduceReport:
    sent: int
    seconds: float
    run_id: str


def dataset_events(
    spec: PipelineSpec, dataset: str, run_id: str, start_ms: int
) -> Iterator[dict[str, Any]]:
    """Events in dataset order: an id, an event time, fields and label.

    Event times start at ``start_ms``: one second apart, or, when the rows carry the time
    field (epoch ms, like ``transactions``), with the rows' own spacing.
    """
    first_ms: int | None = None
    for i, (x, y) in enumerate(dataset_rows(dataset)):
        event: dict[str, Any] = {spec.id_field: f"{run_id}-{i:07d}"}
        event.update(x)
        row_ms = x.get(spec.time_field)
        if row_ms is None:
            event[spec.time_field] = start_ms + i * 1000
        else:
            first_ms = row_ms if first_ms is None else first_ms
            event[spec.time_field] = start_ms + (int(row_ms) - first_ms)
        if spec.model.target:
            event[spec.model.target] = y
        yield event


async def produce_dataset(
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    *,
    dataset: str | None = None,
    rate: float | None = None,
    limit: int | None = None,
    wire_format: str = "json",
    run_id: str | None = None,
    on_sent: Callable[[str, int], None] | None = None,
) -> ProduceReport:
    """Send the dataset to ``P.raw``; ``on_sent(event_id, send_time_ms)`` after each send.

    ``rate`` is events per second (None: as fast as the broker takes them).
    """
    if wire_format not in WIRE_FORMATS:
        raise RiverlineError(f"unknown format {wire_format!r}; use one of {WIRE_FORMATS}.")
    name = dataset or spec.dataset
    if not name:
        raise RiverlineError(f"pipeline {spec.name} names no dataset; pass --dataset.")
    run_id = run_id or uuid.uuid4().hex[:8]
    schema = catalog.latest(spec.subject)

    def messages() -> Iterator[tuple[str, bytes, bytes]]:
        for event in dataset_events(spec, name, run_id, now_ms()):
            if wire_format == "json":
                value = json.dumps(event).encode()
            else:
                value = encode_single_object(schema, event)
            key = str(event[spec.key_field]) if spec.key_field else str(event[spec.id_field])
            yield str(event[spec.id_field]), key.encode(), value

    def sent_one(event_id: str, _count: int) -> None:
        if on_sent:
            on_sent(event_id, now_ms())

    topic = spec.topics(settings.namespace).raw
    sent, seconds = await send_paced(
        settings, topic, messages(), rate=rate, limit=limit, on_sent=sent_one
    )
    return ProduceReport(sent, seconds, run_id)


async def send_paced(
    settings: Settings,
    topic: str,
    messages: Iterable[tuple[T, bytes, bytes]],
    *,
    rate: float | None = None,
    limit: int | None = None,
    on_sent: Callable[[T, int], None] | None = None,
) -> tuple[int, float]:
    """Send ``(tag, key, value)`` messages to ``topic``, at ``rate`` per second (None: as
    fast as the broker takes them), at most ``limit``; ``on_sent(tag, count)`` after each
    send. Returns how many were sent and the seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.effective_bootstrap,
        linger_ms=5,
        acks="all",
        **client_kwargs(settings),
    )
    await producer.start()
    started = time.perf_counter()
    sent = 0
    try:
        pending = []
        for tag, key, value in messages:
            if limit is not None and sent >= limit:
                break
            if rate:
                ahead = started + sent / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            pending.append(await producer.send(topic, value=value, key=key))
            sent += 1
            if on_sent:
                on_sent(tag, sent)
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return sent, time.perf_counter() - started
