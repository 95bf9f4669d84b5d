"""A live Phishing run for the offline-store, lineage, replay and training tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import ProduceReport, produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.store.offline import OfflineStore

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"
BAD_EVENT = b'{"event_id": "bad-1", "event_time": 1700000000000, "https": '


@dataclass
class LiveRun:
    settings: Settings
    spec: PipelineSpec
    catalog: SchemaCatalog
    sent: int
    log: Path

    @property
    def store(self) -> OfflineStore:
        return OfflineStore.from_settings(self.settings)

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams", *args],
            env=self.settings.child_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


async def end_offsets(settings: Settings, topic: str, partitions: int = 1) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.effective_bootstrap, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: n for tp, n in ends.items()}
    finally:
        await consumer.stop()


async def _send_bad(settings: Settings, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.effective_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, BAD_EVENT, key=b"bad-1")
    finally:
        await producer.stop()


def wait_for(what: str, done: Callable[[], bool], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def live_run(
    settings_factory: Callable[..., Settings],
    root: Path,
    *,
    limit: int | None = None,
    kill_at: int | None = None,
) -> LiveRun:
    """Produce the dataset (one bad event first) through a worker; stop it cleanly.

    With ``kill_at``, the worker is SIGKILLed once that many predictions are in the
    offline store, and restarted.
    """
    settings = settings_factory(
        web_port=free_port(),
        sink_enabled=True,
        sink_flush_interval=1.0,
        session_timeout=6.0,
    )
    spec = load_spec(PHISHING)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    topics = spec.topics(settings.namespace)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    log = root / "worker.log"
    worker = WorkerProcess(settings, [PHISHING], log)
    store = OfflineStore.from_settings(settings)
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(_send_bad(settings, topics.raw))
        if kill_at is None:
            report = asyncio.run(produce_dataset(settings, spec, catalog, limit=limit))
        else:
            # Events keep flowing while the worker is killed, so the sink has rows it has
            # read but not flushed (and offsets it has not committed) when it dies.
            produced: list[ProduceReport] = []
            producer = threading.Thread(
                target=lambda: produced.append(
                    asyncio.run(produce_dataset(settings, spec, catalog, limit=limit, rate=100.0))
                )
            )
            producer.start()
            wait_for("predictions to kill at", lambda: _stored(store, spec) >= kill_at)
            worker.kill()
            worker.start()
            worker.wait_ready()
            producer.join(timeout=120)
            report = produced[0]
        # Done when the sink stored a prediction of every event (the topic itself may
        # repeat some after a kill); the clean stop flushes whatever came after.
        wait_for("every prediction in the store", lambda: _stored(store, spec) >= report.sent)
    finally:
        code = worker.stop()
    assert code == 0, log.read_text()[-3000:]
    return LiveRun(settings, spec, catalog, report.sent, log)


def _stored(store: OfflineStore, spec: PipelineSpec) -> int:
    try:
        table = store.read("predictions", spec.name)
    except OSError:  # a file renamed while we listed
        return 0
    return len(set(table.column("event_id").to_pylist())) if table.num_rows else 0
