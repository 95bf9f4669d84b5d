"""The eager hand-over delivers as Faust's race does, without its tasks (agents.handover)."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import faust
import pytest
from mode import Service

from agents.internals import HandoverConsumer, race_eagerly, use_handover_consumer


async def _never_called(*_: Any) -> Any:
    raise AssertionError("a callback done in its first step needs no race")


def test_a_callback_done_at_once_needs_no_race_and_closes_the_other_waits() -> None:
    delivered: list[str] = []

    async def callback() -> str:
        delivered.append("m")
        return "ok"

    async def main() -> None:
        suspend = asyncio.Event()
        other = suspend.wait()
        result = await race_eagerly(_never_called, callback(), other)
        assert result.results == ["ok"]
        assert not result.stopped
        assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED

    asyncio.run(main())
    assert delivered == ["m"]


def test_a_waiting_callback_finishes_inside_the_race() -> None:
    async def main() -> None:
        service = Service()
        room = asyncio.Event()
        steps: list[str] = []

        async def callback() -> str:
            steps.append("first step")
            await room.wait()  # a full queue
            steps.append("put")
            return "delivered"

        asyncio.get_running_loop().call_later(0.01, room.set)
        result = await race_eagerly(service.wait_first, callback(), asyncio.Event().wait())
        assert result.results == ["delivered"]
        assert steps == ["first step", "put"]

    asyncio.run(main())


def test_a_rebalance_still_abandons_a_waiting_callback() -> None:
    async def main() -> None:
        service = Service()
        suspend = asyncio.Event()
        ended: list[str] = []

        async def callback() -> None:
            try:
                await asyncio.Event().wait()  # a queue that never has room
            finally:
                ended.append("cancelled")

        asyncio.get_running_loop().call_later(0.01, suspend.set)
        result = await race_eagerly(service.wait_first, callback(), suspend.wait())
        assert result.results == [True]  # the suspension won
        await asyncio.sleep(0)  # the loser's cancellation runs
        assert ended == ["cancelled"]

    asyncio.run(main())


def test_errors_come_out_from_either_step() -> None:
    async def main() -> None:
        service = Service()

        async def fails_at_once() -> None:
            raise ValueError("bad message")

        other = asyncio.Event().wait()
        with pytest.raises(ValueError, match="bad message"):
            await race_eagerly(_never_called, fails_at_once(), other)
        assert inspect.getcoroutinestate(other) == inspect.CORO_CLOSED

        async def fails_later() -> None:
            await asyncio.sleep(0)
            raise KeyError("later")

        with pytest.raises(KeyError, match="later"):
            await race_eagerly(service.wait_first, fails_later(), asyncio.Event().wait())

    asyncio.run(main())


def test_an_app_given_the_handover_consumer_creates_it() -> None:
    app = faust.App("handover-test", broker="kafka://127.0.0.1:1", autodiscover=False)
    try:
        use_handover_consumer(app)
        assert app.transport.Consumer is HandoverConsumer
    finally:
        app.loop.close()
