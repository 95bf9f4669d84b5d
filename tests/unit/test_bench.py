"""The benchmark's structure (its numbers belong to the benchmark, not to tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.bench import INGEST_FORMATS, SECTIONS, BenchOptions, run_bench, synthetic_events
from streams.catalog import SchemaCatalog
from streams.cli import cli
from streams.errors import RiverlineError
from streams.settings import REPO_ROOT, Settings


@pytest.fixture(scope="module")
def quick_report() -> dict:
    return run_bench(BenchOptions(Settings.from_env(bootstrap=None), quick=True))


def test_quick_ingest_section_compares_every_format_with_fastavro(quick_report: dict) -> None:
    assert list(quick_report["sections"]) == list(SECTIONS) == ["ingest"]
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


def test_bench_command_writes_the_json_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--quick", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "ingest: phishing" in result.output
    report = json.loads(out.read_text())
    assert [row["format"] for row in report["sections"]["ingest"]["rows"]] == list(INGEST_FORMATS)
