"""Benchmark section ``pipeline``: Kafka in, Kafka out, side by side on one broker.

It runs on one broker (the settings' cluster, or a
:class:`~streams.kafka.broker.LocalBroker` on free ports): N pre-produced events of the
pipeline (default ``pipelines/transactions.toml``), read by five contenders in turn, each
in its own process (:data:`~benchmarks.options.CONTENDERS`,
:mod:`benchmarks.contenders`), then Riverline's latency at a fixed share of its measured
maximum and each baseline's at that same offered load (a fresh process on fresh topics),
and optionally Riverline on 4 partitions with 1 and 2 workers. Each contender reads the
same pre-produced raw topic with its own consumer group, writing its own output topics.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.contenders import DESCRIBE, baseline, drain, run_baseline, run_riverline
from benchmarks.events import bench_events, event_keys
from benchmarks.kafka_io import cluster, ensure, produce
from benchmarks.latency import latency_over, measure_latency, offered_rate
from benchmarks.options import CONTENDERS, BenchOptions, say
from benchmarks.stallprobe import StallProbe
from streams.kafka.topics import TopicConfig, pipeline_topic_configs, shared_topic_configs
from streams.spec import PipelineSpec, load_spec

__all__ = ["pipeline_section", "spec_with_partitions"]


def pipeline_section(options: BenchOptions) -> dict[str, Any]:
    """Raw aiokafka, Riverline with empty stages, the Faust floor, a naive pipeline, Riverline."""
    with cluster(options) as bootstrap:
        return asyncio.run(_pipeline(options, bootstrap))


def spec_with_partitions(source: Path, partitions: int, folder: Path) -> Path:
    text = source.read_text()
    changed = re.sub(r"(?m)^partitions\s*=\s*\d+", f"partitions = {partitions}", text, count=1)
    if changed == text and f"partitions = {partitions}" not in text:
        changed = text.replace("[pipeline]\n", f"[pipeline]\npartitions = {partitions}\n", 1)
    path = folder / source.name
    path.write_text(changed)
    return path


async def _pipeline(options: BenchOptions, bootstrap: str) -> dict[str, Any]:
    source = options.pipeline or options.settings.pipelines_dir / "transactions.toml"
    with tempfile.TemporaryDirectory(prefix="riverline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        spec_path = spec_with_partitions(source, options.partitions, tmp)
        spec = load_spec(spec_path)
        quiet = await _prepare(options, bootstrap, spec)
        results = await _run_contenders(options, bootstrap, spec_path, tmp)
    return _report(options, spec, results, quiet)


async def _prepare(options: BenchOptions, bootstrap: str, spec: PipelineSpec) -> dict[str, Any]:
    """Create the run's topics and fill its raw topic; probe the machine while it is quiet."""
    n = options.kafka_events
    topics = spec.topics(options.namespace)
    ns_settings = options.settings.model_copy(update={"namespace": options.namespace})
    await ensure(
        bootstrap, shared_topic_configs(ns_settings) + pipeline_topic_configs(ns_settings, spec)
    )
    say(options, f"producing {n:,} {spec.name} events (JSON) to {topics.raw} ...")
    values = bench_events(spec, n, "bench", offset_ms=0)
    keys = event_keys(spec, values)
    say(options, f"machine quiet: probing its CPUs for {options.quiet_probe_seconds:g} s")
    with StallProbe() as quiet:
        await asyncio.sleep(options.quiet_probe_seconds)
    await produce(bootstrap, topics.raw, values, keys)
    return quiet.result


async def _run_contenders(
    options: BenchOptions, bootstrap: str, spec_path: Path, tmp: Path
) -> dict[str, Any]:
    """Every contender's events/s over the raw topic, then its latency at Riverline's load."""
    n = options.kafka_events
    spec = load_spec(spec_path)
    raw = spec.topics(options.namespace).raw
    results: dict[str, Any] = {}
    running: list[str] = [k for k in CONTENDERS if k in options.contenders]
    for kind in running:
        if kind == "riverline":
            results[kind] = await run_riverline(
                options, bootstrap, spec_path, n, tmp, 1, latency=True
            )
        else:
            results[kind] = await run_baseline(options, kind, bootstrap, raw, n, tmp)
        say(options, f"  {kind}: {results[kind]['events_per_s']:,} events/s")
    # The baselines' latency at the load Riverline's was measured at, side by side.
    if "latency" in results.get("riverline", {}):
        rate = offered_rate(options, results["riverline"])
        for kind in [k for k in results if k != "riverline"]:
            results[kind]["latency"] = await _baseline_latency(
                options, kind, bootstrap, spec, rate, n * 10_000, tmp
            )
    return results


def _report(
    options: BenchOptions, spec: PipelineSpec, results: dict[str, Any], quiet: dict[str, Any]
) -> dict[str, Any]:
    """The section's report: results, ratios and goals, one row per contender."""
    n = options.kafka_events
    batch_size = options.settings.batch_size
    ratios, goals = _ratios_and_goals(results)
    riverline = results.get("riverline", {})
    # What Riverline adds to a bare client hop (Faust and its own code), and to its own
    # agent with empty stages (the stages' work).
    over = {f"latency_over_{kind}": latency_over(results, kind) for kind in ("raw", "empty")}
    return {
        "title": (
            f"pipeline: {spec.name}, {n:,} events, {options.partitions} partition(s), "
            f"batches of up to {batch_size}"
        ),
        "pipeline": spec.label,
        "events": n,
        "partitions": options.partitions,
        "batch_size": batch_size,
        "topology": (
            "riverline one-pass; baselines: raw -> events + features + predictions "
            "in one consumer (naive: raw -> predictions)"
        ),
        "measures": (
            "events/s between the first and the last message on the contender's last topic "
            "(message timestamps); peak RSS of the process(es) doing the work"
        ),
        "contenders": {k: DESCRIBE[k] for k in results},
        "results": results,
        "ratios": ratios,
        "latency": riverline.get("latency"),
        "latency_cpu": riverline.get("latency_cpu"),
        **over,
        "machine_stalls": {"quiet": quiet, "latency_run": riverline.get("latency_stalls")},
        "goals": goals,
        "rows": [_row(kind, r) for kind, r in results.items()],
    }


def _row(kind: str, r: dict[str, Any]) -> dict[str, Any]:
    return {
        "contender": kind,
        "events": r["events"],
        "events_per_s": r["events_per_s"],
        "peak_rss_mib": r["peak_rss_mib"],
        **{f"{q}_ms": r["latency"][f"{q}_ms"] for q in ("p50", "p99") if "latency" in r},
    }


def _ratios_and_goals(results: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Riverline's events/s over each baseline's, and whether the goals are met."""
    ratios: dict[str, float] = {}
    goals: dict[str, Any] = {}
    d = results.get("riverline", {}).get("events_per_s")
    for kind, goal in (("floor", 0.7), ("naive", 2.0), ("raw", None), ("empty", 0.8)):
        if d and kind in results:
            ratio = round(d / results[kind]["events_per_s"], 3)
            ratios[f"riverline/{kind}"] = ratio
            if goal is not None:
                goals[f"riverline >= {goal} x {kind}"] = ratio >= goal
    latency = results.get("riverline", {}).get("latency")
    if latency:
        goals["p99 <= 25 ms"] = latency["p99_ms"] <= 25.0
    over = latency_over(results, "empty")
    if over:
        goals["p99 over empty <= 3 ms"] = over["p99_ms"] <= 3.0
    return ratios, goals


async def _baseline_latency(
    options: BenchOptions,
    kind: str,
    bootstrap: str,
    spec: PipelineSpec,
    rate: float,
    offset_ms: int,
    tmp: Path,
) -> dict[str, Any]:
    """A baseline's latency at Riverline's offered load: a fresh process on fresh topics."""
    name = f"{kind}-lat"
    source = f"{options.namespace}{name}.raw"
    await ensure(bootstrap, [TopicConfig(source, options.partitions)])
    async with baseline(options, kind, name, bootstrap, source, tmp) as (_, out, alive):
        # Warm-up: once these come out, the contender holds its partitions and runs.
        warm = bench_events(spec, 20, f"warm-{kind}", offset_ms=0)
        await produce(bootstrap, source, warm, event_keys(spec, warm))
        await drain(options, f"{kind} warm-up", out, len(warm), [], alive)
        return await measure_latency(options, kind, bootstrap, spec, source, out, rate, offset_ms)
