"""``riverline bench --quick`` against the session broker: the report's shape, not its timings.

The pipeline section runs every contender (aiokafka, the Faust floor, the naive agent and
a real Riverline worker) on the same pre-produced topic, so this keeps the benchmark from
rotting; its numbers belong to the benchmark's own runs (README, Benchmark).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from streams.bench import CONTENDERS, BenchOptions, run_bench
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
    assert set(section["ratios"]) == {"riverline/raw", "riverline/floor", "riverline/naive"}
    latency = section["latency"]
    assert latency["events"] >= 100
    assert latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert set(section["goals"]) == {
        "riverline >= 0.7 x floor",
        "riverline >= 1.0 x naive",
        "p99 <= 25 ms",
    }
    assert "scaling" not in section  # --quick leaves it out: two more worker start-ups
    assert any("riverline latency" in line for line in lines)  # progress while it runs
