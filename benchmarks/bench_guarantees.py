"""Benchmark section ``guarantees``: exactly-once against at-least-once, side by side.

The same pipeline (default ``pipelines/transactions.toml``) runs twice in one run, each on
fresh topics with one worker: with ``RIVERLINE_GUARANTEE=at_least_once`` (the baseline),
then ``exactly_once``. Both are measured the way a consumer of ``P.predictions`` sees
them, with one ``read_committed`` consumer that follows the topic and notes when each
prediction reaches it (an exactly-once worker's outputs become readable when their
transaction commits):

1. throughput: N events produced at once; events/s between the first and the last
   prediction received;
2. latency at the same offered load for both (a share, ``--latency-load``, of the
   at-least-once run's events/s): each prediction's arrival at the consumer minus its raw
   event's timestamp (stamped by the producer), p50/p95/p99.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition

from benchmarks.contenders import PeakRss, riverline_settings
from benchmarks.events import bench_events, event_keys
from benchmarks.kafka_io import Topic, cluster, ensure, produce
from benchmarks.latency import event_id, offered_rate, quantiles_ms
from benchmarks.options import BenchOptions, say
from streams.cli.workerproc import WorkerProcess
from streams.errors import RiverlineError
from streams.kafka.topics import pipeline_topic_configs, shared_topic_configs, topic_partitions
from streams.spec import PipelineSpec, load_spec

__all__ = ["GUARANTEES", "Witness", "guarantees_section"]

#: The runs, baseline first.
GUARANTEES: Final = ("at_least_once", "exactly_once")


def guarantees_section(options: BenchOptions) -> dict[str, Any]:
    """Throughput and latency with exactly-once outputs, beside at-least-once."""
    with cluster(options) as bootstrap:
        return asyncio.run(_guarantees(options, bootstrap))


class Witness:
    """A ``read_committed`` consumer following a topic from its end: when each message
    (by key) first reached it, in epoch milliseconds."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.arrived: dict[bytes, float] = {}
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            fetch_max_wait_ms=10,
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Witness:
        await self._consumer.start()
        parts = await topic_partitions(self.bootstrap, self.topic)
        tps = [TopicPartition(self.topic, p) for p in sorted(parts or ())]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the positions now, before anything is produced
            await self._consumer.position(tp)
        self._task = asyncio.create_task(self._follow())
        return self

    async def _follow(self) -> None:
        while True:
            got = await self._consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.time() * 1000
            for msgs in got.values():
                for m in msgs:
                    if m.key is not None:
                        self.arrived.setdefault(m.key, now)

    async def until(self, count: int, within: float, who: str) -> None:
        deadline = time.monotonic() + within
        while len(self.arrived) < count:
            if self._task is not None and self._task.done():
                self._task.result()  # its error, if it failed
            if time.monotonic() > deadline:
                raise RiverlineError(
                    f"{who}: only {len(self.arrived):,} of {count:,} predictions after "
                    f"{within:.0f} s; is the machine overloaded?"
                )
            await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def _guarantees(options: BenchOptions, bootstrap: str) -> dict[str, Any]:
    source = options.pipeline or options.settings.pipelines_dir / "transactions.toml"
    spec = load_spec(source)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="riverline-bench-") as tmp_name:
        rate: float | None = None
        for guarantee in GUARANTEES:
            folder = Path(tmp_name) / guarantee
            folder.mkdir()
            results[guarantee] = await _run(options, bootstrap, source, folder, guarantee, rate)
            rate = rate or offered_rate(options, results[guarantee])
    return _report(options, spec, results)


async def _run(
    options: BenchOptions,
    bootstrap: str,
    spec_path: Path,
    folder: Path,
    guarantee: str,
    rate: float | None,
) -> dict[str, Any]:
    """One worker with ``guarantee`` on fresh topics: its throughput, then its latency at
    ``rate`` (None: a share of the throughput just measured)."""
    sub = dataclasses.replace(options, run_tag=f"{options.run_tag}{guarantee[:3]}")
    spec = load_spec(spec_path)
    settings = riverline_settings(sub, bootstrap, folder / "home").model_copy(
        update={"guarantee": guarantee}
    )
    await ensure(bootstrap, shared_topic_configs(settings) + pipeline_topic_configs(settings, spec))
    topics = spec.topics(settings.namespace)
    n = options.kafka_events
    worker = WorkerProcess(settings, [spec_path], folder / "worker.log")
    say(options, f"guarantees: {guarantee}, {n:,} events")
    worker.start()
    try:
        await asyncio.to_thread(worker.wait_ready, options.drain_timeout)
        assert worker.proc is not None
        rss = PeakRss(worker.proc.pid)
        values = bench_events(spec, n, f"g-{guarantee}", offset_ms=0)
        async with Witness(bootstrap, topics.predictions) as witness:
            await produce(bootstrap, topics.raw, values, event_keys(spec, values))
            await witness.until(n, options.drain_timeout, guarantee)
            rss.sample()
            arrived = sorted(witness.arrived.values())
        seconds = max(0.001, (arrived[-1] - arrived[0]) / 1000)
        result: dict[str, Any] = {
            "events": n,
            "events_per_s": round((n - 1) / seconds),
            "seconds": round(seconds, 2),
        }
        say(options, f"  {guarantee}: {result['events_per_s']:,} events/s")
        offered = rate if rate is not None else offered_rate(options, result)
        result["latency"] = await _latency(options, bootstrap, spec, topics, guarantee, offered)
        rss.sample()
        result["peak_rss_mib"] = rss.mib
        return result
    finally:
        await asyncio.to_thread(worker.stop)


async def _latency(
    options: BenchOptions,
    bootstrap: str,
    spec: PipelineSpec,
    topics: Any,
    who: str,
    rate: float,
) -> dict[str, Any]:
    """Arrival at a read_committed consumer minus the raw event's timestamp, at ``rate``."""
    count = max(100, min(options.latency_events, int(rate * options.latency_seconds)))
    say(options, f"  {who} latency: {count:,} events offered at {rate:,.0f} events/s")
    values = bench_events(spec, count, f"lat-{who}", offset_ms=10_000 * options.kafka_events)
    async with Topic(bootstrap, topics.raw) as raw, Witness(bootstrap, topics.predictions) as w:
        raw_start = await raw.ends()
        await produce(bootstrap, topics.raw, values, event_keys(spec, values), rate=rate)
        await w.until(count, options.drain_timeout, f"{who} latency")
        sent = {
            eid.encode(): m.timestamp
            for m in await raw.read(raw_start)
            if (eid := event_id(m, spec.id_field)) is not None
        }
        latencies = [max(0.0, w.arrived[k] - ts) for k, ts in sent.items() if k in w.arrived]
    if len(latencies) < count:
        raise RiverlineError(f"{who} latency: {count - len(latencies):,} offered events missing")
    return {"offered_per_s": round(rate), "events": len(latencies), **quantiles_ms(latencies)}


def _report(options: BenchOptions, spec: PipelineSpec, results: dict[str, Any]) -> dict[str, Any]:
    alo, eos = results["at_least_once"], results["exactly_once"]
    commit = options.settings.model_copy(update={"guarantee": "exactly_once"})
    return {
        "title": (
            f"guarantees: {spec.name}, {options.kafka_events:,} events, 1 worker, as a "
            "read_committed consumer sees the predictions"
        ),
        "commit_interval_s": commit.effective_checkpoint_interval,
        "results": results,
        "ratios": {
            "exactly_once/at_least_once events_per_s": round(
                eos["events_per_s"] / alo["events_per_s"], 3
            ),
        },
        "latency_added_ms": {
            q: round(eos["latency"][q] - alo["latency"][q], 1)
            for q in ("p50_ms", "p95_ms", "p99_ms")
        },
        "rows": [
            {
                "guarantee": g,
                "events_per_s": r["events_per_s"],
                "p50_ms": r["latency"]["p50_ms"],
                "p99_ms": r["latency"]["p99_ms"],
                "peak_rss_mib": r["peak_rss_mib"],
            }
            for g, r in results.items()
        ],
    }
