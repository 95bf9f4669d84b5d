"""``kill -USR1 <worker pid>``: log what a worker is waiting on.

For an operator whose worker looks stuck: Faust's consumer state (generation, flow,
paused partitions, read offsets, aiokafka positions), every stream's count and queue, and
where each task and each Riverline batch loop waits. One WARNING record, nothing changed.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import io
import logging
from pathlib import Path
from typing import Any

import faust

from agents.internals import consumer_state

__all__ = ["dump_state"]

log = logging.getLogger("riverline.worker")

_ROOT = Path(__file__).resolve().parents[1]
_OURS = (str(_ROOT / "agents"), str(_ROOT / "streams"))


def dump_state(app: faust.App) -> None:
    """Log what the worker waits on: consumer positions, flow, streams, task stacks."""
    out = io.StringIO()
    consumer: Any = app.consumer
    out.write(
        f"generation {app.consumer_generation_id}, flow active {app.flow_control.is_active()}, "
        f"consumer flow active {getattr(consumer, 'flow_active', None)}\n"
    )
    monitor: Any = app.monitor
    out.write(f"received by topic: {dict(monitor.messages_received_by_topic)}\n")
    # Faust counts the events that go through its stream's step: for drained batches
    # (agents.io.drained), the first of each batch. riverline_events_total counts them all.
    out.write(f"stream steps by stream: {dict(monitor.events_by_stream)}\n")
    for line in consumer_state(app):
        out.write(line + "\n")
    for task in asyncio.all_tasks():
        out.write(f"--- {task.get_name()}\n")
        for where in _await_chain(task.get_coro()):
            out.write(f"    {where}\n")
    # Async generators (our stages' batch loops) are not tasks: find them by their code.
    for obj in gc.get_objects():
        if inspect.isasyncgen(obj) or inspect.iscoroutine(obj):
            frame = getattr(obj, "ag_frame", None) or getattr(obj, "cr_frame", None)
            if frame is not None and frame.f_code.co_filename.startswith(_OURS):
                out.write(f"=== {frame.f_code.co_name}\n")
                for where in _await_chain(obj):
                    out.write(f"    {where}\n")
    log.warning("state on SIGUSR1: %d tasks\n%s", len(asyncio.all_tasks()), out.getvalue())


def _await_chain(obj: object) -> list[str]:
    """Where a coroutine waits, outermost first, through coroutines and async generators."""
    chain: list[str] = []
    for _ in range(50):
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
        frame = frame or getattr(obj, "gi_frame", None)
        if frame is not None:
            code = frame.f_code
            chain.append(f"{code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} {code.co_name}")
        nxt = (
            getattr(obj, "cr_await", None)
            or getattr(obj, "ag_await", None)
            or getattr(obj, "gi_yieldfrom", None)
        )
        if nxt is None:
            chain.append(repr(obj)[:160])
            break
        obj = nxt
    return chain
