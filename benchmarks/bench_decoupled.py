"""Benchmark section ``decoupled``: serving workers and one learner, beside one worker.

On a 4-partition copy of the pipeline (default ``pipelines/transactions.toml``), one run
measures, side by side:

1. serving throughput: N events through one worker in single mode (the baseline), then
   through 1 and through 2 serving workers beside one learner (``mode = "decoupled"``),
   events/s between the first and the last prediction, as the pipeline section measures;
2. the learner's own maximum: a fresh learner over a learning log pre-filled with the
   records the 1-worker run's serving worker wrote, records/s
   (:func:`benchmarks.decoupled.time_learner`);
3. model staleness: the 2-worker fleet under a paced load of a share (``--latency-load``)
   of the 1-worker serving rate, the serving workers' staleness gauges sampled over it;
4. the capacity model: how many serving workers one learner keeps up with.

Each run has its own namespace (topics, groups, learner checkpoints), so none sees another's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from benchmarks.bench_pipeline import spec_with_partitions
from benchmarks.contenders import drain, run_riverline
from benchmarks.decoupled import Fleet, GaugeSampler, copy_log, decoupled_spec, spread, time_learner
from benchmarks.events import bench_events, event_keys
from benchmarks.kafka_io import Topic, cluster, ensure, produce
from benchmarks.latency import measure_latency, offered_rate
from benchmarks.options import BenchOptions, say
from streams.errors import RiverlineError
from streams.kafka.topics import pipeline_topic_configs, shared_topic_configs
from streams.spec import PipelineSpec, load_spec
from streams.trust.records import RecordSigner

__all__ = ["PARTITIONS", "STALENESS_GAUGES", "decoupled_section"]

#: Partitions of the raw topic (and the others but the learning log) in every run.
PARTITIONS: Final = 4
#: The serving workers' gauges sampled in the staleness run.
STALENESS_GAUGES: Final = ("riverline_model_staleness_samples", "riverline_model_age_seconds")


def decoupled_section(options: BenchOptions) -> dict[str, Any]:
    """Serving throughput with 1 and 2 workers, the learner's maximum, staleness, capacity."""
    with cluster(options) as bootstrap:
        return asyncio.run(_decoupled(options, bootstrap))


@dataclass(frozen=True)
class _Setup:
    """One run's own namespace (in ``options``), spec copy, topics and folder."""

    options: BenchOptions
    spec_path: Path
    spec: PipelineSpec
    folder: Path

    def fleet(self, bootstrap: str) -> Fleet:
        """The run's learner and serving workers (none started yet)."""
        return Fleet(self.options, bootstrap, self.spec_path, self.spec.name, self.folder)

    def producer(self, bootstrap: str) -> Callable[[], Awaitable[None]]:
        """Sends the run's events, as fast as possible, once called."""
        values = bench_events(self.spec, self.options.kafka_events, "dec", offset_ms=0)
        raw = self.spec.topics(self.options.namespace).raw
        return functools.partial(produce, bootstrap, raw, values, event_keys(self.spec, values))


async def _setup(
    options: BenchOptions, bootstrap: str, source: Path, tmp: Path, tag: str, decoupled: bool
) -> _Setup:
    sub = dataclasses.replace(options, run_tag=f"{options.run_tag}{tag}")
    folder = tmp / tag
    folder.mkdir()
    spec_path = spec_with_partitions(source, PARTITIONS, folder)
    if decoupled:
        decoupled_spec(spec_path)
    spec = load_spec(spec_path)
    settings = options.settings.model_copy(update={"namespace": sub.namespace})
    await ensure(bootstrap, shared_topic_configs(settings) + pipeline_topic_configs(settings, spec))
    return _Setup(sub, spec_path, spec, folder)


async def _decoupled(options: BenchOptions, bootstrap: str) -> dict[str, Any]:
    source = options.pipeline or options.settings.pipelines_dir / "transactions.toml"
    with tempfile.TemporaryDirectory(prefix="riverline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # The learner run's topics first: their leaders are settled when its log is filled.
        alone = await _setup(options, bootstrap, source, tmp, "learn", decoupled=True)
        single = await _single(options, bootstrap, source, tmp)
        one = await _serving(options, bootstrap, source, tmp, 1)
        two = await _serving(options, bootstrap, source, tmp, 2, offered_rate(options, one))
        learner = await _learner(options, bootstrap, alone, one.pop("learning_log"))
    two.pop("learning_log")
    return _report(options, load_spec(source).name, single, one, two, learner)


async def _single(options: BenchOptions, bootstrap: str, source: Path, tmp: Path) -> dict[str, Any]:
    """The baseline: one worker in single mode on the same partitions."""
    setup = await _setup(options, bootstrap, source, tmp, "single", decoupled=False)
    n = options.kafka_events
    say(options, f"decoupled: baseline, single mode, {n:,} events on {PARTITIONS} partitions")
    result = await run_riverline(
        setup.options,
        bootstrap,
        setup.spec_path,
        n,
        setup.folder,
        1,
        latency=False,
        produce=setup.producer(bootstrap),
    )
    say(options, f"  single mode, 1 worker: {result['events_per_s']:,} events/s")
    return result


async def _serving(
    options: BenchOptions,
    bootstrap: str,
    source: Path,
    tmp: Path,
    workers: int,
    staleness_rate: float | None = None,
) -> dict[str, Any]:
    """``workers`` serving workers beside one learner until every event is predicted; then,
    at ``staleness_rate`` events/s if given, the staleness run."""
    setup = await _setup(options, bootstrap, source, tmp, f"serve{workers}", decoupled=True)
    n = options.kafka_events
    topics = setup.spec.topics(setup.options.namespace)
    say(options, f"decoupled: {n:,} events, {workers} serving worker(s) and one learner")
    async with setup.fleet(bootstrap) as fleet:
        fleet.start_learner()
        await fleet.wait_learner()
        await fleet.start_servers(workers)
        await setup.producer(bootstrap)()
        name = f"{workers} serving worker(s)"
        async with Topic(bootstrap, topics.predictions) as out:
            result = await drain(setup.options, name, out, n, fleet.serving_rss, fleet.alive)
            result["learner_backlog"] = await fleet.backlog(topics.learn)
            result["predicted"] = await out.distinct_keys()
            if staleness_rate is not None:
                # The learner first learns what the throughput run left: the staleness is
                # the paced load's, not that backlog's.
                await fleet.caught_up(topics.learn)
                result["staleness"] = await _staleness(setup, bootstrap, fleet, out, staleness_rate)
        result["learner_peak_rss_mib"] = round(sum(r.mib for r in fleet.learner_rss), 1)
    say(options, f"  {name}: {result['events_per_s']:,} events/s")
    result["learning_log"] = topics.learn
    return result


async def _staleness(
    setup: _Setup, bootstrap: str, fleet: Fleet, out: Topic, rate: float
) -> dict[str, Any]:
    """The serving workers' staleness gauges, sampled once a second under a paced load."""
    settings, spec = setup.options.settings, setup.spec
    sampler = GaugeSampler(fleet.servers, STALENESS_GAUGES)
    latency = await measure_latency(
        setup.options,
        "decoupled",
        bootstrap,
        spec,
        spec.topics(setup.options.namespace).raw,
        out,
        rate,
        setup.options.kafka_events * 10_000,
        (sampler,),
    )
    staleness, age = (sampler.values[g] for g in STALENESS_GAUGES)
    return {
        "offered_per_s": latency["offered_per_s"],
        "load": latency["load"],
        "events": latency["events"],
        "serving_workers": len(fleet.servers),
        "scrapes": sampler.scrapes,
        "samples": len(staleness),
        "staleness_samples": spread(staleness),
        "age_seconds": spread(age),
        "checkpoint_every": settings.checkpoint_every,
        "checkpoint_interval_s": settings.checkpoint_interval,
        "latency": {k: v for k, v in latency.items() if k.endswith("_ms")},
    }


async def _learner(
    options: BenchOptions, bootstrap: str, setup: _Setup, log: str
) -> dict[str, Any]:
    """One learner alone over a copy of the 1-worker run's learning log, timed."""
    target = setup.spec.topics(setup.options.namespace).learn
    signer = RecordSigner(options.settings.signing_key_bytes())
    records = await copy_log(bootstrap, log, target, signer)
    if records == 0:
        raise RiverlineError(f"benchmark, decoupled: the learning log {log} is empty")
    say(options, f"decoupled: one learner alone over a learning log of {records:,} records")
    async with setup.fleet(bootstrap) as fleet:
        result = await time_learner(setup.options, fleet, records)
    say(options, f"  learner: {result['records_per_s']:,} records/s")
    return result


def _report(
    options: BenchOptions,
    pipeline: str,
    single: dict[str, Any],
    one: dict[str, Any],
    two: dict[str, Any],
    learner: dict[str, Any],
) -> dict[str, Any]:
    """The section's report: the runs, their ratios, staleness and the capacity model."""
    n = options.kafka_events
    staleness = two.pop("staleness")
    return {
        "title": (
            f"decoupled: {pipeline}, {n:,} events, {PARTITIONS} partitions, serving workers "
            "beside one learner"
        ),
        "pipeline": pipeline,
        "events": n,
        "partitions": PARTITIONS,
        "measures": (
            "serving: events/s between the first and the last prediction (message timestamps); "
            "learner: records/s of one learner over a pre-filled learning log, from its status"
        ),
        "baseline": (
            f"single mode, 1 worker on the same {PARTITIONS} partitions: "
            f"{single['events_per_s']:,} events/s"
        ),
        "serving": {
            "single_1_worker": single,
            "decoupled_1_worker": one,
            "decoupled_2_workers": two,
        },
        "ratios": {
            "decoupled 2 workers / 1 worker": _ratio(two["events_per_s"], one["events_per_s"]),
            "decoupled 1 worker / single 1 worker": _ratio(
                one["events_per_s"], single["events_per_s"]
            ),
        },
        "learner": learner,
        "staleness": staleness,
        "capacity": _capacity(learner, one),
        "rows": _rows(n, single, one, two, learner),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def _capacity(learner: dict[str, Any], one: dict[str, Any]) -> dict[str, Any]:
    """How many serving workers one learner keeps up with, as measured here."""
    per_worker = one["events_per_s"]
    workers = _ratio(learner["records_per_s"], per_worker)
    return {
        "learner_records_per_s": learner["records_per_s"],
        "serving_events_per_s_per_worker": per_worker,
        "serving_workers_per_learner": workers,
        "note": (
            f"measured on this machine ({os.cpu_count()} CPUs): one learner learns as fast as "
            f"{workers} serving worker(s) serve, each appending one learning record per event"
        ),
    }


def _rows(
    n: int,
    single: dict[str, Any],
    one: dict[str, Any],
    two: dict[str, Any],
    learner: dict[str, Any],
) -> list[dict[str, Any]]:
    """One row per run: serving throughput (events), then the learner alone (records)."""

    def serving(run: str, workers: int, r: dict[str, Any]) -> dict[str, Any]:
        rss = r["peak_rss_mib"] + r.get("learner_peak_rss_mib", 0.0)
        return {
            "run": run,
            "serving_workers": workers,
            "count": n,
            "per_s": r["events_per_s"],
            "peak_rss_mib": round(rss, 1),
        }

    return [
        serving("single mode (events)", 1, single),
        serving("decoupled (events)", 1, one),
        serving("decoupled (events)", 2, two),
        {
            "run": "learner alone (records)",
            "serving_workers": 0,
            "count": learner["records"],
            "per_s": learner["records_per_s"],
            "peak_rss_mib": learner["peak_rss_mib"],
        },
    ]
