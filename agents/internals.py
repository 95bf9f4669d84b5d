"""Every use of a private Faust, mode or aiokafka API, in one place.

Riverline needs a few things the public APIs do not offer: to commit offsets Faust never
saw acked (Riverline commits after its own checkpoints), to seek back so Faust delivers
again, to write record batches straight to aiokafka, to read the events queued behind a
stream's current one, a shorter fetch wait than Faust's fixed 1.5 s, and a cheaper
hand-over of fetched messages. Each relies on how the versions below are written; this
module refuses to load with others, so an upgrade fails at start with a clear message
instead of misbehaving at run time. To upgrade: read each function against the new
sources, run ``make test`` and ``make chaos``, then widen :data:`WRITTEN_FOR`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Mapping
from importlib import metadata
from typing import Any

import faust
from aiokafka import AIOKafkaProducer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitArgT, WaitResults

from streams.errors import RiverlineError
from streams.messages import OutMessage
from streams.trust.records import RecordSigner

__all__ = [
    "WRITTEN_FOR",
    "HandoverConsumer",
    "RawTopic",
    "check_versions",
    "commit_offsets",
    "consumer_state",
    "queued_events",
    "read_offset",
    "seek_back",
    "send_all",
    "use_fetch_max_wait",
    "use_handover_consumer",
]

#: Distribution -> the version prefixes this module was written and tested for.
WRITTEN_FOR: Mapping[str, tuple[str, ...]] = {
    "faust-streaming": ("0.15.",),
    "mode-streaming": ("0.7.",),
    "aiokafka": ("0.14.",),
}


def check_versions(
    installed: Callable[[str], str] = metadata.version,
) -> None:
    """Refuse versions of Faust, mode and aiokafka this module was not written for.

    Raises
    ------
    RiverlineError
        Naming each installed version and the versions Riverline was written for.
    """
    wrong = []
    for dist, prefixes in WRITTEN_FOR.items():
        try:
            version = installed(dist)
        except metadata.PackageNotFoundError:
            wrong.append(f"{dist} is not installed")
            continue
        if not version.startswith(prefixes):
            wrong.append(f"{dist} {version} is installed")
    if wrong:
        wanted = ", ".join(
            f"{d} {' or '.join(p + 'x' for p in ps)}" for d, ps in WRITTEN_FOR.items()
        )
        raise RiverlineError(
            f"Riverline's worker uses private APIs of Faust, mode and aiokafka and was "
            f"written for {wanted}, but {'; '.join(wrong)}. Install the versions in "
            "Riverline's lock file (`make install`), or port agents/internals.py."
        )


check_versions()


# -- the consumer ------------------------------------------------------------------------


async def commit_offsets(app: faust.App, offsets: Mapping[Any, int]) -> None:
    """Commit these offsets of the worker's group as they are.

    Faust's public ``commit()`` commits only offsets it saw acked, and Riverline's topics
    are never acked (``acks=False``): it commits after its own checkpoints.
    """
    if offsets:
        consumer: Any = app.consumer
        await consumer._commit(dict(offsets))


async def seek_back(app: faust.App, offsets: Mapping[Any, int]) -> None:
    """Seek partitions Riverline commits itself back to these offsets, so Faust delivers
    them again.

    Faust drops fetched messages below its read offset; a fetch in flight during a seek
    can move that offset past the seek's own messages. ``seek_wait`` seeks in the
    consumer's thread; the read offsets are reset here so the messages come through.
    """
    consumer: Any = app.consumer
    await consumer.seek_wait(dict(offsets))
    for tp, offset in offsets.items():
        consumer._read_offset[tp] = offset if offset else None


def read_offset(app: faust.App, tp: Any) -> int | None:
    """The last offset Faust's consumer handed to a stream for ``tp`` (None: none yet)."""
    consumer: Any = app.consumer
    found = consumer._read_offset.get(tp)
    return None if found is None else int(found)


def consumer_state(app: faust.App) -> list[str]:
    """Lines describing the consumer's internal state, for the SIGUSR1 dump."""
    consumer: Any = app.consumer
    lines = []
    for agent in app.agents.values():
        for actor in getattr(agent, "_actors", ()):
            stream = getattr(actor, "stream", None)
            queue = getattr(getattr(stream, "channel", None), "queue", None)
            lines.append(
                f"agent {agent.name}: stream steps {getattr(stream, 'events_total', '?')}, "
                f"queue {queue.qsize() if queue is not None else '?'}"
            )
    for name in ("_active_partitions", "_paused_partitions", "_buffered_partitions"):
        lines.append(f"consumer {name}: {sorted(map(str, getattr(consumer, name, None) or ()))}")
    offsets = {str(k): v for k, v in consumer._read_offset.items()}
    lines.append(f"consumer read offsets: {offsets}")
    try:
        client = consumer._thread._ensure_consumer()
        lines.append(f"aiokafka paused: {sorted(map(str, client.paused()))}")
        state = client._subscription.subscription.assignment.state_value
        for tp in sorted(client.assignment(), key=str):
            tps = state(tp)
            at = tps.position if tps.has_valid_position else "-"
            lines.append(f"aiokafka {tp}: position {at}, paused {tps.paused}")
    except Exception as exc:  # a debugging aid: never fail the worker
        lines.append(f"aiokafka state unavailable: {exc!r}")
    return lines


def use_fetch_max_wait(ms: int) -> None:
    """Faust's consumer with ``fetch_max_wait_ms = ms`` instead of its hard-coded 1,500,
    reading with ``isolation_level="read_committed"``.

    Read committed: Riverline's inputs may be written in transactions (a user's producer,
    a serving worker's learning log in exactly-once mode), and an aborted transaction's
    records must never be processed. Faust reads committed only in its own exactly-once
    mode, which Riverline does not use.

    aiokafka keeps one fetch in flight per broker, and leaves out of it a partition whose
    fetched records are not consumed yet. A fetch then asks only for an idle partition
    (``P.labels``) and the broker holds it for the whole wait while events pile up on
    ``P.raw``: events waited up to the full 1.5 s. Idle, a short wait costs a fetch every
    ``ms`` milliseconds.
    """
    cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(cls, "_riverline_original", None) or cls._create_worker_consumer

    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        consumer = original(self, *args, **kwargs)
        consumer._fetch_max_wait_ms = ms  # both read by AIOKafkaConsumer.start()
        consumer._isolation_level = "read_committed"
        return consumer

    cls._riverline_original = original
    cls._create_worker_consumer = create


# -- streams -----------------------------------------------------------------------------


def queued_events(stream: faust.StreamT) -> Any:
    """The queue of events Faust has handed to ``stream`` but it has not taken yet."""
    return stream.channel.queue  # type: ignore[attr-defined]


class RawTopic(faust.Topic):
    """A topic read as the bytes it holds: each event built without Faust's codec registry.

    Faust decodes a message through its schema, serializer registry and codec even when
    both serializers are ``raw``, which leave the bytes as they are. The events are the
    same: key and value as bytes (or ``None``), the message's headers. A subclass, so the
    clones Faust makes of a topic decode the same way.
    """

    def _compile_decode(self) -> None:
        app = self.app
        # Looked up once: Faust's settings lookup is slow per message.
        event: Any = app.conf.Event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event(app, message.key, message.value, message.headers, message)

        self.decode = decode  # type: ignore[method-assign]


# -- the producer ------------------------------------------------------------------------


async def send_all(
    app: faust.App,
    sends: list[OutMessage],
    signer: RecordSigner,
    producer: AIOKafkaProducer | None = None,
) -> None:
    """Send, with each message's ``rl.mac``, and wait for every acknowledgement, so
    offsets never commit ahead of outputs.

    Through Faust's producer, or ``producer`` (a transactional one, in a transaction it
    has begun: exactly-once mode).

    Straight to aiokafka, a record batch per topic partition: Faust's ``Topic.send``
    builds a topic object, a future and a callback chain per message, and aiokafka's
    ``send`` a future, two partition lists and a murmur2 hash per message. Partitions are
    aiokafka's own choice (murmur2 of the key, as Kafka's Java client), computed only
    where a topic has more than one.
    """
    if not sends:
        return
    kafka: Any = producer
    if kafka is None:
        faust_producer: Any = app.producer
        kafka = faust_producer._ensure_producer()  # aiokafka.AIOKafkaProducer
    metadata_ = kafka.client.cluster
    #: topic -> (all partitions, available ones), as aiokafka's partitioner takes them
    partitions: dict[str, tuple[list[int], list[int]]] = {}
    batches: dict[tuple[str, int], Any] = {}
    futures = []
    for out in sends:
        topic = out.topic
        if topic not in partitions:
            await kafka.client._wait_on_metadata(topic)
            partitions[topic] = (
                sorted(metadata_.partitions_for_topic(topic)),
                sorted(metadata_.available_partitions_for_topic(topic)),
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


# -- the hand-over of fetched messages -------------------------------------------------


class _Resumed:
    """Awaits the rest of a coroutine that has already run up to its first suspension.

    Behaves as ``await coro`` from that point: ``yielded`` (what the coroutine's first
    step yielded, a future or ``None``) goes to the awaiting task, what the task sends or
    throws back (a result, a cancellation) goes into the coroutine.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation or error for the coroutine
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def _close(waits: Iterable[WaitArgT]) -> None:
    """Close the coroutines of a race that is over before they started."""
    for wait in waits:
        if asyncio.iscoroutine(wait):
            wait.close()


async def race_eagerly(
    race: Callable[..., Awaitable[WaitResults]], first: Coroutine[Any, Any, Any], *others: WaitArgT
) -> WaitResults:
    """``race(first, *others)``, but ``first`` runs its first step now, in the caller's task.

    ``first`` done in that step: its result, and ``others`` are closed unstarted. Else the
    rest of ``first`` races ``others`` in ``race`` (mode's ``Service.wait_first``), as the
    whole of it would have.
    """
    try:
        yielded = first.send(None)
    except StopIteration as done:
        _close(others)
        return WaitResults([first], [done.value], False)
    except BaseException:
        _close(others)
        raise
    return await race(_Resumed(first, yielded), *others)


class HandoverConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with the first step of each hand-over run eagerly.

    Faust's consumer hands each fetched message to the agents' channels with
    ``await self.wait_first(callback(message), self.suspend_flow.wait())``: the callback
    races a rebalance, so a callback blocked on a full channel queue is abandoned when
    flow is suspended. mode's ``wait_first`` makes that race with four tasks and
    ``asyncio.wait`` per message, nearly always for a callback that finishes in its first
    step (the event is put on a queue with room). Here that first step runs at once, in
    the consumer's own task; a callback that has to wait goes on from where it stopped
    inside the same race as before, so a rebalance still abandons it.
    """

    # mode's signature, which Faust calls: ``timeout`` is its parameter, not ours.
    async def wait_first(self, *coros: WaitArgT, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109
        first = coros[0] if coros else None
        if timeout is not None or not asyncio.iscoroutine(first):
            return await super().wait_first(*coros, timeout=timeout)
        return await race_eagerly(super().wait_first, first, *coros[1:])


def use_handover_consumer(app: faust.App) -> None:
    """Make ``app`` create :class:`HandoverConsumer` (before the app starts)."""
    transport: Any = app.transport
    transport.Consumer = HandoverConsumer
