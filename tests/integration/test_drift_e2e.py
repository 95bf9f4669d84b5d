"""Drift on a real worker: Agrawal function 0 drifting to 4 at event 10,000.

13,000 events of ``pipelines/agrawal.toml`` (River's ConceptDriftStream: seed 1, position
10,000, width 1,000; Agrawal seed 42) flow through the worker; its Hoeffding tree learns
prequentially and ADWIN watches its errors. The drift alerts on ``riverline.alerts`` say
after how many labels they fired: the first is between 9,500 and 11,000 and none before
9,000 (the issue's bounds), and they are where River alone (its tree and its ADWIN over
the same stream, computed here) detects the drift. The drift metric counts them, and
``riverline report`` draws the drift marker on the learning curve (``drift_markers``
finds it in the run's records).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from river_offline import agrawal_drift_rows, drift_detections, quoted

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.observability.plots import drift_markers
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import load_spec
from streams.store.outputs import OutputCollector, read_alerts

pytestmark = pytest.mark.integration

AGRAWAL = REPO_ROOT / "pipelines" / "agrawal.toml"
N_EVENTS = 13_000


def test_agrawal_drift_is_alerted_where_it_happens(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(web_port=free_port(), batch_size=500)
    spec = load_spec(AGRAWAL)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    worker = WorkerProcess(settings, [AGRAWAL], tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()

        async def run() -> OutputCollector:
            collector = OutputCollector(settings, spec, catalog)
            await collector.start()
            try:
                report = await produce_dataset(settings, spec, catalog)
                assert report.sent == N_EVENTS
                deadline = time.monotonic() + 240
                while len(collector.predictions) < N_EVENTS:
                    assert time.monotonic() < deadline, f"{len(collector.predictions)} predictions"
                    await collector.poll(500)
            finally:
                await collector.stop()
            return collector

        collector = asyncio.run(run())
        with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
    finally:
        assert worker.stop() == 0, worker.log_path.read_text()[-3000:]

    alerts = asyncio.run(read_alerts(settings, catalog, spec.name))
    drifts = [a for a in alerts if a["kind"] == "drift"]
    labels = [int(re.search(r"after (\d+) labels", a["message"]).group(1)) for a in drifts]
    print(f"\ndrift alerts after {labels} labels: {[a['message'] for a in drifts][:3]}")
    assert labels, f"no drift alert; alerts: {alerts}"
    assert not [n for n in labels if n < 9_000], labels
    assert 9_500 <= labels[0] <= 11_000, labels
    river = drift_detections(agrawal_drift_rows(N_EVENTS))
    assert labels == river, f"live {labels}, River offline {river}"
    docs = quoted(r"printed\s+`drift alerts after \[([\d, ]+)\] labels`", "docs/concepts.md")
    assert docs == (", ".join(map(str, river)),)
    assert all(a["model"].startswith("agrawal-ht@") for a in drifts)

    counted = re.findall(
        r'riverline_drift_detections_total\{[^}]*pipeline="agrawal"[^}]*\} (\S+)', metrics
    )
    assert sum(float(c) for c in counted) == len(drifts), metrics[-2000:]

    records = sorted(
        (p.record for p in collector.predictions.values()), key=lambda r: int(r["predict_ts"])
    )
    markers = drift_markers(records, drifts)
    assert markers, "no drift marker for the report"
    assert 9_000 <= markers[0].at <= 11_500, markers

    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--pipeline", str(AGRAWAL), "--out", str(out)],
        env=settings.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs, done.stdout
    assert all((out / p).stat().st_size > 10_000 for p in pngs), pngs
