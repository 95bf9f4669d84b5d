"""Sink agent: a pipeline's topics and its dead letters -> the Parquet offline store.

It reads with its own aiokafka consumer in its own group (``<ns>riverline-sink.<P>``),
not the worker's Faust group: the sink commits offsets only after the rows they cover
are flushed to Parquet (every ``sink_flush_interval`` seconds, on revocation and at clean
shutdown), which Faust's per-event acks cannot express, and a slow disk never holds back
the pipeline's own consumer. After a SIGKILL it re-reads from the last commit and
:class:`~streams.store.sink.OfflineSink` drops offsets its files already hold, so rows are never
duplicated. One group per pipeline, because the dead-letter topic is shared and each
pipeline's sink must see all of its partitions.

Every record of a topic Riverline writes (all but ``P.labels``, which users write) must
carry a valid ``rl.mac`` (:mod:`streams.trust.records`); one that does not is counted in
``rejected``, logged and left out of the store, so nobody can add history to it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import logging.config
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from streams.kafka.auth import client_kwargs
from streams.messages import InMessage
from streams.observability.logs import logging_config
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.registry import load_catalog
from streams.settings import Settings
from streams.spec import PipelineSpec
from streams.store.offline import OfflineStore
from streams.store.sink import OfflineSink, sink_topics
from streams.trust.records import RecordSigner

__all__ = ["SinkAgent", "add_sink_agent", "run_sinks", "start_sink_process"]

log = logging.getLogger("riverline.sink")

#: Seconds a stopping ``riverline sink`` waits for its last flush and commit.
_SHUTDOWN_SECONDS = 30


class SinkAgent(ConsumerRebalanceListener):
    """Consume, buffer, flush, then commit: one pipeline's offline sink."""

    def __init__(self, settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog) -> None:
        self.settings = settings
        self.spec = spec
        topics = spec.topics(settings.namespace)
        kinds = sink_topics(spec, settings.namespace, settings.topic("riverline.dlq"))
        #: Topics whose records must carry Riverline's MAC: all but the users' labels.
        self.signed_topics = frozenset(t for t, kind in kinds.items() if kind != "labels")
        self.sink = OfflineSink(
            spec,
            catalog,
            OfflineStore.from_settings(settings),
            kinds=kinds,
            block_size=settings.sink_block_size,
            dead_letter_sources={topics.raw, topics.events, topics.features, topics.predictions},
            verified=self.signed_topics,
        )
        self.topics = sorted(kinds)
        self.signer = RecordSigner(settings.signing_key_bytes())
        self.rejected = 0
        self.group = settings.topic(f"riverline-sink.{spec.name}")
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self._consumed: dict[TopicPartition, int] = {}  # next offset, not yet committed
        self._closed = False
        self.rows = 0

    async def run(self) -> None:
        """The agent's task: read until shutdown, flushing on schedule."""
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.effective_bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=int(self.settings.session_timeout * 1000),
            heartbeat_interval_ms=int(min(3.0, self.settings.session_timeout / 3) * 1000),
            **client_kwargs(self.settings),
        )
        await self.consumer.start()
        self.consumer.subscribe(self.topics, listener=self)
        flushed = time.monotonic()
        while not self._closed:
            try:
                # Small batches: decoding happens on the worker's event loop.
                records = await self.consumer.getmany(timeout_ms=500, max_records=500)
            except Exception:
                if self._closed:  # the consumer was stopped at shutdown
                    break
                raise
            async with self.lock:
                if self._closed:
                    break
                for tp, msgs in records.items():
                    self.rows += self.sink.add(self._trusted(tp.topic, msgs))
                    self._consumed[tp] = msgs[-1].offset + 1
                if time.monotonic() - flushed >= self.settings.sink_flush_interval:
                    await self._flush()
                    flushed = time.monotonic()

    def _trusted(self, topic: str, msgs: Sequence[Any]) -> list[InMessage]:
        """The messages to store: on Riverline's own topics, those whose MAC verifies."""
        if topic not in self.signed_topics:
            return [_in_message(m) for m in msgs]
        kept = []
        for m in msgs:
            if self.signer.verify(topic, m.key, m.value, m.headers or ()):
                kept.append(_in_message(m))
                continue
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 1000 == 0:
                log.warning(
                    "sink %s: %s:%d:%d has no valid rl.mac (not written by this "
                    "deployment, or another RIVERLINE_SIGNING_KEY); not stored (%d so far)",
                    self.spec.name,
                    topic,
                    m.partition,
                    m.offset,
                    self.rejected,
                )
        return kept

    async def _flush(self) -> None:
        """Write every changed block, then commit what the files now hold."""
        if self.consumer is None:
            return
        # In a thread: a block rewrite takes long enough to delay the worker's heartbeats
        # and agents. The lock keeps add() out meanwhile.
        await asyncio.to_thread(self.sink.flush)
        if self._consumed:
            await self.consumer.commit(dict(self._consumed))
            self._consumed.clear()

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Rebalance callbacks run while the loop waits in getmany, outside a batch.
        if not self._closed:
            await self._flush()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("sink %s reads %s", self.spec.name, sorted(f"{t}:{p}" for t, p in assigned))

    async def on_shutdown(self, sender: Any, **_: Any) -> None:
        """Signal ``app.on_before_shutdown``: a last flush and commit, then stop."""
        async with self.lock:
            if self._closed:
                return
            await self._flush()
            self._closed = True
            if self.consumer is not None:
                await self.consumer.stop()
        log.info("sink %s stopped after %d rows", self.spec.name, self.rows)


def _in_message(m: Any) -> InMessage:
    return InMessage(
        topic=m.topic,
        partition=m.partition,
        offset=m.offset,
        key=m.key,
        value=m.value,
        timestamp_ms=int(m.timestamp),
        headers=tuple((str(k), bytes(v)) for k, v in (m.headers or ())),
    )


def add_sink_agent(
    app: faust.App, settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog
) -> SinkAgent | None:
    """Run a pipeline's offline sink as a task of the worker.

    Only with ``sink_enabled`` and not ``sink_process`` (then the worker starts
    ``riverline sink`` as a child process instead: :func:`start_sink_process`).
    """
    if not settings.sink_enabled or settings.sink_process:
        return None
    agent = SinkAgent(settings, spec, catalog)
    app.on_before_shutdown.connect(cast(Any, agent.on_shutdown))

    async def sink() -> None:
        await agent.run()

    app.task(sink)
    return agent


async def _run_sinks(settings: Settings, specs: Sequence[PipelineSpec]) -> None:
    catalog = load_catalog(settings)
    agents = [SinkAgent(settings, spec, catalog) for spec in specs]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Future[Any]] = [asyncio.ensure_future(a.run()) for a in agents]
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    try:
        # Bounded: with the broker gone a last commit would wait for it forever; the
        # rows not committed are read again next time (and not duplicated, see above).
        await asyncio.wait_for(
            asyncio.gather(*(agent.on_shutdown(None) for agent in agents)), _SHUTDOWN_SECONDS
        )
    except TimeoutError:
        log.warning("the sink's last flush did not finish in %d s; stopping", _SHUTDOWN_SECONDS)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task is not stopped:
            task.result()  # a sink that failed: its error, not a silent stop


def run_sinks(settings: Settings, specs: Sequence[PipelineSpec]) -> None:
    """``riverline sink``: the pipelines' offline sinks in this process, until SIGTERM."""
    logging.config.dictConfig(logging_config(settings))
    log.info("offline sink for %s", ", ".join(s.name for s in specs))
    asyncio.run(_run_sinks(settings, specs))


def _child_setup(nice: int, idle: bool) -> Callable[[], None]:
    def setup() -> None:  # pragma: no cover - runs in the child before exec
        """Lower priority; and (Linux) SIGTERM when the parent dies (a SIGKILLed worker)."""
        with contextlib.suppress(OSError):
            os.nice(nice)
        if idle and hasattr(os, "SCHED_IDLE"):
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG

    return setup


def start_learner_process(
    settings: Settings, pipelines: Sequence[Path]
) -> subprocess.Popen[bytes] | None:
    """The learners of a worker's decoupled pipelines, as ``riverline worker --role
    learn``, a child process of its own (its web port: the worker's plus one). It stops
    with the worker, also when the worker is killed."""
    cmd = [sys.executable, "-m", "streams", "worker", "--role", "learn"]
    for path in pipelines:
        cmd += ["--pipeline", str(path)]
    env = settings.child_env()
    env["RIVERLINE_WEB_PORT"] = str(settings.web_port + 1)
    # At the worker's priority; SIGTERM from the kernel if the worker dies (SIGKILL).
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_child_setup(0, idle=False))
    log.info("learner process started (pid %d)", proc.pid)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    atexit.register(stop)
    return proc


def start_sink_process(
    settings: Settings, pipelines: Sequence[Path]
) -> subprocess.Popen[bytes] | None:
    """The worker's offline sink as ``riverline sink``, a child process of its own.

    In its own process the sink's decoding and Parquet writes do not hold the worker's
    GIL, and at ``sink_nice`` it takes the CPU the worker leaves: after a burst the offline store
    catches up behind the predictions, not in their way. It stops with the worker:
    SIGTERM at the worker's exit, and from the kernel if the worker dies.
    """
    if not settings.sink_enabled or not settings.sink_process:
        return None
    cmd = [sys.executable, "-m", "streams", "sink"]
    for path in pipelines:
        cmd += ["--pipeline", str(path)]
    setup = _child_setup(settings.sink_nice, settings.sink_idle)
    proc = subprocess.Popen(cmd, env=settings.child_env(), preexec_fn=setup)
    log.info("offline sink started (pid %d)", proc.pid)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    atexit.register(stop)
    return proc
