"""Faust's hand-over of fetched messages to agents, without four tasks per message.

Faust's consumer hands each fetched message to the agents' channels with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: the callback
races a rebalance, so a callback blocked on a full channel queue is abandoned when flow
is suspended. mode's ``wait_first`` makes that race with four tasks (the callback, the
suspension, the consumer's stopped and crashed events) and ``asyncio.wait``, then cancels
three of them: per message, and nearly always for a callback that finishes in its first
step (the event is put on a queue with room). py-spy on a worker at full load put 8% of
its samples in the hand-over itself and 15% in the event loop's task machinery, much of
it those tasks (see README, Benchmark).

:class:`HandoverConsumer` runs the callback's first step at once, in the consumer's own
task. A callback that finishes there is done (no task, no wait). One that has to wait
(a full queue, flow control) goes on from where it stopped inside the same race as
before, so a rebalance still abandons it. Either way the message is delivered exactly
as Faust delivers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitArgT, WaitResults

__all__ = ["HandoverConsumer", "race_eagerly", "use_handover_consumer"]


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


def _close(waits: tuple[WaitArgT, ...]) -> None:
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
    """Faust's aiokafka consumer with the first step of each hand-over run eagerly."""

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
