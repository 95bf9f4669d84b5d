"""Feature-state checkpoints, wired to Faust's rebalance and shutdown signals.

The design (why Riverline, not Faust, commits ``P.events``) is in :mod:`streams.checkpoint`.
Here: restore on assignment (batches wait at the gate meanwhile), checkpoint then commit
after batches (every ``checkpoint_every`` events or ``checkpoint_interval`` seconds), on
revocation and at clean shutdown. Every step holds ``lock``, which the features agent
holds for a whole batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import faust
from faust.types import TP

from agents.io import AssignmentGate, StallWatch, seek_back
from streams.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointIntegrityError,
    CheckpointSchedule,
    CheckpointStore,
    checkpoint_key,
)
from streams.featurization import Featurization
from streams.integrity import RecordSigner
from streams.lifecycle import Alert
from streams.messages import InMessage
from streams.security import client_kwargs
from streams.settings import Settings
from streams.stage import StageResult
from streams.topics import CHECKPOINTS

__all__ = ["FeatureCheckpoints"]

log = logging.getLogger("riverline.checkpoints")


class FeatureCheckpoints:
    """Keeps a features stage's partitions, checkpoints and committed offsets in step."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        stage: Featurization,
        events_topic: str,
        signer: RecordSigner,
        *,
        wire: bool = True,
    ) -> None:
        """``wire=False``: no signal handlers and no watchdog; an owner calls the steps
        (agents.onepass, which checkpoints features and models together)."""
        self.app = app
        self.stage = stage
        self.topic = events_topic
        self.store = CheckpointStore(
            settings.effective_bootstrap,
            settings.topic(CHECKPOINTS),
            settings.checkpoint_max_bytes,
            signer,
            client_kwargs(settings),
        )
        self.schedule = CheckpointSchedule(settings.checkpoint_every, settings.checkpoint_interval)
        self.lock = asyncio.Lock()
        self.written = 0
        #: ``time.time()`` of the latest checkpoint written (metrics: checkpoint age).
        self.last_saved: float | None = None
        self._saved: dict[int, int] = {}  # partition -> offset of its latest checkpoint
        self._closed = False
        self.gate = AssignmentGate()
        self._stall = StallWatch()
        if wire:
            # mode types handlers as taking ``*args``; these name the one argument they get.
            app.on_partitions_assigned.connect(cast(Any, self.on_assigned))
            app.on_partitions_revoked.connect(cast(Any, self.on_revoked))
            app.on_before_shutdown.connect(cast(Any, self.on_shutdown))
            app.timer(interval=2.0, name=f"{events_topic}.checkpoints.watchdog")(self.watchdog)

    @property
    def open(self) -> bool:
        return not self._closed

    def _mine(self, tps: Iterable[TP]) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == self.topic)

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        """Signal ``app.on_partitions_assigned``: restore, commit, open the gate.

        Faust starts each partition at its committed offset, which Riverline commits only
        after the checkpoint that reflects it: never ahead of the restored state (the
        stage skips the events its state already has). Only a partition whose state
        starts before its committed offset (no usable checkpoint, rebuilt from the start)
        is sought back, with the watchdog as a safety net for that seek.
        """
        partitions = self._mine(assigned)
        async with self.lock:
            for p in set(self.stage.held) - set(partitions):
                self.stage.release(p)
            new = [p for p in partitions if p not in self.stage.held]
            if new:
                await self._restore(new)
            offsets = {TP(self.topic, p): self.stage.held[p].offset for p in partitions}
            if offsets:
                committed = await self.store.committed(self.app.conf.id, self.topic, partitions)
                behind = {tp: o for tp, o in offsets.items() if committed.get(tp.partition, 0) > o}
                # A commit here races with Faust's seek to the committed offsets; either
                # order starts each partition at or before its state.
                await self._commit(offsets)
                if behind:
                    log.warning(
                        "%s: state starts before the committed offset; seeking back to %s",
                        self.topic,
                        {tp.partition: o for tp, o in behind.items()},
                    )
                    await seek_back(self.app, behind)
            log.info("%s resumes at %s", self.topic, {tp.partition: o for tp, o in offsets.items()})
            self.gate.open()

    async def watchdog(self) -> None:
        """Seek a partition back to the state's offset when it stops making progress.

        See :class:`agents.io.StallWatch`: only a seek can leave a partition waiting.
        """
        if not self.open or not self.gate.is_open or self.app.rebalancing:
            return
        if self.lock.locked():
            return
        positions = {TP(self.topic, p): h.offset for p, h in list(self.stage.held.items())}
        stuck = self._stall.stuck(self.app, positions)
        if stuck:
            async with self.lock:
                log.warning(
                    "%s made no progress with events waiting; seeking back to %s",
                    self.topic,
                    {tp.partition: o for tp, o in stuck.items()},
                )
                await seek_back(self.app, stuck)

    async def _restore(self, partitions: list[int]) -> list[Alert]:
        """Restore each partition from its checkpoint, or start it empty.

        Returns an ``integrity`` alert per checkpoint record whose MAC failed, for the
        caller to publish; such a record is used as no checkpoint at all.
        """
        name = self.stage.spec.name
        alerts: list[Alert] = []
        found = await self.store.load([checkpoint_key(name, p) for p in partitions])
        starts, ends = await self.store.offset_range(self.topic, partitions)
        for p in partitions:
            cp = found.get(checkpoint_key(name, p))
            why = ""
            if isinstance(cp, Checkpoint) and cp.offset > ends[p]:
                why = f"its offset {cp.offset} is past the end of {self.topic}:{p} ({ends[p]})"
            elif isinstance(cp, Checkpoint):
                try:
                    self.stage.restore(cp)
                    self._saved[p] = cp.offset
                    log.info("restored %r", cp)
                    continue
                except CheckpointError as exc:
                    why = str(exc)
            elif isinstance(cp, CheckpointError):
                why = str(cp)
                if isinstance(cp, CheckpointIntegrityError):
                    log.error("%s", cp)
                    alerts.append(Alert(name, "integrity", "", str(cp)))
            if why:
                log.warning(
                    "not using the checkpoint of %s:%d (%s); rebuilding its feature state from "
                    "the start of the partition",
                    self.topic,
                    p,
                    why,
                )
            self.stage.start(p, 0)
            self._saved.pop(p, None)
        for p in partitions:
            held = self.stage.held[p]
            if held.offset < starts[p]:
                log.warning(
                    "%s:%d starts at offset %d (retention); events %d..%d are gone and not in "
                    "the feature state",
                    self.topic,
                    p,
                    starts[p],
                    held.offset,
                    starts[p] - 1,
                )
                held.offset = starts[p]
        return alerts

    async def after_batch(self, batch: list[InMessage], result: StageResult) -> None:
        self.schedule.record(len(batch))
        if self.schedule.due():
            await self._save()

    async def _save(self, partitions: Iterable[int] | None = None, commit: bool = True) -> None:
        """Checkpoint the partitions that moved, then commit their offsets (if ``commit``)."""
        await self.write(self.prepare(partitions), commit)

    def prepare(self, partitions: Iterable[int] | None = None) -> list[Callable[[], Checkpoint]]:
        """Checkpoints of the partitions whose state moved since their last one, taken now
        (copies of the state); :meth:`write` serializes them in a thread."""
        held = self.stage.held
        moved = [
            p
            for p in (held if partitions is None else partitions)
            if p in held and self._saved.get(p) != held[p].offset
        ]
        self.schedule.done()
        return [self.stage.checkpoint_later(p) for p in moved]

    async def write(self, prepared: list[Callable[[], Checkpoint]], commit: bool = True) -> None:
        """Write prepared checkpoints, then commit their offsets (if ``commit``)."""
        # The zip and deflate of each state (11-16 ms for 399 cards; it grows with the keys)
        # off the event loop: zlib lets go of the GIL.
        checkpoints = await asyncio.to_thread(lambda: [build() for build in prepared])
        await self.store.save(checkpoints)
        for cp in checkpoints:
            self._saved[cp.partition] = cp.offset
        self.written += len(checkpoints)
        if checkpoints:
            self.last_saved = time.time()
            log.info(
                "checkpoint of %s: %s",
                self.topic,
                ", ".join(f"{cp.partition}@{cp.offset}" for cp in checkpoints),
                extra={"pipeline": self.stage.spec.name, "checkpoints": len(checkpoints)},
            )
            if commit:
                await self._commit({TP(self.topic, cp.partition): cp.offset for cp in checkpoints})

    async def _commit(self, offsets: dict[TP, int]) -> None:
        # Faust's public Consumer.commit() commits only offsets it saw acked, and P.events
        # is never acked (acks=False); _commit sends these offsets as they are.
        consumer: Any = self.app.consumer
        await consumer._commit(offsets)

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Signal ``app.on_partitions_revoked``: checkpoint, commit, release."""
        self.gate.close()  # first, before any await: no batch until the next assignment
        partitions = self._mine(revoked)
        async with self.lock:
            if self.open:
                await self._save(partitions)
            for p in partitions:
                self.stage.release(p)
                self._saved.pop(p, None)

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        """Signal ``app.on_before_shutdown``: a last checkpoint; no batch after it."""
        async with self.lock:
            if self.open:
                await self._save()
                self._closed = True
            await self.store.stop()
