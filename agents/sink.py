"""Sink agent: a pipeline's topics and its dead letters -> the Parquet offline store.

It reads with its own aiokafka consumer in its own group (``<ns>riverline-sink.<P>``),
not the worker's Faust group: the sink commits offsets only after the rows they cover
are flushed to Parquet (every ``sink_flush_interval`` seconds, on revocation and at clean
shutdown), which Faust's per-event acks cannot express, and a slow disk never holds back
the pipeline's own consumer. After a SIGKILL it re-reads from the last commit and
:class:`~streams.sink.OfflineSink` drops offsets its files already hold, so rows are never
duplicated. One group per pipeline, because the dead-letter topic is shared and each
pipeline's sink must see all of its partitions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from streams.catalog import SchemaCatalog
from streams.messages import InMessage
from streams.offline_store import OfflineStore
from streams.security import client_kwargs
from streams.settings import Settings
from streams.sink import OfflineSink, sink_topics
from streams.spec import PipelineSpec

__all__ = ["SinkAgent", "add_sink_agent"]

log = logging.getLogger("riverline.sink")


class SinkAgent(ConsumerRebalanceListener):
    """Consume, buffer, flush, then commit: one pipeline's offline sink."""

    def __init__(self, settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog) -> None:
        self.settings = settings
        self.spec = spec
        topics = spec.topics(settings.namespace)
        kinds = sink_topics(spec, settings.namespace, settings.topic("riverline.dlq"))
        self.sink = OfflineSink(
            spec,
            catalog,
            OfflineStore(settings.store_dir),
            kinds=kinds,
            block_size=settings.sink_block_size,
            dead_letter_sources={topics.raw, topics.events, topics.features, topics.predictions},
        )
        self.topics = sorted(kinds)
        self.group = settings.topic(f"riverline-sink.{spec.name}")
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self._consumed: dict[TopicPartition, int] = {}  # next offset, not yet committed
        self._closed = False
        self.rows = 0

    async def run(self) -> None:
        """The agent's task: read until shutdown, flushing on schedule."""
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.effective_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, self.settings.session_timeout / 3) * 1000),
            **client_kwargs(self.settings),
        )
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=self)
        flushed = time.monotonic()
        while not self._closed:
            try:
                # Small batches: decoding happens on the worker's event loop.
                records = await self.consumer.getmany(timeout_ms=500, max_records=500)
            except Exception:
                if self._closed:  # the consumer was stopped at shutdown
                    break
                raise
            async with self.lock:
                if self._closed:
                    break
                for tp, msgs in records.items():
                    self.rows += self.sink.add([_in_message(m) for m in msgs])
                    self._consumed[tp] = msgs[-1].offset + 1
                if time.monotonic() - flushed >= self.settings.sink_flush_interval:
                    await self._flush()
                    flushed = time.monotonic()

    async def _flush(self) -> None:
        """Write every changed block, then commit what the files now hold."""
        if self.consumer is None:
            return
        # In a thread: a block rewrite takes long enough to delay the worker's heartbeats
        # and agents. The lock keeps add() out meanwhile.
        await asyncio.to_thread(self.sink.flush)
        if self._consumed:
            await self.consumer.commit(dict(self._consumed))
            self._consumed.clear()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Rebalance callbacks run while the loop waits in getmany, outside a batch.
        if not self._closed:
            await self._flush()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("sink %s reads %s", self.spec.name, sorted(f"{t}:{p}" for t, p in assigned))

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        """Signal ``app.on_before_shutdown``: a last flush and commit, then stop."""
        async with self.lock:
            if self._closed:
                return
            await self._flush()
            self._closed = True
            if self.consumer is not None:
                await self.consumer.stop()
        log.info("sink %s stopped after %d rows", self.spec.name, self.rows)


def _in_message(m: Any) -> InMessage:
    return InMessage(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        key=m.key,
        value=m.value,
        timestamp_ms=int(m.timestamp),
        headers=tuple((str(k), bytes(v)) for k, v in (m.headers or ())),
    )


def add_sink_agent(
    app: faust.App, settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog
) -> SinkAgent | None:
    """Run a pipeline's offline sink as a task of the worker (unless ``sink_enabled`` is off)."""
    if not settings.sink_enabled:
        return None
    agent = SinkAgent(settings, spec, catalog)
    app.on_before_shutdown.connect(cast(Any, agent.on_shutdown))

    async def sink() -> None:
        await agent.run()

    app.task(sink)
    return agent
