"""The benchmark's structure (its numbers belong to the benchmark, not to tests)."""

from __future__ import annotations

import json
from importlib.metadata import EntryPoint
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from benchmarks.baselines import CardHistory, naive_features
from benchmarks.bench import SECTIONS, BenchOptions, run_bench
from benchmarks.bench_ingest import INGEST_FORMATS
from benchmarks.bench_pipeline import spec_with_partitions
from benchmarks.bench_stages import STAGES
from benchmarks.decoupled import decoupled_spec, learn_rate
from benchmarks.events import synthetic_events
from streams.cli.main import cli
from streams.cli.plugins import COMMANDS_GROUP, add_plugins
from streams.errors import RiverlineError
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec


@pytest.fixture(scope="module")
def riverline() -> click.Group:
    """The ``riverline`` command line with the bench plugin, as pyproject.toml registers it."""
    assert add_plugins(cli, [EntryPoint("bench", "benchmarks.cli:bench", COMMANDS_GROUP)]) == []
    return cli


@pytest.fixture(scope="module")
def quick_report() -> dict:
    return run_bench(BenchOptions(Settings.from_env(bootstrap=None), quick=True), ["ingest"])


def test_quick_ingest_section_compares_every_format_with_fastavro(quick_report: dict) -> None:
    assert list(quick_report["sections"]) == ["ingest"]
    assert list(SECTIONS) == ["ingest", "features", "stages", "pipeline", "decoupled", "guarantees"]
    assert quick_report["quick"] is True
    ingest = quick_report["sections"]["ingest"]
    assert ingest["schema"].startswith("phishing/v1/")
    assert [row["format"] for row in ingest["rows"]] == list(INGEST_FORMATS)
    for row in ingest["rows"]:
        assert row["events"] == 2_000
        assert row["riverline_eps"] > 0
        assert row["fastavro_eps"] > 0
        assert row["ratio"] == pytest.approx(row["riverline_eps"] / row["fastavro_eps"], rel=0.01)
        assert set(row) <= set(ingest["columns"]) | {"format", "events"}
    assert "json_loads_eps" in ingest["rows"][-1]
    json.dumps(quick_report)  # JSON-ready as is


def test_sensor_pipeline_benchmarks_too() -> None:
    settings = Settings.from_env(bootstrap=None)
    options = BenchOptions(settings, quick=True, pipeline=REPO_ROOT / "pipelines" / "sensor.toml")
    ingest = run_bench(options, ["ingest"])["sections"]["ingest"]
    assert ingest["schema"].startswith("sensor/v2/")
    assert len(ingest["rows"]) == 3


def test_unknown_sections_and_unsupported_fields_are_refused() -> None:
    settings = Settings.from_env(bootstrap=None)
    with pytest.raises(RiverlineError, match="unknown benchmark section"):
        run_bench(BenchOptions(settings, quick=True), ["kafka-e2e-nope"])
    catalog = SchemaCatalog.load(settings.schemas_dir)
    with pytest.raises(RiverlineError, match="cannot invent values"):
        synthetic_events(catalog.record("feature_vector"), 3, 0)


def test_bench_command_writes_the_json_report(tmp_path: Path, riverline: click.Group) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--quick", "--section", "ingest", "--json", str(out)]
    result = CliRunner().invoke(riverline, args)
    assert result.exit_code == 0, result.output
    assert "ingest: phishing" in result.output
    report = json.loads(out.read_text())
    assert [row["format"] for row in report["sections"]["ingest"]["rows"]] == list(INGEST_FORMATS)


def test_quick_and_full_runs_differ_in_size_and_runs_get_their_own_namespace() -> None:
    settings = Settings.from_env(bootstrap=None, namespace="team.")
    quick, full = BenchOptions(settings, quick=True), BenchOptions(settings)
    assert (quick.kafka_events, full.kafka_events) == (5_000, 200_000)
    assert (quick.latency_seconds, full.latency_seconds) == (3.0, 30.0)
    assert BenchOptions(settings, events_override=7).kafka_events == 7
    assert quick.namespace.startswith("team.bench")
    assert quick.namespace.endswith(".")
    assert quick.namespace != full.namespace


def test_the_pipeline_spec_is_copied_with_the_partitions_asked_for(tmp_path: Path) -> None:
    source = REPO_ROOT / "pipelines" / "transactions.toml"
    copy = spec_with_partitions(source, 4, tmp_path)
    assert load_spec(copy).partitions == 4
    assert load_spec(copy).name == load_spec(source).name


def test_the_decoupled_copy_of_a_spec_is_decoupled_and_keeps_its_partitions(
    tmp_path: Path,
) -> None:
    source = REPO_ROOT / "pipelines" / "transactions.toml"
    copy = decoupled_spec(spec_with_partitions(source, 4, tmp_path))
    spec = load_spec(copy)
    assert (spec.decoupled, spec.partitions, spec.name) == (True, 4, "transactions")
    assert load_spec(decoupled_spec(copy)).decoupled  # twice: still one mode line
    assert copy.read_text().count("mode = ") == 1


def test_the_learner_is_timed_from_its_first_look_past_the_start_to_the_end() -> None:
    # Not answering while it starts, then three looks: 1,000 records in 2 s.
    looks = [(10.0, 0), (11.0, 0), (12.0, 1_000), (13.0, 1_500), (14.0, 2_000)]
    assert learn_rate(looks, 2_000) == {
        "records_per_s": 500,
        "seconds": 2.0,
        "timed_records": 1_000,
    }
    with pytest.raises(RiverlineError, match="could not be timed"):
        learn_rate([(1.0, 2_000)], 2_000)


def test_naive_features_follow_one_cards_window_and_merchants() -> None:
    history = CardHistory()
    base = {"amount": 10.0, "card_limit": 100.0, "merchant": "m1"}
    naive_features(history, {**base, "event_time": 0})
    x = naive_features(history, {**base, "event_time": 60_000, "merchant": "m2"})
    assert x["txn_count_5m"] == 2.0
    assert x["amount_sum_5m"] == 20.0
    assert x["merchant_share"] == 0.5
    later = naive_features(history, {**base, "event_time": 10_000_000, "amount": 30.0})
    assert later["txn_count_5m"] == 1.0  # the 5-minute window moved on
    assert 10.0 < later["amount_ewm"] < 30.0


def test_quick_features_section_reports_speedup_state_and_rss() -> None:
    report = run_bench(BenchOptions(Settings.from_env(bootstrap=None), quick=True), ["features"])
    section = report["sections"]["features"]
    kernels, stage, state, rss = section["rows"]
    assert kernels["what"].startswith("kernels")
    assert kernels["ratio"] == pytest.approx(
        kernels["riverline_eps"] / kernels["baseline_eps"], rel=0.05
    )
    assert stage["riverline_eps"] > 0
    assert state["value"] > 0
    assert section["rss"]["keys"] == 100_000
    assert rss["value"] == round(section["rss"]["rss_mib"])
    json.dumps(report)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--contender", "spark"], "unknown benchmark contender(s) spark; known: raw, empty"),
        (["--latency-load", "0"], "more than 0 and at most 1"),
        (["--latency-load", "25"], "got 25"),
    ],
)
def test_bench_refuses_unknown_contenders_and_loads_out_of_range(
    args: list[str], message: str, riverline: click.Group
) -> None:
    # run_bench checks its options before any section runs.
    result = CliRunner().invoke(riverline, ["bench", "--quick", "--section", "pipeline", *args])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())  # the console wraps long lines


def test_quick_stages_section_times_every_stage_in_memory() -> None:
    options = BenchOptions(Settings.from_env(bootstrap=None), quick=True)
    stages = run_bench(options, ["stages"])["sections"]["stages"]
    assert stages["title"].startswith("stages: transactions@")
    assert [row["stage"] for row in stages["rows"]] == list(STAGES)
    assert all(row["us_per_event"] > 0 for row in stages["rows"])


def test_the_stages_of_another_revision_are_measured_beside_this_checkouts() -> None:
    options = BenchOptions(Settings.from_env(bootstrap=None), quick=True, stages_before="HEAD")
    stages = run_bench(options, ["stages"])["sections"]["stages"]
    assert stages["before"] == "HEAD"
    for row in stages["rows"]:
        assert row["before_us"] > 0
        assert row["after_us"] > 0
        assert row["after_over_before"] == round(row["after_us"] / row["before_us"], 2)
    with pytest.raises(RiverlineError, match="no-such-revision"):
        run_bench(
            BenchOptions(options.settings, quick=True, stages_before="no-such-revision"),
            ["stages"],
        )
