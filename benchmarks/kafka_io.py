"""The benchmark's Kafka: its cluster, a paced producer, topics counted and read back."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from benchmarks.options import BenchOptions, say
from streams.kafka.topics import TopicConfig, ensure_topics, topic_partitions

__all__ = ["Topic", "cluster", "ensure", "produce"]


@contextlib.contextmanager
def cluster(options: BenchOptions) -> Iterator[str]:
    """The settings' cluster, or a LocalBroker on free ports for this run (then stopped)."""
    settings = options.settings
    if settings.bootstrap:
        yield settings.bootstrap
        return
    from streams.kafka.broker import LocalBroker, free_port

    with tempfile.TemporaryDirectory(prefix="riverline-bench-") as tmp:
        port, controller = free_port(), free_port()
        while controller == port:
            controller = free_port()
        broker = LocalBroker(
            settings, data_dir=Path(tmp) / "kafka", port=port, controller_port=controller
        )
        broker.up(log=lambda line: say(options, f"[kafka] {line}"))
        try:
            yield broker.bootstrap
        finally:
            broker.down(log=lambda line: say(options, f"[kafka] {line}"))


async def ensure(bootstrap: str, configs: Sequence[TopicConfig]) -> None:
    await asyncio.to_thread(ensure_topics, bootstrap, configs)


async def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes],
    rate: float | None = None,
) -> None:
    """Send ``values``; at ``rate`` events/s (paced) or as fast as possible.

    Paced, the producer lingers 5 ms as ``riverline produce`` does (and Kafka's Java client
    by default since 4.0). Each event's timestamp is taken when it is handed to the
    producer, so the linger counts in the latency. Without a linger every paced event is a
    produce request of its own, and the load generator and the broker take CPU the worker
    under test would otherwise have.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5 if rate else 20, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            if rate:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await producer.send(topic, v, key=k))
            if len(futures) >= 10_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class Topic:
    """Counts a topic's messages (end offsets) and reads its first and last timestamps."""

    def __init__(self, bootstrap: str, name: str) -> None:
        self.name = name
        self.bootstrap = bootstrap
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> Topic:
        await self.consumer.start()
        parts = await topic_partitions(self.bootstrap, self.name)
        for _ in range(50):  # a topic just created may take a moment to show in metadata
            if parts:
                break
            await asyncio.sleep(0.1)
            parts = await topic_partitions(self.bootstrap, self.name)
        self.tps = [TopicPartition(self.name, p) for p in sorted(parts or ())]
        self.consumer.assign(self.tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def ends(self) -> dict[int, int]:
        got = await self.consumer.end_offsets(self.tps)
        return {tp.partition: o for tp, o in got.items()}

    async def count(self) -> int:
        return sum((await self.ends()).values())

    async def read(self, start: dict[int, int]) -> list[ConsumerRecord[bytes, bytes]]:
        """Every message from ``start`` (partition -> offset) to the current ends."""
        out: list[ConsumerRecord[bytes, bytes]] = []
        async for batch in self.batches(start):
            out.extend(batch)
        return out

    async def batches(
        self, start: dict[int, int] | None = None
    ) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
        """The messages from ``start`` (default: each partition's first) to the current
        ends, a batch at a time, so a long topic need not fit in memory."""
        start = start or {}
        ends = await self.ends()
        for tp in self.tps:
            if ends[tp.partition] > start.get(tp.partition, 0):
                self.consumer.seek(tp, start.get(tp.partition, 0))
        want = sum(ends[p] - start.get(p, 0) for p in ends)
        seen = 0
        while seen < want:
            got = await self.consumer.getmany(timeout_ms=1000)
            if not got:
                break
            for msgs in got.values():
                batch = [m for m in msgs if m.offset < ends[m.partition]]
                seen += len(batch)
                yield batch

    async def distinct_keys(self) -> int:
        """How many different keys the topic holds (an output's key is its event id)."""
        keys: set[bytes | None] = set()
        async for batch in self.batches():
            keys.update(m.key for m in batch)
        return len(keys)

    async def span_ms(self) -> tuple[int, int]:
        """Timestamps of the earliest first and the latest last message over partitions."""
        first: list[int] = []
        last: list[int] = []
        ends = await self.ends()
        for tp in self.tps:
            if ends[tp.partition] == 0:
                continue
            for offset, into in ((0, first), (ends[tp.partition] - 1, last)):
                self.consumer.seek(tp, offset)
                msg = await asyncio.wait_for(self.consumer.getone(tp), 30)
                into.append(msg.timestamp)
        return min(first), max(last)
