"""``riverline bench --quick`` against the session broker: the reports' shape, not their timings.

The pipeline section runs every contender (aiokafka, Riverline's agent with empty stages,
the Faust floor, the naive agent and a real Riverline worker) on the same pre-produced
topic, and the decoupled section serving workers beside one learner, so this keeps the
benchmark from rotting; its numbers belong to the benchmark's own runs (docs/benchmark.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from benchmarks.bench import CONTENDERS, BenchOptions, run_bench
from streams.settings import Settings


def test_quick_pipeline_bench_reports_every_contender(
    settings_factory: Callable[..., Settings],
) -> None:
    lines: list[str] = []
    options = BenchOptions(settings_factory(), quick=True, progress=lines.append)
    report = run_bench(options, ["pipeline"])
    section = report["sections"]["pipeline"]
    json.dumps(report)  # JSON-ready as is

    assert [row["contender"] for row in section["rows"]] == list(CONTENDERS)
    for kind in CONTENDERS:
        result = section["results"][kind]
        assert result["events"] == options.kafka_events == 5_000
        assert result["events_per_s"] > 0
        assert result["peak_rss_mib"] > 0
    assert set(section["ratios"]) == {
        "riverline/raw",
        "riverline/empty",
        "riverline/floor",
        "riverline/naive",
    }
    latency = section["latency"]
    assert latency == section["results"]["riverline"]["latency"]
    for kind in CONTENDERS:  # every contender at the load Riverline's latency was measured at
        got = section["results"][kind]["latency"]
        assert got["offered_per_s"] == latency["offered_per_s"]
        assert got["events"] == latency["events"] >= 100
        assert got["p50_ms"] <= got["p95_ms"] <= got["p99_ms"] <= got["max_ms"]
        row = next(r for r in section["rows"] if r["contender"] == kind)
        assert (row["p50_ms"], row["p99_ms"]) == (got["p50_ms"], got["p99_ms"])
    # Where the CPU went during Riverline's latency run (the tail on a full machine).
    cpu = section["latency_cpu"]
    assert cpu == section["results"]["riverline"]["latency_cpu"]
    assert {"worker", "sink", "broker", "benchmark (load generator)"} <= set(cpu["processes"])
    assert cpu["processes"]["worker"] > 0
    assert 0.0 <= cpu["machine_idle"] <= 1.0
    assert 0.0 <= cpu["thread"]["waited_for_cpu"] <= 1.0  # Linux, as the suite's machines
    # Above a bare client hop at the same load, and above its own agent with empty stages.
    for kind in ("raw", "empty"):
        theirs = section["results"][kind]["latency"]
        assert section[f"latency_over_{kind}"] == {
            q: round(latency[q] - theirs[q], 1) for q in ("p50_ms", "p95_ms", "p99_ms")
        }
    # The machine's CPUs probed quiet (before any contender) and during the latency run.
    stalls = section["machine_stalls"]
    assert stalls["latency_run"] == section["results"]["riverline"]["latency_stalls"]
    for when in ("quiet", "latency_run"):
        probe = stalls[when]
        assert probe["units"] > 0, when
        assert 0 < probe["median_ms"] <= probe["longest_ms"]
        assert 0.0 <= probe["stalled_share"] <= 1.0
    assert stalls["quiet"]["seconds"] >= 1.0
    ratios = section["ratios"]
    assert section["goals"] == {
        "riverline >= 0.7 x floor": ratios["riverline/floor"] >= 0.7,
        "riverline >= 2.0 x naive": ratios["riverline/naive"] >= 2.0,
        "riverline >= 0.8 x empty": ratios["riverline/empty"] >= 0.8,
        "p99 <= 25 ms": latency["p99_ms"] <= 25.0,
        "p99 over empty <= 3 ms": section["latency_over_empty"]["p99_ms"] <= 3.0,
    }
    assert any("riverline latency" in line for line in lines)  # progress while it runs
    assert any("floor latency" in line for line in lines)
    assert any("machine quiet" in line for line in lines)


def test_quick_decoupled_bench_reports_serving_learning_staleness_and_capacity(
    settings_factory: Callable[..., Settings],
) -> None:
    lines: list[str] = []
    options = BenchOptions(settings_factory(), quick=True, progress=lines.append)
    report = run_bench(options, ["decoupled"])
    section = report["sections"]["decoupled"]
    json.dumps(report)  # JSON-ready as is
    n = options.kafka_events

    serving = section["serving"]
    single, one, two = (
        serving[k] for k in ("single_1_worker", "decoupled_1_worker", "decoupled_2_workers")
    )
    for run in (single, one, two):
        assert run["events"] == n
        assert run["events_per_s"] > 0
        assert run["peak_rss_mib"] > 0
    for run in (one, two):
        assert run["predicted"] == n  # every event predicted, each once or more
        assert run["learner_peak_rss_mib"] > 0
        assert 0 <= run["learner_backlog"] <= n
    assert section["ratios"] == {
        "decoupled 2 workers / 1 worker": round(two["events_per_s"] / one["events_per_s"], 3),
        "decoupled 1 worker / single 1 worker": round(
            one["events_per_s"] / single["events_per_s"], 3
        ),
    }
    assert f"{single['events_per_s']:,} events/s" in section["baseline"]
    # The learner alone over the 1-worker run's learning log: every record learned.
    learner = section["learner"]
    assert learner["learned"] == n  # one record per event, each learned once
    assert learner["records"] == learner["position"] == learner["learned"] + learner["repeats"]
    assert 0 < learner["timed_records"] <= learner["records"]
    assert learner["records_per_s"] > 0
    # Staleness under a paced load of a quarter of the 1-worker serving rate.
    staleness = section["staleness"]
    assert staleness["offered_per_s"] == round(max(1.0, one["events_per_s"] * 0.25))
    assert staleness["serving_workers"] == 2
    assert staleness["events"] >= 100
    assert staleness["scrapes"] >= staleness["samples"] > 0
    for gauge in ("staleness_samples", "age_seconds"):
        got = staleness[gauge]
        assert 0 <= got["p50"] <= got["p95"] <= got["max"], gauge
    capacity = section["capacity"]
    assert capacity["serving_workers_per_learner"] == round(
        learner["records_per_s"] / one["events_per_s"], 3
    )
    assert capacity["serving_events_per_s_per_worker"] == one["events_per_s"]
    assert [(r["run"], r["serving_workers"]) for r in section["rows"]] == [
        ("single mode (events)", 1),
        ("decoupled (events)", 1),
        ("decoupled (events)", 2),
        ("learner alone (records)", 0),
    ]
    assert any("one learner alone" in line for line in lines)  # progress while it runs
