"""The Phishing pipeline end to end on the real broker: parity, dead letters, lineage."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from river_offline import logistic_regression, phishing_rows, progressive_scores, quoted

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.pipeline.lineage import HEADERS
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.store.outputs import OutputCollector, score_predictions

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"

MALFORMED_JSON = b'{"event_id": "bad-1", "event_time": 1700000000000, "https": '
# A complete event whose one field has the wrong type.
SCHEMA_VIOLATION = json.dumps(
    {
        "event_id": "bad-2",
        "event_time": 1700000000000,
        "empty_server_form_handler": 0.0,
        "popup_window": 0.0,
        "https": "not a number",
        "request_from_other_domain": 0.0,
        "anchor_from_other_domain": 0.0,
        "is_popular": 0.5,
        "long_url": 1.0,
        "age_of_domain": 1,
        "ip_in_url": 1,
        "is_phishing": True,
    }
).encode()


@dataclass
class Run:
    settings: Settings
    spec: PipelineSpec
    collector: OutputCollector
    sent: int


async def _send_raw(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.effective_bootstrap)
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v, key=b"bad")
    finally:
        await producer.stop()


async def _run(settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog) -> Run:
    raw = spec.topics(settings.namespace).raw
    collector = OutputCollector(settings, spec, catalog)
    await collector.start()
    try:
        # Bad events first: the pipeline must keep going after them.
        await _send_raw(settings, raw, [MALFORMED_JSON, SCHEMA_VIOLATION])
        report = await produce_dataset(settings, spec, catalog)
        deadline = time.monotonic() + 180
        while len(collector.predictions) < report.sent or len(collector.dead_letters) < 2:
            assert time.monotonic() < deadline, (
                f"{len(collector.predictions)} predictions, "
                f"{len(collector.dead_letters)} dead letters after 180 s"
            )
            await collector.poll(500)
        await collector.poll(1000)  # anything extra (duplicates) that is still in flight
    finally:
        await collector.stop()
    return Run(settings, spec, collector, report.sent)


@pytest.fixture(scope="module")
def phishing_run(settings_factory, tmp_path_factory) -> Run:
    settings = settings_factory(web_port=free_port())
    spec = load_spec(PHISHING)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    log = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    worker = WorkerProcess(settings, [PHISHING], log)
    worker.start()
    try:
        worker.wait_ready()
        return asyncio.run(_run(settings, spec, catalog))
    finally:
        assert worker.stop() == 0, log.read_text()[-3000:]


def test_every_event_gets_exactly_one_prediction(phishing_run: Run) -> None:
    assert phishing_run.sent == 1250
    assert len(phishing_run.collector.predictions) == 1250
    assert phishing_run.collector.duplicates == 0


def test_accuracy_and_rocauc_equal_river_offline(phishing_run: Run) -> None:
    records = sorted(
        (p for p in phishing_run.collector.predictions.values()), key=lambda p: p.offset
    )
    live = score_predictions("binary", [p.record for p in records])
    river = progressive_scores(phishing_rows, logistic_regression)
    print(f"\nphishing live {live}, River offline {river}")
    # Equal to the digits the README prints, and the README prints these.
    shown = {name: f"{value:.2%}" for name, value in river.items()}
    assert {name: f"{value:.2%}" for name, value in live.items()} == shown
    assert live["accuracy"] == river["accuracy"]  # a count of right answers: exact
    readme = quoted(r"Accuracy ([\d.]+%) and ROCAUC ([\d.]+%) are")
    assert readme == (shown["accuracy"], shown["rocauc"])


def test_predictions_keep_dataset_order(phishing_run: Run) -> None:
    records = sorted(phishing_run.collector.predictions.values(), key=lambda p: p.offset)
    ids = [p.record["event_id"] for p in records]
    assert ids == sorted(ids)


def test_bad_events_land_in_dead_letters_with_reasons(phishing_run: Run) -> None:
    dead = phishing_run.collector.dead_letters
    reasons = sorted(d["rl.error.class"] for d in dead)
    assert reasons == ["not_json", "wrong_type"]
    for d in dead:
        assert d["rl.error.stage"] == "ingest"
        assert d["rl.error.topic"] == phishing_run.spec.topics(phishing_run.settings.namespace).raw
        assert d["rl.error.message"]
    offsets = sorted(int(d["rl.error.offset"]) for d in dead)
    assert offsets == [0, 1]


def test_every_prediction_carries_lineage(phishing_run: Run) -> None:
    spec = phishing_run.spec
    raw = spec.topics(phishing_run.settings.namespace).raw
    seen_offsets = set()
    for p in phishing_run.collector.predictions.values():
        for header in HEADERS:
            assert p.headers.get(header), f"{header} missing on {p.record['event_id']}"
        assert p.headers["rl.event_id"] == p.record["event_id"]
        assert p.headers["rl.schema"].startswith("phishing/v1/")
        assert p.headers["rl.model"] == "phishing-lr@1" == p.record["model"]
        assert p.headers["rl.features"].startswith("phishing_features@")
        assert p.headers["rl.pipeline"] == spec.label == p.record["spec"]
        topic, _, offset = p.headers["rl.source"].rpartition(":")
        assert topic == f"{raw}:0"
        seen_offsets.add(int(offset))
    # Offsets 0 and 1 were the bad events; every other raw offset has its prediction.
    assert seen_offsets == set(range(2, 1252))


def test_report_plots_the_run(phishing_run: Run, tmp_path) -> None:
    out = tmp_path / "plots"
    result = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--pipeline", str(PHISHING), "--out", str(out)],
        env=phishing_run.settings.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["phishing-accuracy.png", "phishing-latency.png", "phishing-rocauc.png"]
    for path in out.iterdir():
        assert path.read_bytes()[:4] == b"\x89PNG"
