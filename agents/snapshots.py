"""Model snapshots, wired to Faust's rebalance and shutdown signals.

The predict stage's models and its label join are saved together with the offsets of
``P.features`` and ``P.labels`` they reflect, and Riverline (not Faust) commits those
offsets, for the reasons in :mod:`streams.checkpoint`. A snapshot is: every served model
as a new signed registry version (manifest with the offsets), announced on
``riverline.models``; then the stage's other state (versions, join, metrics, offsets) as
a checkpoint record ``<pipeline>/predict`` on ``riverline.checkpoints``; then the commit.
On assignment the latest checkpoint is restored (models loaded from the registry,
verified) while batches wait at the gate; Faust resumes at the committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import TP

from agents.io import AssignmentGate, StallWatch, seek_back, send_all
from streams.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointIntegrityError,
    CheckpointSchedule,
    CheckpointStore,
)
from streams.codec import encode_single_object
from streams.integrity import RecordSigner
from streams.lifecycle import Alert, Served
from streams.messages import InMessage, OutMessage
from streams.model import OnlineModel
from streams.prediction import Predictor
from streams.registry import Manifest, PendingVersion
from streams.security import client_kwargs
from streams.settings import Settings
from streams.stage import StageResult, now_ms
from streams.topics import CHECKPOINTS

__all__ = ["ModelSnapshots", "PreparedSnapshot"]

log = logging.getLogger("riverline.snapshots")


@dataclass(frozen=True)
class PreparedSnapshot:
    """What :meth:`ModelSnapshots.write` writes: taken at one instant, between batches."""

    offsets: dict[str, int]  # topic:partition -> next offset the models reflect
    #: Each served model, the version it carries now, and its next version to write.
    versions: list[tuple[OnlineModel, int, PendingVersion]]
    checkpoint: Checkpoint
    announcements: list[OutMessage]


class ModelSnapshots:
    """Keeps a predict stage's models, its checkpoint and its committed offsets in step."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        stage: Predictor,
        topics: Iterable[str],
        signer: RecordSigner,
        *,
        wire: bool = True,
    ) -> None:
        """``wire=False``: no signal handlers and no watchdog; an owner calls the steps
        (agents.onepass, which checkpoints features and models together)."""
        self.app = app
        self.settings = settings
        self.stage = stage
        self.topics = set(topics)
        self.store = CheckpointStore(
            settings.effective_bootstrap,
            settings.topic(CHECKPOINTS),
            settings.checkpoint_max_bytes,
            signer,
            client_kwargs(settings),
        )
        self.signer = signer
        self.models_topic = settings.topic("riverline.models")
        self.schedule = CheckpointSchedule(settings.snapshot_every, settings.snapshot_interval)
        self.lock = asyncio.Lock()
        self.written = 0
        self._restored = False
        self._reseeked: dict[str, float] = {}
        #: Positions of partitions revoked from this worker, for when they come back: the
        #: models in memory have learned their events up to there.
        self._released: dict[str, int] = {}
        self.gate = AssignmentGate()
        self._stall = StallWatch()
        self._closed = False
        # The pipeline field is free text: "<p>/predict" keys apart from "<p>/features/<n>".
        self.key = Checkpoint(f"{stage.spec.name}/predict", 0, 0, "", "", b"").key
        # Until a partition is restored and held, its messages are skipped (not ours yet).
        stage.tracking = True
        if wire:
            app.on_partitions_assigned.connect(cast(Any, self.on_assigned))
            app.on_partitions_revoked.connect(cast(Any, self.on_revoked))
            app.on_before_shutdown.connect(cast(Any, self.on_shutdown))
            app.timer(interval=2.0, name=f"{stage.spec.name}.snapshots.watchdog")(self.watchdog)

    @property
    def open(self) -> bool:
        # Batches before the first restore are skipped; the seek delivers them again.
        return self._restored and not self._closed

    def _mine(self, tps: Iterable[TP]) -> list[TP]:
        return sorted((tp for tp in tps if tp.topic in self.topics), key=str)

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        """Signal ``app.on_partitions_assigned``: restore, commit, open the gate.

        As agents.checkpoints: Faust starts each partition at the committed offset, never
        ahead of the snapshot's; only a partition whose position is behind it (fresh
        models over a used topic) is sought back.
        """
        tps = self._mine(assigned)
        async with self.lock:
            try:
                if tps:
                    await self._resume(tps)
            finally:
                self.gate.open()

    async def _resume(self, tps: list[TP]) -> None:
        behind = await self.place(tps)
        stage = self.stage
        await self._commit({tp: stage.positions[f"{tp.topic}:{tp.partition}"] for tp in tps})
        if behind:
            log.warning(
                "predict stage of %s starts before the committed offsets; seeking back to %s",
                stage.spec.name,
                {str(tp): o for tp, o in behind.items()},
            )
            await seek_back(self.app, behind)
        log.info("predict stage of %s resumes at %s", stage.spec.name, stage.positions)

    async def place(self, tps: list[TP]) -> dict[TP, int]:
        """Restore (once), then set ``positions`` of the assigned partitions.

        Returns the partitions whose position is behind the group's committed offset
        (the caller commits and seeks back).
        """
        if not self._restored:
            await self._restore()
            self._restored = True
        stage = self.stage
        held = {f"{tp.topic}:{tp.partition}" for tp in tps}
        for key in set(stage.positions) - held:
            self._released[key] = stage.positions.pop(key)
        for key in held:
            if key not in stage.positions:
                stage.positions[key] = self._released.pop(key, 0)
        behind: dict[TP, int] = {}
        for topic in sorted({tp.topic for tp in tps}):
            parts = [tp.partition for tp in tps if tp.topic == topic]
            starts, _ends = await self.store.offset_range(topic, parts)
            committed = await self.store.committed(self.app.conf.id, topic, parts)
            for p in parts:
                key = f"{topic}:{p}"
                stage.positions[key] = max(stage.positions[key], starts[p])
                if committed.get(p, 0) > stage.positions[key]:
                    behind[TP(topic, p)] = stage.positions[key]
        stage.tracking = True
        return behind

    async def watchdog(self) -> None:
        """Seek a partition back when it stops making progress (see agents.io.StallWatch)."""
        if self._closed or not self.gate.is_open or self.app.rebalancing:
            return
        if self.lock.locked():
            return
        positions = {}
        for key, offset in list(self.stage.positions.items()):
            topic, _, partition = key.rpartition(":")
            positions[TP(topic, int(partition))] = offset
        stuck = self._stall.stuck(self.app, positions)
        if stuck:
            async with self.lock:
                log.warning(
                    "predict stage of %s made no progress with events waiting; seeking back to %s",
                    self.stage.spec.name,
                    {str(tp): o for tp, o in stuck.items()},
                )
                await seek_back(self.app, stuck)

    async def _restore(self) -> None:
        stage = self.stage
        found = (await self.store.load([self.key])).get(self.key)
        if isinstance(found, Checkpoint):
            try:
                alerts = await self._restore_from(found)
            except CheckpointError as exc:
                found = exc
            else:
                if alerts is not None:
                    for alert in alerts:
                        log.error("%s", alert.message)
                    if alerts:
                        messages = [stage.alert_message(a) for a in alerts]
                        await send_all(self.app, messages, self.signer)
                    log.info(
                        "restored models %s at offsets %s",
                        [s.label for s in stage.lifecycle.served],
                        stage.positions,
                    )
                    return
        if isinstance(found, CheckpointIntegrityError):
            log.error("not using the model checkpoint %s (%s); fresh models", self.key, found)
            alert = Alert(stage.spec.name, "integrity", "", str(found))
            await send_all(self.app, [stage.alert_message(alert)], self.signer)
        elif isinstance(found, CheckpointError):
            log.warning("not using the model checkpoint %s (%s); fresh models", self.key, found)
        labels = stage.register_fresh()
        log.info("fresh models %s", labels)

    async def _restore_from(self, checkpoint: Checkpoint) -> list[Alert] | None:
        """Restore a checkpoint if it is usable; None (with the reason logged) if not."""
        if checkpoint.spec_hash != self.stage.spec.hash:
            log.warning("the model checkpoint %s is of another spec; fresh models", self.key)
            return None
        past = await self._past_end(checkpoint)
        if past:
            log.warning(
                "not using the model checkpoint %s: its offsets are past the end of %s (the "
                "topics were recreated since); fresh models",
                self.key,
                ", ".join(past),
            )
            return None
        return self.stage.restore(checkpoint.state)

    async def _past_end(self, checkpoint: Checkpoint) -> list[str]:
        """The checkpoint's ``topic:partition`` positions beyond their topic's end now."""
        positions = Predictor.saved_positions(checkpoint.state)
        by_topic: dict[str, list[int]] = {}
        for key in positions:
            topic, _, partition = key.rpartition(":")
            by_topic.setdefault(topic, []).append(int(partition))
        past = []
        for topic, parts in sorted(by_topic.items()):
            _starts, ends = await self.store.offset_range(topic, parts)
            for p in parts:
                if positions[f"{topic}:{p}"] > ends.get(p, 0):
                    past.append(f"{topic}:{p} ({positions[f'{topic}:{p}']} > {ends.get(p, 0)})")
        return past

    async def after_batch(self, batch: list[InMessage], result: StageResult) -> None:
        await self._reseek_gaps()
        self.schedule.record(len(batch))
        if self.schedule.due():
            await self._snapshot("snapshot")

    async def _reseek_gaps(self) -> None:
        """Seek back a partition that delivered offsets past its next one.

        A fetch in flight when the assignment's seek ran delivers later offsets; Faust then
        moves its read offset past them and drops the earlier ones when they come, so
        without a new seek the stage would wait for them forever (as agents.checkpoints).
        """
        stage = self.stage
        now = time.monotonic()
        for key in sorted(stage.gaps):
            if key not in stage.positions or now - self._reseeked.get(key, -1e9) < 1.0:
                continue  # the last seek's messages may still be on their way
            self._reseeked[key] = now
            topic, _, partition = key.rpartition(":")
            log.warning("%s delivered offsets past %d; seeking back", key, stage.positions[key])
            await seek_back(self.app, {TP(topic, int(partition)): stage.positions[key]})
        stage.gaps.clear()

    def prepare(self, note: str) -> PreparedSnapshot:
        """A snapshot in memory: models pickled, the state checkpoint and announcements built.

        Synchronous, so the models cannot learn while they are being captured; the slow
        part (files, fsync, the broker) is :meth:`write`, which one-pass runs while the
        next batches go on (agents.onepass).
        """
        stage = self.stage
        offsets = dict(stage.positions)
        pending = [(s, stage.prepare(s, note, offsets)) for s in stage.lifecycle.served]
        versions = {p.manifest.name: p.manifest.version for _, p in pending}
        checkpoint = Checkpoint(
            f"{stage.spec.name}/predict",
            0,
            0,
            stage.spec.hash,
            "predict",
            stage.state_bytes(versions),
            written_ms=now_ms(),
        )
        self.schedule.done()
        return PreparedSnapshot(
            offsets,
            [(s.model, s.model.version, p) for s, p in pending],
            checkpoint,
            [self._announce(s, p.manifest) for s, p in pending],
        )

    async def write(self, snapshot: PreparedSnapshot) -> None:
        """Models to the registry (off the event loop), then the state checkpoint, then
        the announcements; only then does each model carry its new version."""
        registry = self.stage.lifecycle.registry
        assert registry is not None  # prepare() checked
        written = [p for _, _, p in snapshot.versions]
        manifests = await asyncio.to_thread(lambda: [registry.write(p) for p in written])
        await self.store.save([snapshot.checkpoint])
        await send_all(self.app, snapshot.announcements, self.signer)
        for model, was, p in snapshot.versions:
            if model.version == was:  # not given another version meanwhile (admin API)
                model.version = p.manifest.version
        self.written += 1
        log.info("snapshot %s at %s", [m.label for m in manifests], snapshot.offsets)

    async def _snapshot(self, note: str, commit: bool = True) -> None:
        """Models to the registry, state to the checkpoint topic, then commit the offsets."""
        snapshot = self.prepare(note)
        await self.write(snapshot)
        tps = {}
        for key, offset in snapshot.offsets.items():
            topic, _, partition = key.rpartition(":")
            tps[TP(topic, int(partition))] = offset
        if tps and commit:
            await self._commit(tps)

    def _announce(self, served: Served, manifest: Manifest) -> OutMessage:
        """The ``model_record.avsc`` record of a new version, for ``riverline.models``."""
        estimator = served.model.estimator
        status = "CHAMPION" if served is self.stage.lifecycle.champion else "CANDIDATE"
        folder = self.settings.home / "registry" / manifest.pipeline / manifest.name
        record = {
            "name": manifest.name,
            "version": manifest.version,
            "pipeline": manifest.pipeline,
            "spec": manifest.spec_hash,
            "features": str(self.stage.spec.features.get("name", "")),
            "schema": self.stage.spec.subject,
            "estimator": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
            "params": {},
            "status": status,
            "parent_version": manifest.parent,
            "artifact": str(folder / f"v{manifest.version}" / "artifact.pkl"),
            "artifact_sha256": manifest.sha256,
            "signature": None,
            "checkpoint_offsets": dict(manifest.offsets),
            "events_learned": manifest.samples_seen,
            "metrics": dict(manifest.metrics),
            "created_ts": int(manifest.created_ts * 1000),
            "updated_ts": now_ms(),
        }
        value = encode_single_object(self.stage.catalog.record("model_record"), record)
        return OutMessage(self.models_topic, manifest.label.encode(), value, [])

    async def _commit(self, offsets: dict[TP, int]) -> None:
        # As agents.checkpoints: the topics are never acked, so Faust's commit() would not
        # send these offsets; _commit sends them as they are.
        consumer: Any = self.app.consumer
        await consumer._commit(offsets)

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Signal ``app.on_partitions_revoked``: snapshot and commit before letting go."""
        self.gate.close()  # first, before any await: no batch until the next assignment
        tps = self._mine(revoked)
        if not tps:
            return
        async with self.lock:
            if self.open and self.schedule.pending:
                await self._snapshot("snapshot on revocation")
            for tp in tps:
                key = f"{tp.topic}:{tp.partition}"
                if key in self.stage.positions:
                    self._released[key] = self.stage.positions.pop(key)

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        """Signal ``app.on_before_shutdown``: a last snapshot; no batch after it."""
        async with self.lock:
            try:
                if self.open:
                    await self._snapshot("snapshot at shutdown")
            except Exception:  # shutdown must go on; the previous snapshot stays valid
                log.exception("the snapshot at shutdown of %s failed", self.stage.spec.name)
            self._closed = True
            await self.store.stop()
