"""One-pass agent: ``P.raw`` and ``P.labels`` -> events, features, predictions (streams.onepass).

Feature state and models are checkpointed together, against the raw offsets they reflect:
the models' snapshot first, then each raw partition's feature checkpoint, then the commit
of those offsets. A crash between the two writes leaves the models ahead of the features,
never behind: on restart the features are computed again from their checkpoint and the
events the models already learned are not predicted again (:class:`streams.onepass.OnePass`).
If the models are behind a partition's feature state (fresh models over a used topic),
that partition's features are rebuilt from the start of the raw topic, so every model
learns from the same vectors it would have seen live.

Both halves reuse the staged topology's machinery (agents.checkpoints, agents.snapshots),
unwired: this class owns the rebalance and shutdown signals, the lock, the gate and the
one schedule (``snapshot_every`` events or ``snapshot_interval`` seconds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import TP

from agents.checkpoints import FeatureCheckpoints
from agents.io import AssignmentGate, RawTopic, StallWatch, run_stage, seek_back
from agents.learn import make_predictor, predict_recorder
from agents.snapshots import ModelSnapshots, PreparedSnapshot
from streams.catalog import SchemaCatalog
from streams.checkpoint import Checkpoint, CheckpointSchedule
from streams.featurization import Featurization
from streams.ingestion import Ingestion
from streams.messages import InMessage
from streams.metrics import WorkerMetrics
from streams.onepass import OnePass
from streams.settings import Settings
from streams.spec import PipelineSpec
from streams.stage import StageResult

__all__ = ["OnePassCheckpoints", "add_onepass_agent"]

log = logging.getLogger("riverline.onepass")


@dataclass(frozen=True)
class _Prepared:
    models: PreparedSnapshot
    features: list[Callable[[], Checkpoint]]
    offsets: dict[TP, int]  # of P.raw and P.labels, which both halves reflect


class OnePassCheckpoints:
    """Keeps a one-pass stage's feature state, models and committed raw offsets in step."""

    def __init__(
        self, app: faust.App, settings: Settings, stage: OnePass, labels_topic: str
    ) -> None:
        self.app = app
        self.stage = stage
        self.raw = stage.raw_topic
        self.labels = labels_topic
        self.features = FeatureCheckpoints(app, settings, stage.featurization, self.raw, wire=False)
        self.models = ModelSnapshots(
            app, settings, stage.predictor, [self.raw, labels_topic], wire=False
        )
        self.schedule = CheckpointSchedule(settings.snapshot_every, settings.snapshot_interval)
        self.lock = asyncio.Lock()
        self.gate = AssignmentGate()
        self._stall = StallWatch()
        self._closed = False
        self._writing: asyncio.Task[None] | None = None
        # mode types handlers as taking ``*args``; these name the one argument they get.
        app.on_partitions_assigned.connect(cast(Any, self.on_assigned))
        app.on_partitions_revoked.connect(cast(Any, self.on_revoked))
        app.on_before_shutdown.connect(cast(Any, self.on_shutdown))
        app.timer(interval=2.0, name=f"{self.raw}.onepass.watchdog")(self.watchdog)

    @property
    def open(self) -> bool:
        return self.models.open and not self._closed

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        """Signal ``app.on_partitions_assigned``: restore both halves, commit, open the gate."""
        async with self.lock:
            try:
                await self._resume(assigned)
            finally:
                self.gate.open()

    async def _resume(self, assigned: Iterable[TP]) -> None:
        await self.settle()  # its commit must not land after this one
        features, featurization = self.features, self.stage.featurization
        parts = features._mine(assigned)
        for p in set(featurization.held) - set(parts):
            featurization.release(p)
        new = [p for p in parts if p not in featurization.held]
        if new:
            await features._restore(new)
        tps = self.models._mine(assigned)
        if not tps:
            return
        labels_behind = await self.models.place(tps)
        positions = self.stage.predictor.positions
        starts, _ends = await features.store.offset_range(self.raw, parts)
        for p in parts:
            held, learned = featurization.held[p], positions[self.stage.raw_key(p)]
            if learned < held.offset:
                log.warning(
                    "the models of %s learned %s:%d up to %d, its feature state is at %d: "
                    "rebuilding the partition's features from offset %d",
                    self.stage.predictor.spec.name,
                    self.raw,
                    p,
                    learned,
                    held.offset,
                    starts[p],
                )
                featurization.start(p, starts[p])
                features._saved.pop(p, None)
        committed = await features.store.committed(self.app.conf.id, self.raw, parts)
        offsets = {TP(self.raw, p): featurization.held[p].offset for p in parts}
        behind = {tp: o for tp, o in offsets.items() if committed.get(tp.partition, 0) > o}
        for tp in tps:
            if tp.topic == self.labels:
                offsets[tp] = positions[f"{tp.topic}:{tp.partition}"]
                if tp in labels_behind:
                    behind[tp] = labels_behind[tp]
        await self._commit(offsets)
        if behind:
            log.warning(
                "one-pass stage of %s starts before the committed offsets; seeking back to %s",
                self.stage.predictor.spec.name,
                {str(tp): o for tp, o in behind.items()},
            )
            await seek_back(self.app, behind)
        log.info(
            "one-pass stage of %s resumes at %s",
            self.stage.predictor.spec.name,
            {str(tp): o for tp, o in offsets.items()},
        )

    async def after_batch(self, batch: list[InMessage], result: StageResult) -> None:
        await self.models._reseek_gaps()
        self.schedule.record(len(batch))
        if self.schedule.due() and not self.writing:
            # Taken now, written while the next batches run: the registry's fsynced files,
            # the feature states' zips, the checkpoint records and the commit took
            # 25-180 ms (one run at 750 events/s); on the batch path, events waited.
            snapshot = self._prepare("snapshot")
            self._writing = asyncio.create_task(
                self._write_in_background(snapshot), name=f"{self.raw}.onepass.snapshot"
            )

    @property
    def writing(self) -> bool:
        """A checkpoint is being written in the background."""
        return self._writing is not None and not self._writing.done()

    async def settle(self) -> None:
        """Wait until the checkpoint being written (if any) is written or has failed."""
        if self._writing is not None:
            await asyncio.wait([self._writing])
            self._writing = None

    def _prepare(self, note: str) -> _Prepared:
        """Both halves and the offsets they reflect, taken between two batches."""
        models = self.models.prepare(note)
        features = self.features.prepare()
        self.schedule.done()
        return _Prepared(models, features, self._offsets())

    async def _write(self, prepared: _Prepared) -> None:
        """Models first, then feature state, then the offsets both reflect.

        The outputs of the events they reflect were acknowledged before ``after_batch``
        (agents.io.send_all): a restart skips the events a checkpoint has.
        """
        await self.models.write(prepared.models)
        await self.features.write(prepared.features, commit=False)
        await self._commit(prepared.offsets)

    async def _write_in_background(self, prepared: _Prepared) -> None:
        try:
            await self._write(prepared)
        except Exception:  # the next checkpoint is due on the schedule; this one is lost
            log.exception(
                "writing the checkpoint of %s failed; the previous one stays valid and the "
                "next one is due after %d events or %.0f s",
                self.stage.predictor.spec.name,
                self.schedule.every,
                self.schedule.interval,
            )

    async def _save(self, note: str) -> None:
        """A checkpoint written before returning (revocation, shutdown)."""
        await self.settle()
        await self._write(self._prepare(note))

    def _offsets(self) -> dict[TP, int]:
        positions = self.stage.predictor.positions
        offsets = {}
        for p, held in self.stage.featurization.held.items():
            learned = positions.get(self.stage.raw_key(p), held.offset)
            offsets[TP(self.raw, p)] = min(held.offset, learned)
        for key, offset in positions.items():
            topic, _, partition = key.rpartition(":")
            if topic == self.labels:
                offsets[TP(topic, int(partition))] = offset
        return offsets

    async def _commit(self, offsets: dict[TP, int]) -> None:
        # As agents.checkpoints: these topics are never acked, so Faust's commit() would
        # not send these offsets; _commit sends them as they are.
        if offsets:
            consumer: Any = self.app.consumer
            await consumer._commit(offsets)

    async def watchdog(self) -> None:
        """Seek a partition back when it stops making progress (see agents.io.StallWatch)."""
        if self._closed or not self.gate.is_open or self.app.rebalancing:
            return
        if self.lock.locked():
            return
        stuck = self._stall.stuck(self.app, self._offsets())
        if stuck:
            async with self.lock:
                log.warning(
                    "one-pass stage of %s made no progress with events waiting; seeking back to %s",
                    self.stage.predictor.spec.name,
                    {str(tp): o for tp, o in stuck.items()},
                )
                await seek_back(self.app, stuck)

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Signal ``app.on_partitions_revoked``: checkpoint and commit, then let go."""
        self.gate.close()  # first, before any await: no batch until the next assignment
        async with self.lock:
            await self.settle()
            if self.open and self.schedule.pending:
                await self._save("snapshot on revocation")
            for p in self.features._mine(revoked):
                self.stage.featurization.release(p)
                self.features._saved.pop(p, None)
            positions = self.stage.predictor.positions
            for tp in self.models._mine(revoked):
                key = f"{tp.topic}:{tp.partition}"
                if key in positions:
                    self.models._released[key] = positions.pop(key)

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        """Signal ``app.on_before_shutdown``: a last checkpoint; no batch after it."""
        async with self.lock:
            try:
                if self.open:
                    await self._save("snapshot at shutdown")
            except Exception:  # shutdown must go on; the previous checkpoint stays valid
                log.exception("the checkpoint at shutdown of %s failed", self.raw)
            self._closed = True
            await self.features.store.stop()
            await self.models.store.stop()


def add_onepass_agent(
    app: faust.App,
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    metrics: WorkerMetrics,
) -> tuple[OnePass, OnePassCheckpoints]:
    """One agent on ``P.raw`` and ``P.labels`` running the three stages per batch."""
    topics = spec.topics(settings.namespace)
    dlq = settings.topic("riverline.dlq")
    stage = OnePass(
        Ingestion(
            spec,
            catalog,
            events_topic=topics.events,
            dlq_topic=dlq,
            max_bytes=settings.max_message_bytes,
            max_id_bytes=settings.max_id_bytes,
            max_event_time_ahead=settings.max_event_time_ahead,
        ),
        Featurization(
            spec,
            catalog,
            features_topic=topics.features,
            dlq_topic=dlq,
            hold_new_partitions=False,  # partitions come from checkpoints on assignment
        ),
        make_predictor(settings, spec, catalog),
        raw_topic=topics.raw,
    )
    guard = OnePassCheckpoints(app, settings, stage, topics.labels)
    record = predict_recorder(metrics, spec, stage.predictor)

    async def pipeline(stream: faust.StreamT) -> Any:
        async for _ in run_stage(
            app,
            stream,
            stage,
            spec.name,
            metrics,
            settings.batch_size,
            settings.batch_timeout,
            guard=guard,
            drain=True,
        ):
            record()

    # acks=False: Faust never commits these topics; OnePassCheckpoints commits the offsets
    # each checkpoint reflects (see streams.checkpoint).
    source = RawTopic(app, topics=[topics.raw, topics.labels], acks=False)
    app.agent(source, name=f"{spec.name}.pipeline", concurrency=1)(pipeline)
    return stage, guard
