"""End-to-end latency at a fixed offered load, measured the same way for every contender."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord

from benchmarks.events import bench_events, event_keys
from benchmarks.kafka_io import Topic, produce
from benchmarks.options import BenchOptions, say
from streams.errors import RiverlineError
from streams.spec import PipelineSpec

__all__ = ["event_id", "latency_over", "measure_latency", "offered_rate", "quantiles_ms"]


def offered_rate(options: BenchOptions, riverline: dict[str, Any]) -> float:
    """The latency runs' offered events/s: a share of Riverline's measured maximum."""
    return max(1.0, riverline["events_per_s"] * options.latency_load)


def event_id(msg: ConsumerRecord[bytes, bytes], id_field: str) -> str | None:
    """The event id of a raw or output message: Riverline's header, else the JSON body's."""
    header = dict(msg.headers or ()).get("rl.event_id")
    if header:
        return bytes(header).decode()
    try:
        body = json.loads(msg.value or b"")
    except ValueError:
        return None
    found = body.get(id_field, body.get("event_id")) if isinstance(body, dict) else None
    return None if found is None else str(found)


async def measure_latency(
    options: BenchOptions,
    who: str,
    bootstrap: str,
    spec: PipelineSpec,
    raw_topic: str,
    out: Topic,
    rate: float,
    offset_ms: int,
    watches: Sequence[contextlib.AbstractContextManager[Any]] = (),
) -> dict[str, Any]:
    """End-to-end latency at a fixed offered load, the same way for every contender.

    Each event's latency is its first output message's timestamp minus its raw message's
    (both stamped by the producers, as Riverline's ``rl.raw_ts`` header is), joined by
    event id. ``watches`` (CPU shares, the stall probe) measure from the first event offered
    to the last output (not the reading of the topics that follows).
    """
    count = max(100, min(options.latency_events, int(rate * options.latency_seconds)))
    say(options, f"{who} latency: {count:,} events offered at {rate:,.0f} events/s")
    values = bench_events(spec, count, f"lat-{who}", offset_ms=offset_ms)
    keys = event_keys(spec, values)
    async with Topic(bootstrap, raw_topic) as source:
        raw_start = await source.ends()
        start = await out.ends()
        with contextlib.ExitStack() as watching:
            for watch in watches:
                watching.enter_context(watch)
            await produce(bootstrap, raw_topic, values, keys, rate=rate)
            deadline = time.monotonic() + options.drain_timeout
            while sum((await out.ends()).values()) - sum(start.values()) < count:
                if time.monotonic() > deadline:
                    raise RiverlineError(f"{who} latency: not every offered event came out")
                await asyncio.sleep(0.05)
        sent = {
            eid: m.timestamp
            for m in await source.read(raw_start)
            if (eid := event_id(m, spec.id_field)) is not None
        }
    came: dict[str, int] = {}
    for msg in await out.read(start):
        eid = event_id(msg, spec.id_field)
        if eid in sent:
            came.setdefault(eid, msg.timestamp)
    latencies = [max(0.0, float(ts - sent[eid])) for eid, ts in came.items()]
    if len(latencies) < count:
        raise RiverlineError(f"{who} latency: {count - len(latencies):,} offered events missing")
    return {
        "offered_per_s": round(rate),
        "load": options.latency_load,
        "events": len(latencies),
        **quantiles_ms(latencies),
    }


def quantiles_ms(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and the maximum of latencies in milliseconds, to 0.1 ms."""
    qs = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(qs[49], 1),
        "p95_ms": round(qs[94], 1),
        "p99_ms": round(qs[98], 1),
        "max_ms": round(max(latencies), 1),
    }


def latency_over(results: dict[str, Any], kind: str) -> dict[str, float]:
    """Riverline's p50/p95/p99 minus ``kind``'s at the same load; empty if either is missing."""
    mine = results.get("riverline", {}).get("latency")
    theirs = results.get(kind, {}).get("latency")
    if not mine or not theirs:
        return {}
    return {f"{q}_ms": round(mine[f"{q}_ms"] - theirs[f"{q}_ms"], 1) for q in ("p50", "p95", "p99")}
