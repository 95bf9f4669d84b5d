"""Read back what a pipeline wrote: predictions and dead letters (demo, tests, verify).

Only records whose ``rl.mac`` verifies (:mod:`streams.trust.records`) are used; the others
are counted in ``rejected`` and skipped, whoever wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from river import metrics

from streams.errors import RiverlineError
from streams.kafka.auth import client_kwargs
from streams.models.model import label_from_key
from streams.pipeline.lineage import lineage_headers
from streams.pipeline.stage import now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import Settings
from streams.spec import PipelineSpec
from streams.trust.records import RecordSigner

__all__ = [
    "OutputCollector",
    "ReadPrediction",
    "read_alerts",
    "read_all_predictions",
    "score_predictions",
]


@dataclass(frozen=True)
class ReadPrediction:
    record: dict[str, Any]
    headers: dict[str, str]
    partition: int
    offset: int
    received_ms: int


@dataclass
class OutputCollector:
    """Consumes ``P.predictions`` and the dead-letter topic from the beginning."""

    settings: Settings
    spec: PipelineSpec
    catalog: SchemaCatalog
    predictions: dict[str, ReadPrediction] = field(default_factory=dict)
    duplicates: int = 0
    dead_letters: list[dict[str, str]] = field(default_factory=list)
    #: Records skipped because their MAC did not verify (not written by this deployment).
    rejected: int = 0
    _consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        topics = self.spec.topics(self.settings.namespace)
        self._pred_topic = topics.predictions
        self._raw_topic = topics.raw
        self._dlq_topic = self.settings.topic("riverline.dlq")
        self._schema = self.catalog.record("prediction")
        self._signer = RecordSigner(self.settings.signing_key_bytes())
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.effective_bootstrap,
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed",
            **client_kwargs(self.settings),
        )
        await consumer.start()
        parts: list[TopicPartition] = []
        for topic in (self._pred_topic, self._dlq_topic):
            for p in sorted(consumer.partitions_for_topic(topic) or {0}):
                parts.append(TopicPartition(topic, p))
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def at_end(self) -> bool:
        """True when every assigned partition has been read up to its end offset."""
        assert self._consumer is not None, "call start() first"
        parts = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(parts)
        for tp in parts:
            if await self._consumer.position(tp) < ends[tp]:
                return False
        return True

    async def poll(self, timeout_ms: int = 200) -> int:
        """Read what is available; returns how many messages were read."""
        assert self._consumer is not None, "call start() first"
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        received = now_ms()
        n = 0
        for tp, msgs in batches.items():
            for m in msgs:
                n += 1
                if not self._signer.verify(tp.topic, m.key, m.value, m.headers or ()):
                    self.rejected += 1
                    continue
                headers = lineage_headers(m.headers)
                if tp.topic == self._dlq_topic:
                    if headers.get("rl.error.topic") == self._raw_topic:
                        self.dead_letters.append(headers)
                    continue
                _, record = decode_single_object(self.catalog, m.value, self._schema)
                event_id = record["event_id"]
                if event_id in self.predictions:
                    self.duplicates += 1
                    continue
                self.predictions[event_id] = ReadPrediction(
                    record, headers, tp.partition, m.offset, received
                )
        return n


def score_predictions(task: str, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Prequential metrics recomputed from prediction records alone (label + what was said)."""
    scores: dict[str, metrics.base.Metric] = {}
    if task == "binary":
        scores = {"accuracy": metrics.Accuracy(), "rocauc": metrics.ROCAUC()}
    elif task == "multiclass":
        scores = {"accuracy": metrics.Accuracy()}
    elif task == "regression":
        scores = {"mae": metrics.MAE()}
    for r in records:
        y = r["label"]
        if y is None:
            continue
        for name, metric in scores.items():
            if name == "rocauc":
                metric.update(y, {label_from_key(k, y): v for k, v in r["proba"].items()})
            elif r["prediction"] is not None:
                metric.update(y, r["prediction"])
    return {name: float(m.get()) for name, m in scores.items()}


async def read_all_predictions(
    settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog
) -> OutputCollector:
    """Everything on ``P.predictions`` and the pipeline's dead letters, up to now."""
    collector = OutputCollector(settings, spec, catalog)
    await collector.start()
    try:
        while not await collector.at_end():
            await collector.poll(500)
    finally:
        await collector.stop()
    return collector


async def read_alerts(
    settings: Settings, catalog: SchemaCatalog, pipeline: str
) -> list[dict[str, Any]]:
    """The alerts of ``pipeline`` on the (namespaced) ``riverline.alerts`` topic, up to now."""
    topic = settings.topic("riverline.alerts")
    schema = catalog.record("alert")
    signer = RecordSigner(settings.signing_key_bytes())
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
        **client_kwargs(settings),
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        # Shared topics have one partition; metadata may not list the topic yet.
        known = sorted(consumer.partitions_for_topic(topic) or {0})
        parts = [TopicPartition(topic, p) for p in known]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in parts])

        while await behind():
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for msgs in batches.values():
                for m in msgs:
                    if not signer.verify(topic, m.key, m.value, m.headers or ()):
                        continue  # not written by this deployment
                    try:
                        _, record = decode_single_object(catalog, m.value or b"", schema)
                    except RiverlineError:
                        continue  # not an alert record (someone else's message)
                    if record.get("pipeline") == pipeline:
                        found.append(record)
    finally:
        await consumer.stop()
    return found
