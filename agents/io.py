"""The seam between Faust and Riverline's stages: events in, batches, messages out, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import faust

from agents.internals import queued_events, send_all
from streams.messages import InMessage
from streams.observability.metrics import WorkerMetrics
from streams.pipeline.stage import StageResult
from streams.trust.records import RecordSigner

__all__ = [
    "AssignmentGate",
    "Guard",
    "Stage",
    "StallWatch",
    "drained",
    "run_stage",
    "to_in_message",
]


class Stage(Protocol):
    """What the batch loop runs: one batch of messages in, a result out."""

    @property
    def stage(self) -> str: ...

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
    """What a checkpointed stage wraps each batch in (see agents.coordinator)."""

    lock: asyncio.Lock
    gate: AssignmentGate

    @property
    def open(self) -> bool: ...

    async def ready(self) -> None:
        """Wait until a batch may run (e.g. a serving worker's first model version)."""

    async def before_batch(self) -> None:
        """Under the lock, before a batch is processed (e.g. swap in a newer model)."""

    async def send(self, result: StageResult) -> None:
        """Under the lock: the batch's outputs go out (acknowledged when this returns)."""

    async def after_batch(self, batch: list[InMessage], result: StageResult) -> None: ...

    async def recover(self, exc: BaseException, kind: str = ...) -> None: ...


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
    and keeps its one check: an event fetched before a rebalance (an older generation) or
    while flow control is off is dropped, as Faust drops it.
    """
    queue = queued_events(stream)
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
    *,
    signer: RecordSigner,
    guard: Guard | None = None,
) -> AsyncIterator[StageResult]:
    """Process a stream in micro-batches; yields once per batch (for Faust's agent protocol).

    With a ``guard``, each batch waits for the guard's assignment gate, then is processed,
    sent by ``guard.send`` and followed by ``guard.after_batch`` under ``guard.lock`` (so
    rebalance and shutdown handlers never see a half-done batch), and skipped once the
    guard is closed (shutdown). A batch that fails as a whole goes to ``guard.recover``,
    which brings the state back to the last checkpoint: the loop goes on, nothing is
    skipped.
    """
    latency = metrics.stage_latency.labels(pipeline, stage.stage)
    async for events in drained(app, stream, batch_size):
        batch = [to_in_message(e) for e in events]
        started = time.perf_counter()
        if guard is None:
            result = stage.process(batch)
            await send_all(app, result.sends, signer)
        else:
            await guard.gate.wait()
            await guard.ready()
            started = time.perf_counter()
            async with guard.lock:
                if not guard.open:
                    continue
                try:
                    await guard.before_batch()
                    result = stage.process(batch)
                    await guard.send(result)
                    await guard.after_batch(batch, result)
                except Exception as exc:
                    await guard.recover(exc)
                    continue
        latency.observe((time.perf_counter() - started) / max(1, len(batch)))
        _count(metrics, pipeline, stage, result)
        yield result


def _count(metrics: WorkerMetrics, pipeline: str, stage: Stage, result: StageResult) -> None:
    # A one-pass stage (streams.pipeline.onepass) counts each of its stages apart.
    counts: dict[str, Any] = getattr(stage, "counts", None) or {stage.stage: result}
    for name, done in counts.items():
        metrics.events.labels(pipeline, name, "ok").inc(done.ok)
        for reason, n in done.dead.items():
            metrics.events.labels(pipeline, name, "dead_letter").inc(n)
            metrics.dead_letters.labels(pipeline, name, reason).inc(n)
