"""The seam between Faust and Riverline's stages: events in, messages out, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import faust

from streams.errors import RiverlineError
from streams.integrity import RecordSigner
from streams.messages import InMessage, OutMessage
from streams.metrics import WorkerMetrics
from streams.stage import StageResult

__all__ = [
    "AssignmentGate",
    "Guard",
    "RawTopic",
    "Stage",
    "StallWatch",
    "run_stage",
    "seek_back",
    "send_all",
    "to_in_message",
]


class Stage(Protocol):
    stage: str

    def process(self, batch: list[InMessage]) -> StageResult: ...


def to_in_message(event: faust.types.EventT) -> InMessage:
    m = event.message
    raw_headers: Any = m.headers or ()
    headers = tuple((str(k), bytes(v)) for k, v in raw_headers)
    return InMessage(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        key=m.key,
        value=m.value,
        timestamp_ms=int(m.timestamp * 1000),
        headers=headers,
    )


async def send_all(app: faust.App, sends: list[OutMessage], signer: RecordSigner) -> None:
    """Send and wait for every acknowledgement, so offsets never commit ahead of outputs.

    Every message gets its ``rl.mac`` header here (:mod:`streams.integrity`): this is the
    one way the worker writes its stages' outputs.

    Straight to aiokafka, a record batch per topic partition: Faust's ``Topic.send``
    builds a topic object, a ``FutureMessage`` and a callback chain per message, and
    aiokafka's ``send`` a future, two partition lists and a pure-Python murmur2 hash per
    message; together they cost more than the stages' own work per event (see
    ``riverline bench``). Partitions are aiokafka's own choice (its default partitioner,
    murmur2 of the key as Kafka's Java client), computed only where a topic has more
    than one. Waiting for the batch's acks here keeps at-least-once whatever Faust later
    commits.
    """
    if not sends:
        return
    producer: Any = app.producer
    kafka = producer._ensure_producer()  # aiokafka.AIOKafkaProducer
    metadata = kafka.client.cluster
    #: topic -> (all partitions, available ones), as aiokafka's partitioner takes them
    partitions: dict[str, tuple[list[int], list[int]]] = {}
    batches: dict[tuple[str, int], Any] = {}
    futures = []
    for out in sends:
        topic = out.topic
        if topic not in partitions:
            await kafka.client._wait_on_metadata(topic)
            partitions[topic] = (
                sorted(metadata.partitions_for_topic(topic)),
                sorted(metadata.available_partitions_for_topic(topic)),
            )
        every, available = partitions[topic]
        partition = every[0] if len(every) == 1 else kafka._partitioner(out.key, every, available)
        headers = signer.sign(topic, out.key, out.value, out.headers)
        batch = batches.get((topic, partition))
        if batch is not None and _append(batch, out, headers):
            continue
        if batch is not None:  # full: on its way, and a new one for the rest
            futures.append(await kafka.send_batch(batch, topic, partition=partition))
        batch = batches[(topic, partition)] = kafka.create_batch()
        if not _append(batch, out, headers):  # aiokafka takes any first message
            raise RiverlineError(
                f"aiokafka refused a message of {len(out.value or b'')} bytes for {topic} "
                "even in an empty record batch"
            )
    for (topic, partition), batch in batches.items():
        futures.append(await kafka.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)


def _append(batch: Any, out: OutMessage, headers: list[tuple[str, bytes]]) -> bool:
    """Add ``out`` with ``headers`` to an aiokafka record batch; False when it is full."""
    return batch.append(timestamp=None, key=out.key, value=out.value, headers=headers) is not None


async def seek_back(app: faust.App, offsets: dict[Any, int]) -> None:
    """Seek partitions Riverline commits itself back to these offsets, so Faust delivers again.

    Faust drops fetched messages below its read offset; a fetch in flight during a seek
    can move that offset past the seek's own messages. ``seek_wait`` seeks in the
    consumer's thread; the read offsets are reset here so the messages come through.
    """
    consumer: Any = app.consumer
    await consumer.seek_wait(offsets)
    for tp, offset in offsets.items():
        consumer._read_offset[tp] = offset if offset else None


class AssignmentGate:
    """Holds a checkpointed stage's batches from a rebalance's start until its state is back.

    Closed at construction and by the revocation handler (synchronously, first thing:
    every rebalance revokes before it assigns), opened by the assignment handler once the
    assigned partitions' state is restored. A batch never meets a partition that is
    assigned but not restored yet, so no event is skipped as "not ours" and no seek is
    needed to have it delivered again: Faust starts each partition at the offset
    Riverline committed with its latest checkpoint, which is never ahead of the state.
    """

    def __init__(self) -> None:
        self._ready = asyncio.Event()

    def close(self) -> None:
        self._ready.clear()

    def open(self) -> None:
        self._ready.set()

    @property
    def is_open(self) -> bool:
        return self._ready.is_set()

    async def wait(self) -> None:
        await self._ready.wait()


class StallWatch:
    """Partitions with events waiting that have not moved for ``after`` seconds.

    The safety net for the rare seek backwards (a checkpoint unusable, the state rebuilt
    from an earlier offset than the committed one): a fetch in flight during a seek can
    make Faust drop the seek's messages (it drops offsets below its read offset), and the
    partition would wait forever. The owner seeks such partitions back again.
    """

    def __init__(self, after: float = 4.0) -> None:
        self.after = after
        self._seen: dict[Any, tuple[int, float]] = {}

    def stuck(self, app: faust.App, positions: dict[Any, int]) -> dict[Any, int]:
        now = time.monotonic()
        found: dict[Any, int] = {}
        for tp, position in positions.items():
            try:
                end = app.consumer.highwater(tp)
            except (KeyError, AssertionError, AttributeError):
                continue
            last = self._seen.get(tp)
            if end is None or position >= end or last is None or last[0] != position:
                self._seen[tp] = (position, now)
            elif now - last[1] >= self.after:
                found[tp] = position
                self._seen[tp] = (position, now)
        return found


class Guard(Protocol):
    """What a checkpointed stage wraps each batch in (see agents.checkpoints)."""

    lock: asyncio.Lock
    gate: AssignmentGate

    @property
    def open(self) -> bool: ...

    async def after_batch(self, batch: list[InMessage], result: StageResult) -> None: ...


class RawTopic(faust.Topic):
    """A topic read as the bytes it holds: each event built without Faust's codec registry.

    Faust decodes a message through its schema, serializer registry and codec even when
    both serializers are ``raw``, which leave the bytes as they are: with an empty stage,
    11% of the samples (py-spy, ``riverline bench``'s ``empty`` contender at full load).
    The events are the same: key and value as bytes (or ``None``), the message's headers.
    """

    def _compile_decode(self) -> None:
        app = self.app
        # Looked up once: Faust's settings lookup is slow per message.
        event: Any = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event(app, message.key, message.value, message.headers, message)

        self.decode = decode  # type: ignore[method-assign]


async def drained(
    app: faust.App, stream: faust.StreamT, batch_size: int
) -> AsyncIterator[list[Any]]:
    """Batches of what is already waiting: no timer, so an event alone goes at once.

    Each batch is the first event plus every event already queued behind it (up to
    ``batch_size``): one event at low load, full batches under load. Only for topics
    Riverline commits itself (``acks=False``): Faust acks each event as the next one is
    read, before the batch is processed, which would let it commit an acked topic ahead
    of the batch's outputs. The first event of a batch comes through Faust's stream; the
    ones behind it straight from the stream's queue, which skips Faust's step per event
    (a turn of the event loop, its sensors) and keeps its one check: an event fetched
    before a rebalance (an older generation) or while flow control is off is dropped,
    as Faust drops it.
    """
    queue = stream.channel.queue  # type: ignore[attr-defined]
    batch: list[Any] = []
    async for event in stream.events():
        batch.append(event)
        _take_queued(app, queue, batch, batch_size)
        if len(batch) < batch_size:
            await asyncio.sleep(0)  # let the consumer hand over what it has fetched
            _take_queued(app, queue, batch, batch_size)
        yield batch
        batch = []


def _take_queued(app: faust.App, queue: Any, batch: list[Any], size: int) -> None:
    """Move queued events into ``batch`` up to ``size``, dropping those Faust would skip."""
    # Nothing here awaits, so flow control and the generation hold for the whole take.
    flowing = app.flow_control.is_active()
    generation = app.consumer_generation_id
    while len(batch) < size and not queue.empty():
        event = queue.get_nowait()
        if flowing and event.message.generation_id == generation:
            batch.append(event)


async def run_stage(
    app: faust.App,
    stream: faust.StreamT,
    stage: Stage,
    pipeline: str,
    metrics: WorkerMetrics,
    batch_size: int,
    batch_timeout: float,
    signer: RecordSigner,
    guard: Guard | None = None,
    drain: bool = False,
) -> Any:
    """Process a stream in micro-batches; yields once per batch (for Faust's agent protocol).

    With a ``guard``, each batch waits for the guard's assignment gate, then is processed,
    sent and followed by
    ``guard.after_batch`` under ``guard.lock`` (so rebalance and shutdown handlers never
    see a half-done batch), and skipped once the guard is closed (shutdown).
    """
    latency = metrics.stage_latency.labels(pipeline, stage.stage)
    lock = guard.lock if guard is not None else contextlib.nullcontext()
    if drain:
        batches = drained(app, stream, batch_size)
    else:
        # take_events exists on faust.Stream; the StreamT protocol does not declare it.
        batches = stream.take_events(batch_size, within=batch_timeout)  # type: ignore[attr-defined]
    async for events in batches:
        batch = [to_in_message(e) for e in events]
        if guard is not None:
            await guard.gate.wait()
        started = time.perf_counter()
        async with lock:
            if guard is not None and not guard.open:
                continue
            result = stage.process(batch)
            await send_all(app, result.sends, signer)
            if guard is not None:
                await guard.after_batch(batch, result)
        per_event = (time.perf_counter() - started) / max(1, len(batch))
        latency.observe(per_event)
        # A one-pass stage (streams.onepass) counts each of its stages apart.
        counts: dict[str, Any] = getattr(stage, "counts", None) or {stage.stage: result}
        for name, done in counts.items():
            metrics.events.labels(pipeline, name, "ok").inc(done.ok)
            for reason, n in done.dead.items():
                metrics.events.labels(pipeline, name, "dead_letter").inc(n)
                metrics.dead_letters.labels(pipeline, name, reason).inc(n)
        yield result
