"""The sink agent end to end: a Phishing run lands in Parquet that others can read.

Also ``riverline lineage`` on that run, a SIGKILL that must not duplicate rows, and
``riverline train --from-store`` on the stored history.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pytest
from phishing_live import LiveRun, end_offsets, live_run

from streams.models.registry import ModelRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(settings_factory, tmp_path_factory) -> LiveRun:
    return live_run(settings_factory, Path(tmp_path_factory.mktemp("sink-run")))


def _glob(run: LiveRun, kind: str) -> str:
    return str(run.settings.store_dir / kind / "**" / "*.parquet")


def test_pyarrow_reads_every_event_once_without_riverline(run: LiveRun) -> None:
    root = run.settings.store_dir
    for kind in ("events", "features", "predictions"):
        table = ds.dataset(root / kind, format="parquet", partitioning="hive").to_table()
        ids = table.column("event_id").to_pylist()
        assert len(ids) == len(set(ids)) == run.sent, kind
        assert set(table.column("pipeline").to_pylist()) == {"phishing"}
    dead = ds.dataset(root / "dead_letters", format="parquet", partitioning="hive").to_table()
    assert dead.column("reason").to_pylist() == ["not_json"]


def test_duckdb_reads_the_store(run: LiveRun) -> None:
    con = duckdb.connect()
    predictions = _glob(run, "predictions")
    rows, ids = con.execute(
        "select count(*), count(distinct event_id) "
        f"from read_parquet('{predictions}', hive_partitioning = true) "
        "where pipeline = 'phishing'"
    ).fetchone()
    assert rows == ids == run.sent
    joined = con.execute(
        f"select count(*) from read_parquet('{_glob(run, 'predictions')}') p "
        f"join read_parquet('{_glob(run, 'events')}') e using (event_id)"
    ).fetchone()
    assert joined == (run.sent,)


def test_lineage_cli_shows_the_whole_path(run: LiveRun) -> None:
    event_id = run.store.read("predictions", "phishing").column("event_id")[10].as_py()
    out = run.cli("lineage", event_id, "--json")
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    raw = run.spec.topics(run.settings.namespace).raw
    assert found["raw_source"].startswith(f"{raw}:0:")
    assert found["writer_schema"].startswith("phishing/v1/")
    assert found["ingest_ts"] > 0
    assert found["feature_set"].startswith("phishing_features@")
    assert "long_url_ewm" in found["feature_values"]
    assert found["model"] == "phishing-lr@1"
    assert found["prediction"] in (True, False)
    assert set(found["proba"]) == {"True", "False"}
    assert found["label"] in (True, False)
    assert found["label_source"] == "event"
    if found["manifest"] is not None:  # the registry has the version the prediction names
        assert f"{found['manifest']['name']}@{found['manifest']['version']}" == found["model"]
    table = run.cli("lineage", event_id)
    assert table.returncode == 0, table.stderr
    for shown in ("raw topic:partition:offset", "phishing_features@", "phishing-lr@1"):
        assert shown in table.stdout


def test_lineage_of_an_unknown_id_exits_1_with_a_message(run: LiveRun) -> None:
    out = run.cli("lineage", "no-such-event")
    assert out.returncode == 1
    assert "no event with id 'no-such-event'" in out.stderr


def test_train_from_store_registers_a_candidate(run: LiveRun) -> None:
    out = run.cli("train", "--pipeline", str(run.spec.path), "--from-store")
    assert out.returncode == 0, out.stderr
    registry = ModelRegistry(
        run.settings.registry_dir, "phishing", run.settings.signing_key_bytes()
    )
    version = registry.latest("phishing-lr")
    assert version is not None
    estimator, manifest = registry.load("phishing-lr", version)
    assert manifest.note == "candidate"
    assert manifest.spec_hash == run.spec.hash
    data = manifest.extra["data_range"]
    assert data["events"] == run.sent
    assert data["first_offset"] == 0
    assert data["last_offset"] == run.sent - 1
    assert data["first_date"] <= data["last_date"]
    assert manifest.samples_seen >= run.sent
    assert estimator.predict_one({"https": 1.0}) in (True, False)


def test_sigkill_and_restart_do_not_duplicate_rows(settings_factory, tmp_path) -> None:
    run = live_run(settings_factory, tmp_path, limit=800, kill_at=200)
    topics = run.spec.topics(run.settings.namespace)
    for kind, topic in (
        ("events", topics.events),
        ("features", topics.features),
        ("predictions", topics.predictions),
    ):
        table = run.store.read(kind, "phishing")
        offsets = table.column("_offset").to_pylist()
        ends = asyncio.run(end_offsets(run.settings, topic))
        # Every offset of the topic exactly once, whatever the topic itself repeated.
        assert sorted(offsets) == list(range(ends[0])), kind
        assert len(set(table.column("event_id").to_pylist())) == run.sent, kind
