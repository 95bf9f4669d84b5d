"""The learner agent of a decoupled pipeline, and what keeps it the only one.

Learner processes join their own consumer group (app ``<ns>riverline-learn``); the
learning log ``P.learn`` has one partition, so exactly one of them holds it: the active
learner. The others wait as hot standbys. On assignment the new holder starts its
transactional producer first (which fences the previous learner: its next commit fails),
then restores the last committed learner checkpoint and the versions it names from Kafka
(:class:`streams.state.learner.LearnerState`), and learns from the checkpoint's offset.
Every ``checkpoint_every`` records or ``checkpoint_interval`` seconds, on revocation and at
shutdown it publishes, in one transaction, the new versions, its checkpoint, the served set
and the log offset. A learner that finds itself fenced stops publishing and learning.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, cast

import faust
from aiokafka import TopicPartition
from faust.types import TP

from agents.internals import RawTopic, seek_back
from agents.io import AssignmentGate, run_stage
from streams.kafka.auth import client_kwargs
from streams.kafka.topics import ARTIFACTS, CHECKPOINTS, MODELS
from streams.messages import InMessage, OutMessage
from streams.models.learner import Learner
from streams.models.lifecycle import Alert, ModelLifecycle
from streams.models.registry import ModelRegistry
from streams.observability.metrics import WorkerMetrics
from streams.pipeline.stage import StageResult
from streams.serialization.catalog import SchemaCatalog
from streams.settings import Settings
from streams.spec import PipelineSpec
from streams.state.checkpoint import CheckpointSchedule
from streams.state.feed import Progress, progress_key
from streams.state.learner import FencedError, LearnerState, Publication, Publisher
from streams.state.store import CheckpointStore
from streams.trust.records import RecordSigner

__all__ = ["LearnerCoordinator", "LearnerRun", "add_learner_agent"]

log = logging.getLogger("riverline.learner")


@dataclass
class LearnerRun:
    """A decoupled pipeline's learner in this process: its stage and its coordinator."""

    spec: PipelineSpec
    learner: Learner
    coordinator: LearnerCoordinator


class LearnerCoordinator:
    """Keeps one pipeline's learner, its publications and the log offset in step."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        state: LearnerState,
        signer: RecordSigner,
        metrics: WorkerMetrics,
    ) -> None:
        self.app = app
        self.settings = settings
        self.state = state
        self.learner = state.learner
        self.signer = signer
        self.pipeline = self.learner.spec.name
        self.topic = self.learner.learning_topic
        interval = min(settings.publish_interval, settings.checkpoint_interval)
        self.schedule = CheckpointSchedule(settings.checkpoint_every, interval)
        self.lock = asyncio.Lock()
        self.gate = AssignmentGate()
        self.active = False
        self.fenced = False
        self.published = 0
        self.down: dict[str, str] = {}
        self._publisher: Publisher | None = None
        self._closed = False
        self._up = metrics.pipeline_up.labels(f"{self.pipeline}.learner")
        self._up.set(1)
        app.on_partitions_assigned.connect(cast(Any, self.on_assigned))
        app.on_partitions_revoked.connect(cast(Any, self.on_revoked))
        app.on_before_shutdown.connect(cast(Any, self.on_shutdown))
        app.timer(interval=1.0, name=f"{self.pipeline}.learner.progress")(self.progress)

    @property
    def open(self) -> bool:
        return not self._closed and not self.fenced and self.active

    def _mine(self, tps: Any) -> bool:
        return any(tp.topic == self.topic for tp in tps)

    # -- takeover, revocation, shutdown -------------------------------------------------

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        """Holding ``P.learn:0`` makes this the active learner: fence, restore, resume."""
        async with self.lock:
            try:
                if self._mine(assigned) and not self.active:
                    await self._take_over()
            finally:
                self.gate.open()

    async def _take_over(self) -> None:
        await self._stand_by()  # a fenced publisher of an earlier turn, if any
        settings = self.settings
        publisher = Publisher(
            settings.effective_bootstrap,
            settings.topic(f"riverline-learner.{self.pipeline}"),
            self.signer,
            client_kwargs(settings),
            max_request_size=max(settings.output_max_bytes * 2, 4 << 20),
        )
        await publisher.start()  # fences the previous learner before anything is read
        self._publisher = publisher
        self.fenced = False
        self.down.pop("fenced", None)
        self._up.set(1)
        self.learner.reset()
        restored, alerts = await self.state.restore()
        await self._alert(alerts)
        if not restored:
            labels = await asyncio.to_thread(self.learner.learning.register_fresh)
            log.info("the learner of %s starts with fresh models %s", self.pipeline, labels)
            await self._publish(self.state.prepare("fresh at learner start"))
        self.active = True
        tp = TP(self.topic, 0)
        await seek_back(self.app, {tp: self.learner.position})
        log.info(
            "this process is the learner of %s from %s:0 offset %d",
            self.pipeline,
            self.topic,
            self.learner.position,
        )

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Losing ``P.learn:0``: a last publication, then standby."""
        if not self._mine(revoked):
            return
        self.gate.close()
        async with self.lock:
            if self.open and self.schedule.pending:
                await self._save("revocation")
            await self._stand_by()

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        async with self.lock:
            try:
                if self.open:
                    await self._save("shutdown")
            except Exception:  # shutdown goes on; the last publication stays valid
                log.exception("the learner's publication at shutdown of %s failed", self.pipeline)
            self._closed = True
            await self._stand_by()
            await self.state.store.stop()

    async def _stand_by(self) -> None:
        self.active = False
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None

    # -- batches ------------------------------------------------------------------------

    async def ready(self) -> None:
        return None

    async def before_batch(self) -> None:
        return None

    async def send(self, result: StageResult) -> None:
        """A batch's outputs (dead letters, alerts, audit) in a transaction of the learner's
        producer: a fenced learner's outputs are never visible."""
        lifecycle = self.learner.lifecycle
        if lifecycle.unwritten:
            await asyncio.to_thread(lifecycle.write_pending)
        if result.sends:
            await self._transact(result.sends)

    async def _transact(self, records: list[OutMessage]) -> bool:
        """Records in one transaction; False (and fenced) if another learner took over."""
        if self._publisher is None or self.fenced:
            return False
        try:
            await self._publisher.publish(records, {}, self.app.conf.id)
        except FencedError as exc:
            self._fence(exc)
            return False
        return True

    def _fence(self, exc: FencedError) -> None:
        """Another learner took over: no more learning or publishing until this one is
        assigned the log again (and then fences the other in turn)."""
        self.fenced = True
        self.active = False
        self.down["fenced"] = str(exc)
        self._up.set(0)
        log.error("%s", exc)

    async def after_batch(self, batch: list[InMessage], result: StageResult) -> None:
        self.schedule.record(len(batch))
        if self.schedule.due():
            await self._save("checkpoint")

    async def recover(self, exc: BaseException, kind: str = "batch") -> None:
        """A failed batch: the learner restores its last publication and re-reads from it."""
        log.error("a batch of the learner of %s failed (%s); restoring", self.pipeline, exc)
        await self._stand_by()
        self.gate.close()
        try:
            await self._take_over()
        finally:
            self.gate.open()

    async def _save(self, note: str) -> None:
        publication = self.state.prepare(note)
        self.schedule.done()
        await self._publish(publication)

    async def _publish(self, publication: Publication) -> None:
        if self._publisher is None or self.fenced:
            return
        records = self.state.records(publication)
        tombstones = await asyncio.to_thread(self.state.prune)
        offsets = {TopicPartition(self.topic, 0): publication.position}
        try:
            await self._publisher.publish(records, offsets, self.app.conf.id, tombstones)
        except FencedError as exc:
            self._fence(exc)
            return
        await self.state.written(publication)
        self.published += 1
        log.info(
            "checkpoint of the learner of %s (%s): %s at %s:0 offset %d",
            self.pipeline,
            publication.note,
            [f"{m.name}@{m.version}" for m in publication.served.models],
            self.topic,
            publication.position,
        )

    async def progress(self) -> None:
        """Once a second, while active: how far the learner has learned (for staleness)."""
        if not self.open:
            return
        samples = {s.model.spec.name: s.model.samples_seen for s in self.learner.lifecycle.served}
        record = Progress(samples, int(time.time() * 1000), self.state.learner_id)
        key = progress_key(self.pipeline).encode()
        topic = self.settings.topic(MODELS)
        try:
            await self._transact([OutMessage(topic, key, record.to_bytes(), [])])
        except Exception:  # progress is advisory; the next one follows in a second
            log.debug("could not publish the learner's progress", exc_info=True)

    async def _alert(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        try:
            await self._transact([self.learner.records.alert(a) for a in alerts])
        except Exception:
            log.exception("could not publish %d alert(s) of %s", len(alerts), self.pipeline)


def add_learner_agent(
    app: faust.App,
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    metrics: WorkerMetrics,
    signer: RecordSigner,
) -> LearnerRun:
    """The learner agent of a decoupled pipeline, on ``P.learn``."""
    topics = spec.topics(settings.namespace)
    registry = ModelRegistry(settings.registry_dir, spec.name, settings.signing_key_bytes())
    learner = Learner(
        spec,
        catalog,
        learning_topic=topics.learn,
        dlq_topic=settings.topic("riverline.dlq"),
        lifecycle=ModelLifecycle(spec, registry),
        alerts_topic=settings.topic("riverline.alerts"),
        audit_topic=settings.topic("riverline.audit"),
        predictions_topic=topics.predictions,
        signer=signer,
        label_ttl_ms=int(settings.label_ttl * 1000),
        label_max_pending=settings.label_max_pending,
        label_max_bytes=settings.label_max_bytes,
    )
    store = CheckpointStore(
        settings.effective_bootstrap,
        settings.topic(CHECKPOINTS),
        settings.checkpoint_max_bytes,
        signer,
        client_kwargs(settings),
    )
    state = LearnerState(
        learner,
        store,
        artifacts_topic=settings.topic(ARTIFACTS),
        models_topic=settings.topic(MODELS),
        registry_keep=settings.registry_keep,
        learner_id=f"{socket.gethostname()}:{os.getpid()}",
    )
    coordinator = LearnerCoordinator(app, settings, state, signer, metrics)

    async def learn(stream: faust.StreamT) -> Any:
        async for _ in run_stage(
            app,
            stream,
            learner,
            f"{spec.name}.learner",
            metrics,
            settings.batch_size,
            signer=signer,
            guard=coordinator,
        ):
            pass

    # acks=False: the learner commits the log's offset in its publications' transactions.
    app.agent(RawTopic(app, topics=[topics.learn], acks=False), name=f"{spec.name}.learner")(learn)
    return LearnerRun(spec, learner, coordinator)
