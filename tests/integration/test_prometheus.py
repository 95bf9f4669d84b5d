"""A real Prometheus scrapes a worker during a run; its HTTP API answers our queries."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import load_spec
from streams.store.outputs import OutputCollector

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"


def _prometheus_config(worker_port: int, out: Path) -> Path:
    """deploy/prometheus.yml with the worker target pointed at this test's worker."""
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["riverline-worker"]["static_configs"] = [{"targets": [f"127.0.0.1:{worker_port}"]}]
    config["scrape_configs"] = [jobs["riverline-worker"]]
    out.write_text(yaml.safe_dump(config))
    return out


def _query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait_for(port: int, promql: str, seconds: float = 30) -> list[dict]:
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = _query(port, promql)
            if result:
                return result
        except OSError:
            pass
        assert time.monotonic() < deadline, f"Prometheus returned nothing for {promql}"
        time.sleep(0.5)


@pytest.fixture
def prometheus(tmp_path):
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: `make apt` installs the Debian package")

    def start(worker_port: int) -> int:
        port = free_port()
        config = _prometheus_config(worker_port, tmp_path / "prometheus.yml")
        with (tmp_path / "prometheus.log").open("wb") as log:
            proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        return port

    procs: list[subprocess.Popen[bytes]] = []
    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_prometheus_scrapes_latency_and_accuracy(settings_factory, prometheus, tmp_path) -> None:
    settings = settings_factory(web_port=free_port())
    spec = load_spec(PHISHING)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    worker = WorkerProcess(settings, [PHISHING], tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        prom_port = prometheus(settings.web_port)
        _wait_for(prom_port, 'up{job="riverline-worker"} == 1')

        async def run() -> int:
            collector = OutputCollector(settings, spec, catalog)
            await collector.start()
            try:
                report = await produce_dataset(settings, spec, catalog, rate=250)
                while len(collector.predictions) < report.sent:
                    await collector.poll(500)
                return report.sent
            finally:
                await collector.stop()

        assert asyncio.run(run()) == 1250
        # Once a scrape shows all 1,250 samples learned, the same scrape has the final value.
        _wait_for(prom_port, "riverline_model_samples_seen == 1250", seconds=20)
        accuracy = _query(prom_port, 'riverline_model_metric{metric="accuracy"}')
        assert accuracy[0]["metric"]["model"] == "phishing-lr"
        assert accuracy[0]["metric"]["version"] == "1"
        assert float(accuracy[0]["value"][1]) == pytest.approx(0.8928)
        p99 = _wait_for(
            prom_port,
            "histogram_quantile(0.99, sum by (le) "
            "(rate(riverline_end_to_end_latency_seconds_bucket[30s])))",
        )
        seconds = float(p99[0]["value"][1])
        assert 0 < seconds < 30
        events = _wait_for(prom_port, 'riverline_events_total{stage="predict",outcome="ok"}')
        assert float(events[0]["value"][1]) == 1250
    finally:
        assert worker.stop() == 0
