"""Models survive SIGKILL: the restored model equals an uninterrupted run's.

Phishing flows at a steady rate while the worker snapshots its models every 200 input
messages (and every second). The worker is SIGKILLed mid-stream and restarted: it
restores the latest snapshot from the registry (verified) and resumes from the
snapshot's offsets of ``P.features`` and ``P.labels``, dropping the events the features
stage sends again. After a clean SIGTERM (a last snapshot), the registry's latest version
gives the same ``predict_proba_one`` on held-out rows as River learning the 1,250 events
offline in the same order.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from river import datasets, linear_model, preprocessing

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.models.registry import ModelRegistry
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import load_spec
from streams.trust.access import token_digest

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"
VIEWER = "view-" + uuid.uuid4().hex
N_EVENTS = 1250


def _learned(worker: WorkerProcess) -> int:
    """Samples the champion has learned from, or -1 while the worker does not answer."""
    import json
    import urllib.request

    request = urllib.request.Request(
        worker.url + "/models", headers={"Authorization": f"Bearer {VIEWER}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:
            body: Any = json.loads(resp.read())
        return int(body["pipelines"]["phishing"]["models"][0]["samples_seen"])
    except (OSError, ValueError, KeyError):
        return -1


def _wait_for(worker: WorkerProcess, done: Any, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if worker.proc is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker died while waiting for {what}: {worker.log_path}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _held_out(n: int = 200) -> list[dict[str, float]]:
    """Rows the stream never had: each feature drawn from another Phishing row (seeded)."""
    rows = [x for x, _ in datasets.Phishing()]
    rng = random.Random(5)
    return [{k: rows[rng.randrange(len(rows))][k] for k in rows[0]} for _ in range(n)]


def test_sigkill_then_restore_gives_the_uninterrupted_model(settings_factory, tmp_path: Path):
    settings = settings_factory(
        web_port=free_port(),
        admin_tokens=f"eve:viewer:{token_digest(VIEWER)}",
        batch_size=50,
        checkpoint_every=200,
        checkpoint_interval=1.0,
        registry_keep=3,  # after each checkpoint, the 3 newest versions stay
        session_timeout=6.0,  # a restarted worker gets the killed one's partitions sooner
    )
    spec = load_spec(PHISHING)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            asyncio.run(produce_dataset(settings, spec, catalog, rate=100.0))
        except BaseException as exc:
            errors.append(exc)

    worker = WorkerProcess(settings, [PHISHING], tmp_path / "worker.log")
    producer = threading.Thread(target=produce, daemon=True)
    try:
        worker.start()
        worker.wait_ready()
        producer.start()
        _wait_for(worker, lambda: _learned(worker) >= 450, "450 events learned")
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait()
        worker.start()
        worker.wait_ready()
        producer.join(timeout=120)
        assert not errors, errors
        _wait_for(worker, lambda: _learned(worker) >= N_EVENTS, "every event learned")
        time.sleep(1.0)  # repeats of the features stage, if any, arrive and are dropped
        assert _learned(worker) == N_EVENTS
    finally:
        code = worker.stop(timeout=60)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    assert "restored models ['phishing-lr@" in log

    registry = ModelRegistry(settings.home / "registry", "phishing", settings.signing_key_bytes())
    latest = registry.latest("phishing-lr")
    assert latest is not None
    # Retention: a dozen checkpoints left the newest three (the latest one serves and is
    # the checkpoint's, so nothing older is protected).
    assert registry.versions("phishing-lr") == [latest - 2, latest - 1, latest]
    assert latest >= 6
    estimator, manifest = registry.load("phishing-lr", latest)
    assert manifest.samples_seen == N_EVENTS
    assert manifest.offsets[f"{spec.topics(settings.namespace).labels}:0"] == 0
    # The models' input offsets: P.raw.
    topics = spec.topics(settings.namespace)
    read = topics.raw
    assert manifest.offsets[f"{read}:0"] >= N_EVENTS

    offline = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in datasets.Phishing():
        offline.learn_one(x, y)
    for x in _held_out():
        assert estimator.predict_proba_one(x) == pytest.approx(
            offline.predict_proba_one(x), rel=1e-12, abs=1e-12
        )
