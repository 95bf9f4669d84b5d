"""A real worker's /metrics, status page (HTTP and headless Chromium) and JSON logs."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.store.outputs import OutputCollector

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"
BAD_VALUES = [b"not json", b"{truncated", b"\xff\xfe"]


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


def _samples(exposition: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """family name -> (sample name, labels, value), from the text format."""
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(exposition)
    }


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


async def _send_bad(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.effective_bootstrap)
    await producer.start()
    try:
        for value in BAD_VALUES:
            await producer.send_and_wait(topic, value, key=b"bad")
    finally:
        await producer.stop()


async def _produce(
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    collector: OutputCollector,
    limit: int | None,
    run_id: str,
) -> None:
    report = await produce_dataset(settings, spec, catalog, limit=limit, run_id=run_id)
    expected = len(collector.predictions) + report.sent
    while len(collector.predictions) < expected:
        await collector.poll(500)


def _log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def observed_worker(settings_factory, tmp_path):
    """A JSON-logging worker that handled 200, then 1,250 more events and 3 bad messages."""
    settings = settings_factory(web_port=free_port(), log_json=True, checkpoint_interval=1.0)
    spec = load_spec(PHISHING)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(settings, [PHISHING], log_path)
    worker.start()
    counts: dict[str, int] = {}

    async def run() -> None:
        collector = OutputCollector(settings, spec, catalog)
        await collector.start()
        try:
            await _produce(settings, spec, catalog, collector, 200, "first")
            await asyncio.sleep(3)  # at least one checkpoint and gauge refresh
            counts["after_200"] = len(_log_lines(log_path))
            await _produce(settings, spec, catalog, collector, None, "second")
            await _send_bad(settings, spec.topics(settings.namespace).raw)
            while len(collector.dead_letters) < len(BAD_VALUES):
                await collector.poll(500)
            counts["predictions"] = len(collector.predictions)
        finally:
            await collector.stop()

    try:
        worker.wait_ready()
        asyncio.run(run())
        counts["after_1450"] = len(_log_lines(log_path))
        yield worker, settings, spec, counts
    finally:
        assert worker.stop() == 0


def test_metrics_status_page_and_logs(observed_worker, tmp_path) -> None:
    worker, settings, spec, counts = observed_worker
    assert counts["predictions"] == 1450
    topics = spec.topics(settings.namespace)

    # 1. /metrics: every family, with the labels an operator filters on.
    def lag_settled() -> bool:
        lag = _samples(_get(worker.url + "/metrics")[2]).get("riverline_consumer_lag", [])
        raw = [v for _, labels, v in lag if labels["topic"] == topics.raw]
        return bool(raw) and sum(raw) == 0

    _wait(lag_settled, 30, "the consumer lag of the raw topic to reach 0")
    status, ctype, text = _get(worker.url + "/metrics")
    assert status == 200
    assert ctype.startswith("text/plain")
    families = _samples(text)
    events = {
        (labels["stage"], labels["outcome"]): v
        for name, labels, v in families["riverline_events"]
        if name == "riverline_events_total" and labels["pipeline"] == spec.name
    }
    assert events[("ingest", "ok")] == 1450
    assert events[("predict", "ok")] == 1450
    assert events[("ingest", "dead_letter")] == len(BAD_VALUES)
    dead = [labels for _, labels, _ in families["riverline_dead_letters"]]
    assert {"pipeline", "stage", "reason"} <= set(dead[0])
    for family, label in (
        ("riverline_stage_latency_seconds", "stage"),
        ("riverline_end_to_end_latency_seconds", "pipeline"),
    ):
        buckets = [s for s in families[family] if s[0] == family + "_bucket"]
        assert buckets
        assert all(label in s[1] and "le" in s[1] for s in buckets)
        count = [v for name, _, v in families[family] if name == family + "_count"]
        assert max(count) > 0
    lag = {
        (labels["topic"], labels["partition"])
        for _, labels, _ in families["riverline_consumer_lag"]
    }
    # The worker's inputs: P.raw and P.labels.
    assert {t for t, _ in lag} == {topics.raw, topics.labels}
    assert all(p.isdigit() for _, p in lag)
    ages = families["riverline_checkpoint_age_seconds"]
    assert [(s[1]["pipeline"], s[1]["stage"]) for s in ages] == [(spec.name, "pipeline")]
    assert 0 <= ages[0][2] < 60
    # Set when scraped, for the versions served now (a checkpoint serves the next one).
    models = json.loads(_get(worker.url + "/status.json")[2])["pipelines"][spec.name]["models"]
    served = [(m["name"], str(m["version"])) for m in models]
    assert [name for name, _ in served] == ["phishing-lr"]
    families = _samples(_get(worker.url + "/metrics")[2])
    model = families["riverline_model_metric"]
    assert {(s[1]["model"], s[1]["version"], s[1]["metric"]) for s in model} == {
        (name, version, metric) for name, version in served for metric in ("accuracy", "rocauc")
    }
    info = families["riverline_model_info"]
    assert [(s[1]["model"], s[1]["version"], s[1]["stage"], s[2]) for s in info] == [
        (name, version, "champion", 1) for name, version in served
    ]
    # Declared even before the first drift or registry action (no samples yet then).
    assert "# TYPE riverline_drift_detections_total counter" in text
    assert "# TYPE riverline_registry_actions_total counter" in text

    # 4. The status page, as JSON and as HTML, from the same document.
    status_json = json.loads(_get(worker.url + "/status.json")[2])
    pipeline = status_json["pipelines"][spec.name]
    assert status_json["worker"]["ready"] is True
    assert pipeline["events_ok"] == 1450
    assert pipeline["dead_letters"] == len(BAD_VALUES)
    assert pipeline["models"][0]["name"] == "phishing-lr"
    assert pipeline["models"][0]["stage"] == "champion"
    assert pipeline["models"][0]["samples_seen"] > 0
    assert pipeline["checkpoint_age_s"] is not None
    notices = status_json["dead_letters"]
    assert len(notices) == len(BAD_VALUES)
    assert {n["pipeline"] for n in notices} == {spec.name}
    assert all(topics.raw in n["where"] for n in notices)
    for path in ("/", "/status"):
        status, ctype, page = _get(worker.url + path)
        assert status == 200
        assert ctype.startswith("text/html")
        assert "http-equiv='refresh'" in page
        assert f"Pipeline {spec.name}" in page
        assert "phishing-lr@" in page
        assert notices[0]["reason"] in page

    # ... rendered by a real browser.
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: `make apt` installs the Debian package")
    png = tmp_path / "status.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            f"--screenshot={png}",
            "--window-size=1200,900",
            worker.url + "/status",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(png) as image:
        assert image.size == (1200, 900)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # Text, table borders and the ready badge: far more than a blank page's one colour.
    assert colours is not None
    assert len(colours) > 50

    # 6. Logs: JSON, lifecycle lines, nothing per event.
    worker.stop()
    lines = _log_lines(worker.log_path)
    docs = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [d["message"] for d in docs]
    assert any(m.startswith("worker starting") for m in messages)
    assert any(m.startswith("partitions assigned") for m in messages)
    assert any(m.startswith("checkpoint of") for m in messages)
    not_checkpoints = [
        line
        for line in lines[counts["after_200"] : counts["after_1450"]]
        if "checkpoint" not in line
    ]
    # 1,250 more events add no lines but checkpoints (by time, not per event); a few
    # warnings of a loaded machine (a late timer) are tolerated, one line per event is not.
    assert len(not_checkpoints) < 10, not_checkpoints
