"""Riverline's seam with Faust's streams (agents.io): raw events and drained micro-batches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import faust
from faust.types import TP
from faust.types.tuples import Message

from agents.internals import RawTopic
from agents.io import drained


def _message(offset: int, generation: int = 1) -> Message:
    return Message(
        "t.raw",
        0,
        offset,
        timestamp=1.0,
        timestamp_type=0,
        headers=[("rl.h", b"1")],
        key=b"k%d" % offset,
        value=b'{"n": %d}' % offset,
        checksum=None,
        tp=TP("t.raw", 0),
        generation_id=generation,
    )


def test_a_raw_topic_and_its_clones_make_the_events_faust_makes_of_raw_bytes() -> None:
    app = faust.App(
        "io-test",
        broker="kafka://127.0.0.1:1",
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
    )
    topic = RawTopic(app, topics=["t.raw"], acks=False)

    async def main() -> None:
        faust_event = await app.topic("t.raw", acks=False).decode(_message(3))
        for channel in (topic, topic.clone(is_iterator=True)):
            event = await channel.decode(_message(3))
            assert type(event) is type(faust_event)
            assert (event.key, event.value) == (faust_event.key, faust_event.value)
            assert (event.key, event.value) == (b"k3", b'{"n": 3}')
            assert event.headers == faust_event.headers == {"rl.h": b"1"}
            assert event.message.offset == 3

    asyncio.run(main())


@dataclass
class _Flow:
    active: bool = True

    def is_active(self) -> bool:
        return self.active


@dataclass
class _App:
    consumer_generation_id: int = 1
    flow_control: _Flow = field(default_factory=_Flow)


@dataclass
class _Event:
    message: Message


class _Stream:
    """What drained() reads: ``events()`` (Faust's step per event) and its channel's queue."""

    def __init__(self) -> None:
        self.channel = self
        self.queue: asyncio.Queue[_Event] = asyncio.Queue()
        self.stepped = 0

    async def events(self) -> AsyncIterator[_Event]:
        while True:
            event = await self.queue.get()
            self.stepped += 1
            yield event


def test_a_batch_is_the_first_event_and_what_is_queued_behind_it_up_to_the_batch_size() -> None:
    async def main() -> None:
        app, stream = _App(), _Stream()
        for offset in range(7):
            stream.queue.put_nowait(_Event(_message(offset)))
        batches = drained(app, stream, batch_size=5)  # type: ignore[arg-type]
        first = await anext(batches)
        assert [e.message.offset for e in first] == [0, 1, 2, 3, 4]
        assert stream.stepped == 1  # the rest came straight from the queue
        second = await anext(batches)
        assert [e.message.offset for e in second] == [5, 6]  # what was left, no waiting for more
        stream.queue.put_nowait(_Event(_message(7)))
        assert [e.message.offset for e in await anext(batches)] == [7]  # alone, at once

    asyncio.run(main())


def test_queued_events_faust_would_skip_are_dropped() -> None:
    async def main() -> None:
        app, stream = _App(consumer_generation_id=2), _Stream()
        stream.queue.put_nowait(_Event(_message(0, generation=2)))
        stream.queue.put_nowait(_Event(_message(1, generation=1)))  # fetched before a rebalance
        stream.queue.put_nowait(_Event(_message(2, generation=2)))
        batches = drained(app, stream, batch_size=10)  # type: ignore[arg-type]
        assert [e.message.offset for e in await anext(batches)] == [0, 2]
        app.flow_control.active = False  # a rebalance has begun: nothing queued goes through
        stream.queue.put_nowait(_Event(_message(3, generation=2)))
        stream.queue.put_nowait(_Event(_message(4, generation=2)))
        # The first comes through the stream's step (where Faust checks it itself); the one
        # queued behind it is dropped here.
        assert [e.message.offset for e in await anext(batches)] == [3]

    asyncio.run(main())
