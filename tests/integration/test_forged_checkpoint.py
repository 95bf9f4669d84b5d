"""A forged checkpoint record runs no code: it fails its MAC, an alert says so, work goes on.

Anyone who can write ``riverline.checkpoints`` (everyone, on a plaintext broker) could
once make a worker unpickle what they wrote at its next start. Here a plain client
writes, while the worker is stopped, the two records a worker reads at start: the predict
state in the old format (an unkeyed SHA-256, a pickle that creates a file when loaded)
and a feature checkpoint in today's layout but without a MAC. The restarted worker must
not create the file, must publish ``integrity`` alerts, and must go on as if there were
no checkpoint: every event, old and new, is predicted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import pickle
import struct
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.store.outputs import read_alerts, read_all_predictions

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"


class _Creates:
    """Unpickling this opens (so creates) ``path`` for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _record(version: int, header: dict[str, Any], state: bytes, digest: bool) -> bytes:
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    body = struct.pack(">4sBI", b"RLCP", version, len(head)) + head + state
    return body + hashlib.sha256(body).digest() if digest else body


def _forgeries(spec: PipelineSpec, marker: Path) -> list[tuple[bytes, bytes]]:
    payload = pickle.dumps({"models": _Creates(marker)})
    header = {
        "pipeline": spec.name,
        "partition": 0,
        "offset": 0,
        "spec_hash": spec.hash,
        "feature_set": "predict",
        "written_ms": 0,
        "sources": {},
    }
    features = dict(header, pipeline=spec.name, feature_set="anything")
    return [
        # The old format, as the worker wrote it before record MACs: a valid checksum.
        (f"{spec.name}/predict".encode(), _record(1, header, payload, digest=True)),
        # Today's layout, unsigned.
        (f"{spec.name}/features/0".encode(), _record(2, features, payload, digest=False)),
    ]


async def _write(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.effective_bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.topic("riverline.checkpoints"), value, key=key)
    finally:
        await producer.stop()


def test_the_forgery_would_run_code_if_unpickled(tmp_path: Path) -> None:
    """The control: the payload below really creates its file when loaded."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(_Creates(marker))).close()  # an open file: closed here
    assert marker.exists()


def test_a_forged_checkpoint_is_refused_alerted_and_work_goes_on(
    settings_factory: Any, tmp_path: Path
) -> None:
    settings = settings_factory(web_port=free_port(), session_timeout=6.0)
    spec = load_spec(PHISHING)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    marker = tmp_path / "pwned"
    worker = WorkerProcess(settings, [PHISHING], tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(produce_dataset(settings, spec, catalog, limit=200, run_id="first"))
        _wait_predicted(settings, spec, catalog, 200)
    finally:
        assert worker.stop(timeout=60) == 0

    asyncio.run(_write(settings, _forgeries(spec, marker)))
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(produce_dataset(settings, spec, catalog, limit=100, run_id="second"))
        collected = _wait_predicted(settings, spec, catalog, 300)
    finally:
        code = worker.stop(timeout=60)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    assert not marker.exists()
    assert log.count("has no valid MAC") == 2
    alerts = asyncio.run(read_alerts(settings, catalog, spec.name))
    integrity = [a for a in alerts if a["kind"] == "integrity"]
    assert len(integrity) == 2
    assert {a["message"].split(" has no valid MAC")[0] for a in integrity} == {
        f"the latest record of {spec.name}/predict on {settings.topic('riverline.checkpoints')}",
        f"the latest record of {spec.name}/features/0 on {settings.topic('riverline.checkpoints')}",
    }
    # As if there were no checkpoint: fresh models, features rebuilt from the start.
    assert "fresh models" in log
    assert len(collected.predictions) == 300
    assert collected.rejected == 0


def _wait_predicted(settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog, n: int) -> Any:
    import time

    deadline = time.monotonic() + 180
    while True:
        collected = asyncio.run(read_all_predictions(settings, spec, catalog))
        if len(collected.predictions) >= n:
            return collected
        assert time.monotonic() < deadline, f"{len(collected.predictions)} of {n} predicted"
        time.sleep(1.0)
