"""The checkpoint coordinator: one per pipeline, between Faust's signals and its state.

It owns everything that keeps a pipeline's state, outputs and committed offsets in step
(the design is in :mod:`streams.state.checkpoint` and :mod:`streams.state.pipeline`):

* **the gate**: from the start of a rebalance until the assigned partitions' state is
  restored, batches wait (:class:`agents.io.AssignmentGate`);
* **the lock**: a batch, a checkpoint, a restore and an admin action never interleave;
* **the schedule**: a checkpoint every ``checkpoint_every`` events or ``checkpoint_interval``
  seconds, taken between two batches (or by a timer when no batch comes) and written
  while the next ones run, then the offsets it reflects committed (one at a time); on
  revocation and at shutdown, written before returning;
* **the watchdog**: a partition that stops moving with events waiting is sought back
  (:class:`agents.io.StallWatch`);
* **recovery**: a batch that fails as a whole (not one message: those are dead letters)
  takes the pipeline down (``/ready`` answers 503, ``riverline_pipeline_up`` is 0, an
  alert says why), its state is restored from the last checkpoint and its partitions
  sought back there, then it is up again: nothing is skipped;
* **the state budget**: a warning when a partition's feature state passes half of
  ``RIVERLINE_CHECKPOINT_MAX_BYTES``; a checkpoint that cannot be written takes the
  pipeline down loudly until one can.

Exactly-once mode (``RIVERLINE_GUARANTEE=exactly_once``): a transactional producer
(:class:`streams.kafka.transactions.Transactions`, one transactional id per pipeline, whose
inputs a single-mode worker holds together) sends every batch's outputs; a checkpoint is
written in the same transaction and commits it with the offsets it reflects
(``send_offsets_to_transaction``), synchronously between two batches. Each assignment
starts a new producer before anything is restored (fencing the previous owner) and
restores from the committed checkpoints; a failure aborts the open transaction and
restores, so nothing since the last commit is ever visible twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, cast

import faust
from faust.types import TP

from agents.internals import commit_offsets, seek_back, send_all
from agents.io import AssignmentGate, StallWatch
from streams.features.engine import StateBudget
from streams.kafka.auth import client_kwargs
from streams.kafka.transactions import FencedError, Transactions
from streams.messages import InMessage
from streams.models.lifecycle import Alert
from streams.observability.metrics import WorkerMetrics
from streams.pipeline.stage import StageResult
from streams.settings import Settings
from streams.state.checkpoint import CheckpointSchedule
from streams.state.feed import ServedSet, VersionFeed
from streams.state.pipeline import Partition, PipelineState, Prepared
from streams.trust.records import RecordSigner

__all__ = ["Coordinator"]

log = logging.getLogger("riverline.coordinator")

#: Seconds between attempts to restore a pipeline whose batch failed.
_RECOVERY_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)


class Coordinator:
    """Keeps one pipeline's feature state, models and committed raw offsets in step."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        state: PipelineState,
        signer: RecordSigner,
        metrics: WorkerMetrics,
        replicas: VersionFeed | None = None,
    ) -> None:
        """``replicas``: a decoupled pipeline's serving worker serves the versions this
        feed brings (:meth:`before_batch`)."""
        self.app = app
        self.replicas = replicas
        self._serving: ServedSet | None = None
        self.state = state
        self.signer = signer
        self.pipeline = state.stage.predictor.spec.name
        self.raw_topic = state.stage.predictor.spec.topics(settings.namespace).raw
        self.schedule = CheckpointSchedule(
            settings.checkpoint_every, settings.effective_checkpoint_interval
        )
        #: Exactly-once mode's producer (None: at least once).
        self.transactions = (
            self._transactions(app, settings, state) if settings.exactly_once else None
        )
        #: When a fenced producer was noticed (monotonic), while this worker waits for a
        #: rebalance; still assigned after ``_takeover_after`` s, it takes over again.
        self._fenced_at: float | None = None
        self._takeover_after = max(30.0, 2 * settings.session_timeout)
        self.budget = StateBudget(settings.checkpoint_max_bytes)
        self.lock = asyncio.Lock()
        self.gate = AssignmentGate()
        self.checkpoints_written = 0
        #: ``time.time()`` of the latest checkpoint written (the checkpoint-age gauge).
        self.last_saved: float | None = None
        #: Why the pipeline is down (empty: up); ``/ready`` answers 503 while it is not.
        self.down: dict[str, str] = {}
        self._up = metrics.pipeline_up.labels(self.pipeline)
        self._up.set(1)
        self._failures = metrics.pipeline_failures
        self._stall = StallWatch()
        self._closed = False
        self._started = False
        self._warned_budget = False
        self._recent_failures: list[float] = []
        self._last_alerted: dict[str, float] = {}
        self._writing: asyncio.Task[None] | None = None
        # The predict stage skips labels of partitions it does not hold, and repeats.
        state.stage.predictor.tracking = True
        # mode types handlers as taking ``*args``; these name the one argument they get.
        app.on_partitions_assigned.connect(cast(Any, self.on_assigned))
        app.on_partitions_revoked.connect(cast(Any, self.on_revoked))
        app.on_before_shutdown.connect(cast(Any, self.on_shutdown))
        app.timer(interval=2.0, name=f"{self.pipeline}.coordinator.watchdog")(self.watchdog)
        idle = max(0.05, settings.effective_checkpoint_interval / 2)
        app.timer(interval=idle, name=f"{self.pipeline}.coordinator.idle")(self.checkpoint_idle)

    def _transactions(
        self, app: faust.App, settings: Settings, state: PipelineState
    ) -> Transactions:
        """Exactly-once mode: the producer that outputs and checkpoints go through."""
        transactions = Transactions(
            settings.effective_bootstrap,
            transactional_id(settings, self.pipeline),
            client_kwargs(settings),
            max_request_size=settings.checkpoint_max_bytes + (1 << 16),
            timeout_ms=transaction_timeout_ms(settings),
        )
        state.store.transactions = transactions
        return transactions

    @property
    def open(self) -> bool:
        """False once shut down: no batch after the last checkpoint."""
        return not self._closed

    @property
    def healthy(self) -> bool:
        return not self.down

    def _set_down(self, what: str, why: str) -> None:
        self.down[what] = why
        self._up.set(0)

    def _set_up(self, what: str) -> None:
        self.down.pop(what, None)
        if not self.down:
            self._up.set(1)

    # -- rebalances and shutdown ------------------------------------------------------

    async def on_assigned(self, sender: Any, assigned: set[TP], **_: Any) -> None:
        """Signal ``app.on_partitions_assigned``: restore, commit, seek, open the gate.

        A single-mode pipeline's model learns from every raw partition, so it runs on one
        worker: a worker given some of its partitions but not all (another worker joined
        the group) keeps the gate closed, marks the pipeline down and alerts, until one
        worker holds them all again. Nothing is processed twice or learned apart.
        """
        async with self.lock:
            shared = self._shared(assigned)
            try:
                if self.transactions is not None:
                    await self._take_over()
                await self._resume(assigned)
            finally:
                if shared:
                    self._set_down("shared", shared)
                    await self._alert([Alert(self.pipeline, "single_mode_shared", "", shared)])
                    log.error("%s", shared)
                else:
                    self._set_up("shared")
                    self.gate.open()

    def _shared(self, assigned: set[TP]) -> str:
        """Why this single-mode worker must not run (it holds part of ``P.raw``), or ""."""
        spec = self.state.stage.predictor.spec
        if self.replicas is not None or spec.decoupled:
            return ""
        held = {tp.partition for tp in assigned if tp.topic == self.raw_topic}
        if not held or len(held) == spec.partitions:
            return ""
        return (
            f"pipeline {spec.name} runs in single mode, where one worker learns from all "
            f"{spec.partitions} partitions of {self.raw_topic}, but this worker was given "
            f"{sorted(held)}: another worker joined the group. Stop the other worker(s), or "
            'set [pipeline] mode = "decoupled" to serve on several workers. Paused until one '
            "worker holds every partition."
        )

    async def _resume(self, assigned: Iterable[Partition], *, seek_all: bool = False) -> None:
        await self.settle()  # its commit must not land after this one
        resume = await self.state.restore(assigned, self.app.conf.id)
        await self._alert(resume.alerts)
        if not resume.offsets:
            return
        if self.transactions is not None:
            await self.transactions.commit(resume.offsets, self.app.conf.id)
        else:
            await commit_offsets(self.app, _tps(resume.offsets))
        behind = resume.offsets if seek_all else resume.behind
        if behind:
            log.warning(
                "%s starts before the consumer's offsets; seeking back to %s",
                self.pipeline,
                {f"{t}:{p}": o for (t, p), o in behind.items()},
            )
            await seek_back(self.app, _tps(behind))
        log.info(
            "%s resumes at %s",
            self.pipeline,
            {f"{t}:{p}": o for (t, p), o in resume.offsets.items()},
        )

    async def on_revoked(self, sender: Any, revoked: set[TP], **_: Any) -> None:
        """Signal ``app.on_partitions_revoked``: checkpoint and commit, then let go."""
        self.gate.close()  # first, before any await: no batch until the next assignment
        async with self.lock:
            await self.settle()
            if self.transactions is not None:
                await self._end_transaction("revocation")
            elif self.open and self.healthy and self.schedule.pending:
                await self._save("revocation")
            self.state.release(revoked)

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        """Signal ``app.on_before_shutdown``: a last checkpoint; no batch after it."""
        async with self.lock:
            try:
                await self.settle()
                if self.transactions is not None:
                    await self._end_transaction("shutdown")
                elif self.open and self.healthy:
                    await self._save("shutdown")
            except Exception:  # shutdown must go on; the previous checkpoint stays valid
                log.exception("the checkpoint at shutdown of %s failed", self.pipeline)
            self._closed = True
            await self.state.store.stop()
            if self.transactions is not None:
                await self.transactions.stop()

    # -- batches ----------------------------------------------------------------------

    async def started(self) -> None:
        """The agent (re)started: after a crash of its loop, restore before any batch."""
        if not self._started:
            self._started = True
            return
        async with self.lock:
            crash = RuntimeError("the agent's loop crashed and was restarted")
            await self.recover(crash, kind="agent")

    async def ready(self) -> None:
        """A serving worker waits for the learner's first model version; others go on."""
        if self.replicas is None or self.replicas.served is not None:
            return
        self._set_down("models", "waiting for the learner's first model version")
        log.info("%s waits for the learner's first model version", self.pipeline)
        await self.replicas.changed.wait()
        self._set_up("models")

    async def before_batch(self) -> None:
        """A serving worker serves the newest versions the learner published, from the
        next batch on (loaded off the event loop)."""
        feed = self.replicas
        if feed is None or feed.served is None or feed.served is self._serving:
            return
        served = feed.served
        predictor = self.state.stage.predictor
        registry = predictor.lifecycle.registry
        assert registry is not None  # make_stage gives every predictor one
        loaded = await asyncio.to_thread(
            lambda: [(m, registry.load(m.name, m.version)) for m in served.models]
        )
        lifecycle = predictor.lifecycle
        order = []
        for entry, (estimator, manifest) in loaded:
            target = next((s for s in lifecycle.served if s.model.spec.name == entry.name), None)
            if target is None:
                continue  # no longer in this worker's spec
            target.model.estimator = estimator
            target.model.version = manifest.version
            target.model.samples_seen = manifest.samples_seen
            target.stage = entry.stage
            order.append(target)
        lifecycle.served[:] = order + [s for s in lifecycle.served if s not in order]
        self._serving = served
        log.info("%s serves %s", self.pipeline, [s.label for s in lifecycle.served])

    async def send(self, result: StageResult) -> None:
        """A batch's outputs, after the model versions it made (a promotion by the policy,
        a reset on drift) are written, so no prediction names an unwritten one."""
        lifecycle = self.state.stage.predictor.lifecycle
        if lifecycle.unwritten:
            await asyncio.to_thread(lifecycle.write_pending)
        if self.transactions is None:
            await send_all(self.app, result.sends, self.signer)
            return
        await self.transactions.begin()
        await send_all(self.app, result.sends, self.signer, self.transactions.producer)

    async def after_batch(self, batch: list[InMessage], result: StageResult) -> None:
        """After a batch's outputs were acknowledged: a checkpoint if one is due."""
        self.schedule.record(len(batch))
        if self.transactions is not None:
            if self.schedule.due():  # commits this transaction; a failure: recover
                await self._save("snapshot")
            return
        if self.schedule.due() and not self.writing:
            self._write_later("snapshot")

    async def recover(self, exc: BaseException, kind: str = "batch") -> None:
        """Restore the pipeline from its last checkpoint after a failed batch.

        Called with the lock held. The failed batch may have moved state and sent some
        outputs; everything since the last checkpoint is processed again (outputs may
        repeat, with the same ``rl.event_id``; nothing is skipped). Retries with a
        backoff until the restore works or the worker stops.
        """
        why = f"{type(exc).__name__}: {exc}"
        log.error("a batch of %s failed (%s); restoring its last checkpoint", self.pipeline, why)
        self._set_down("batch", f"restoring the last checkpoint after {why}")
        self._failures.labels(self.pipeline, kind).inc()
        # A batch that fails again at once (a poison batch) waits longer each time, and
        # the same failure is not alerted more than once a minute.
        now = time.monotonic()
        self._recent_failures = [t for t in self._recent_failures if now - t < 300] + [now]
        if now - self._last_alerted.get(why, -1e9) >= 60:
            self._last_alerted[why] = now
            await self._alert([Alert(self.pipeline, "pipeline_down", "", self.down["batch"])])
        repeats = len(self._recent_failures) - 1
        if repeats:
            await asyncio.sleep(_RECOVERY_BACKOFF[min(repeats, len(_RECOVERY_BACKOFF)) - 1])
        for attempt in range(1_000_000):
            if self._closed:
                return
            try:
                await self.settle()
                if self.transactions is not None and not await self._abort_or_fenced(exc):
                    return
                self.state.forget()
                await self._resume(self.app.consumer.assignment(), seek_all=True)
                self.schedule.done()
                self._set_up("batch")
                log.info("%s is up again, from its last checkpoint", self.pipeline)
                return
            except Exception:
                delay = _RECOVERY_BACKOFF[min(attempt, len(_RECOVERY_BACKOFF) - 1)]
                log.exception("restoring %s failed; trying again in %.0f s", self.pipeline, delay)
                await asyncio.sleep(delay)

    # -- transactions (exactly-once mode) ---------------------------------------------

    async def _take_over(self) -> None:
        """On assignment: a new producer (fencing the partitions' previous owner and
        aborting what it left open), then everything restored from the committed
        checkpoints, since what this worker held in memory may be stale."""
        assert self.transactions is not None
        await self.transactions.start()
        self._fenced_at = None
        self._set_up("fenced")
        self.state.forget()

    async def _end_transaction(self, note: str) -> None:
        """Revocation, shutdown: commit what was done since the last checkpoint with a
        checkpoint, or abort it when that cannot be done (it is redone by the next owner)."""
        assert self.transactions is not None
        if not self.transactions.started:
            return
        try:
            if self.open and self.healthy and self.schedule.pending:
                await self._save(note)
        except Exception:
            log.exception("the checkpoint at %s of %s failed; aborting", note, self.pipeline)
        if self.transactions.open:
            await self.transactions.abort()

    async def _abort_or_fenced(self, exc: BaseException) -> bool:
        """Before a restore: abort the open transaction. False if this worker was fenced:
        the partitions' new owner has them; nothing more until they are assigned here
        again (or, if still assigned after a while, the watchdog takes over again)."""
        assert self.transactions is not None
        await self.transactions.fail(exc)
        if self.transactions.fenced and self._fenced_at is None:
            self._fenced_at = time.monotonic()
            why = "fenced: another worker started with this pipeline's transactional id"
            log.error("%s %s; waiting for the next assignment", self.pipeline, why)
            self._set_up("batch")
            self._set_down("fenced", why)
            self.gate.close()
            self.state.forget()
            return False
        if self.transactions.fenced or not self.transactions.started:
            await self._take_over()  # the watchdog's take-over, or after a failed abort
        return True

    async def checkpoint_idle(self) -> None:
        """Timer: the checkpoint that is due when no batch came to take it (the events
        stopped, or came while the previous checkpoint was being written), so state and
        committed offsets never stay behind a quiet input. In exactly-once mode it commits
        the open transaction: the outputs of the last events before a pause become visible.
        """
        if self._closed or self.lock.locked() or self.writing or not self.gate.is_open:
            return
        if not self.schedule.due():
            return
        if self.transactions is None:
            # Down only because the last checkpoint failed: this one may fit again.
            if set(self.down) - {"checkpoint"}:
                return
            async with self.lock:
                if not (self._closed or self.writing) and self.schedule.due():
                    self._write_later("snapshot")
            return
        if not (self.transactions.open and self.healthy):
            return
        async with self.lock:
            if self.transactions.open and self.schedule.due():
                try:
                    await self._save("snapshot")
                except Exception as exc:
                    await self.recover(exc)

    # -- checkpoints ------------------------------------------------------------------

    @property
    def writing(self) -> bool:
        """A checkpoint is being written in the background."""
        return self._writing is not None and not self._writing.done()

    async def settle(self) -> None:
        """Wait until the checkpoint being written (if any) is written or has failed."""
        if self._writing is not None:
            await asyncio.wait([self._writing])
            self._writing = None

    def _prepare(self, note: str) -> Prepared:
        prepared = self.state.prepare(note)
        self.schedule.done()
        return prepared

    def _write_later(self, note: str) -> None:
        """At least once: take a checkpoint now and write it while the next batches run."""
        prepared = self._prepare(note)
        self._writing = asyncio.create_task(
            self._write_in_background(prepared), name=f"{self.pipeline}.checkpoint"
        )

    async def _save(self, note: str) -> None:
        """A checkpoint written before returning (revocation, shutdown)."""
        await self._write(self._prepare(note))

    async def _write(self, prepared: Prepared) -> None:
        """Models, then state records, then announcements, then the commit.

        The outputs of the events they reflect were acknowledged before ``after_batch``
        (agents.io.send_all): a restart skips the events a checkpoint has.
        """
        self._check_budget()
        await self.state.write(prepared)
        if self.transactions is not None:
            await self.transactions.begin()
            producer = self.transactions.producer
            await send_all(self.app, prepared.announcements, self.signer, producer)
            await self.transactions.commit(prepared.offsets, self.app.conf.id)
        else:
            await send_all(self.app, prepared.announcements, self.signer)
            await commit_offsets(self.app, _tps(prepared.offsets))
        self.checkpoints_written += 1
        self.last_saved = time.time()

    async def _write_in_background(self, prepared: Prepared) -> None:
        try:
            await self._write(prepared)
        except Exception as exc:  # the previous checkpoint stays valid
            why = (
                f"writing a checkpoint of {self.pipeline} failed ({type(exc).__name__}: "
                f"{exc}); the previous one stays valid. Retrying after "
                f"{self.schedule.every} events or {self.schedule.interval:.0f} s."
            )
            if "checkpoint" in self.down:
                log.error("%s", why)  # the traceback was logged the first time
            else:
                log.exception("%s", why)
            self._failures.labels(self.pipeline, "checkpoint").inc()
            if "checkpoint" not in self.down:
                self._set_down("checkpoint", why)
                await self._alert([Alert(self.pipeline, "checkpoint_failed", "", why)])
        else:
            if "checkpoint" in self.down:
                log.info("checkpoints of %s are written again", self.pipeline)
                self._set_up("checkpoint")

    def _check_budget(self) -> None:
        """Log once when a partition's feature state passes half the checkpoint limit."""
        held = self.state.stage.featurization.held
        largest = max((h.state.nbytes() for h in held.values()), default=0)
        level = self.budget.level(largest)
        if level == "ok":
            self._warned_budget = False
        elif not self._warned_budget:
            self._warned_budget = True
            log.warning("%s", self.budget.describe(largest, f"{self.pipeline}"))

    async def _alert(self, alerts: list[Alert]) -> None:
        """Publish alerts on ``riverline.alerts``; never fails the caller."""
        if not alerts:
            return
        predictor = self.state.stage.predictor
        try:
            await send_all(self.app, [predictor.alert_message(a) for a in alerts], self.signer)
        except Exception:  # the broker may be what failed; the log has it
            log.exception("could not publish %d alert(s) of %s", len(alerts), self.pipeline)

    # -- watchdog ---------------------------------------------------------------------

    async def watchdog(self) -> None:
        """Seek a partition back when it stops making progress (see agents.io.StallWatch);
        an idle serving worker swaps in the newest versions (so what it reports serving
        is what its next prediction uses)."""
        if self._closed or self.app.rebalancing or self.lock.locked():
            return
        fenced = self._fenced_at
        if fenced is not None and time.monotonic() - fenced > self._takeover_after:
            if self.state.mine(self.app.consumer.assignment()):
                async with self.lock:  # still assigned, and no rebalance came
                    await self.recover(FencedError("fenced, and still assigned"), "fenced")
                    if self.healthy:
                        self.gate.open()
            return
        if not self.gate.is_open:
            return
        if self.replicas is not None and self.replicas.served is not self._serving:
            async with self.lock:
                await self.before_batch()
        stuck = self._stall.stuck(self.app, _tps(self.state.offsets()))
        if stuck:
            async with self.lock:
                log.warning(
                    "%s made no progress with events waiting; seeking back to %s",
                    self.pipeline,
                    {str(tp): o for tp, o in stuck.items()},
                )
                await seek_back(self.app, stuck)


def transactional_id(settings: Settings, pipeline: str) -> str:
    """A single-mode pipeline's transactional id: its worker holds all of its inputs."""
    return settings.topic(f"riverline.{pipeline}.worker")


def transaction_timeout_ms(settings: Settings) -> int:
    """Above a checkpoint interval plus the worst stall (a long rebalance); within the
    broker's ``transaction.max.timeout.ms`` (15 minutes by default)."""
    return int(min(900.0, max(60.0, 4 * settings.effective_checkpoint_interval + 60.0)) * 1000)


def _tps(offsets: dict[Partition, int]) -> dict[TP, int]:
    return {TP(topic, partition): offset for (topic, partition), offset in offsets.items()}
