"""Reading topics from their start to their current end, as the restore paths do."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["records_to_end"]


async def records_to_end(
    consumer: AIOKafkaConsumer,
    parts: Sequence[TopicPartition],
    *,
    within: float,
    max_records: int | None = None,
) -> AsyncIterator[Any]:
    """Every record of ``parts`` from the start up to the ends they have now.

    The consumer is assigned ``parts`` (a read-committed consumer stops at the last stable
    offset: nothing of an open or aborted transaction).

    Raises
    ------
    TimeoutError
        When the ends were not reached within ``within`` seconds.
    """
    consumer.assign(list(parts))
    await consumer.seek_to_beginning(*parts)
    ends = await consumer.end_offsets(list(parts))
    deadline = time.monotonic() + within
    while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
        if time.monotonic() > deadline:
            topics = ", ".join(sorted({tp.topic for tp in parts}))
            raise TimeoutError(f"reading {topics} took more than {within:.0f} s; is the broker up?")
        batches = await consumer.getmany(timeout_ms=500, max_records=max_records)
        for messages in batches.values():
            for m in messages:
                yield m
