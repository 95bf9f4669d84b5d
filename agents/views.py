"""The worker's web views (metrics, readiness, status page) and what keeps them current.

Besides the views: a timer that sets the consumer-lag and checkpoint-age gauges, a task
that reads recent dead letters and alerts back from their topics (so no agent has to
report them), and a log line per partition assignment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faust.types import TP
from faust.web import Request, Response, View

from agents.internals import read_offset
from streams.kafka.auth import client_kwargs
from streams.kafka.topics import topic_partitions
from streams.observability.status_page import alert_notice, dead_letter_notice, render_status_html
from streams.pipeline.lineage import lineage_headers
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.serialization.registry import load_catalog

if TYPE_CHECKING:
    from agents.app import Worker
    from agents.learner import LearnerRun
    from agents.pipeline import Pipeline

__all__ = ["add_views", "status_document"]

log = logging.getLogger("riverline.worker")

#: Seconds between updates of the lag and checkpoint-age gauges.
GAUGE_INTERVAL = 2.0
#: How far back (messages per partition) the status page looks in the dlq and alerts.
NOTICE_BACKLOG = 50


def _ready(worker: Worker) -> tuple[bool, int]:
    """Ready: partitions assigned, no rebalance under way, and every pipeline up."""
    app = worker.app
    assigned = app.consumer.assignment() if app.consumer else set()
    up = not worker.down()
    return bool(assigned) and not app.rebalancing and up, len(assigned)


def _counts(worker: Worker) -> dict[str, dict[str, dict[str, float]]]:
    """pipeline -> stage -> outcome -> events, from the worker's counters."""
    counts: dict[str, dict[str, dict[str, float]]] = {}
    for family in worker.metrics.events.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                stage = counts.setdefault(labels["pipeline"], {}).setdefault(labels["stage"], {})
                stage[labels["outcome"]] = sample.value
    return counts


def _pipeline_status(
    worker: Worker, pipeline: Pipeline, by_stage: dict[str, dict[str, float]]
) -> dict[str, Any]:
    spec, stage = pipeline.spec, pipeline.stage
    topics = spec.topics(worker.settings.namespace)
    own_topics = {topics.raw, topics.labels}
    age = worker.checkpoint_age(pipeline)
    predictor = stage.predictor
    return {
        "spec": spec.label,
        "up": not pipeline.coordinator.down,
        "down": dict(pipeline.coordinator.down),
        "features": stage.featurization.feature_set.label,
        "topics": [topics.raw, topics.events, topics.features, topics.predictions],
        "events": by_stage,
        "events_ok": int(by_stage.get(stage.ingestion.stage, {}).get("ok", 0)),
        "dead_letters": int(sum(s.get("dead_letter", 0) for s in by_stage.values())),
        "consumer_lag": sum(n for (t, _), n in worker.lag.items() if t in own_topics),
        "checkpoint_age_s": None if age is None else round(age, 1),
        "feature_partitions": stage.featurization.positions(),
        "checkpoints_written": pipeline.coordinator.checkpoints_written,
        "events_replayed": stage.featurization.replayed,
        "models": [dict(m) for m in predictor.lifecycle.describe()],
        "mode": spec.mode,
        "serving": _serving(pipeline),
        # The champion's, as before the lifecycle existed (scripts read these).
        "model": predictor.model.label,
        "samples_seen": predictor.model.samples_seen,
        "metrics": predictor.model.metric_values(),
    }


def _serving(pipeline: Pipeline) -> list[dict[str, Any]]:
    """A decoupled pipeline's served versions and how far behind the learner each is."""
    feed = pipeline.coordinator.replicas
    if feed is None:
        return []
    out = []
    for served in pipeline.stage.predictor.lifecycle.served:
        model = served.model
        found = feed.staleness(model.spec.name, model.samples_seen)
        out.append(
            {
                "model": model.label,
                "stage": served.stage,
                "staleness_samples": None if found is None else found[0],
                "age_s": None if found is None else round(found[1], 1),
            }
        )
    return out


def _learner_status(run: LearnerRun) -> dict[str, Any]:
    coordinator, learner = run.coordinator, run.learner
    return {
        "active": coordinator.active,
        "fenced": coordinator.fenced,
        "position": learner.position,
        "learned": learner.learned,
        "repeats": learner.repeats,
        "published": coordinator.published,
        "models": [dict(m) for m in learner.lifecycle.describe()],
    }


def status_document(worker: Worker) -> dict[str, Any]:
    """What ``/status.json`` serves and ``/status`` renders."""
    ready, partitions = _ready(worker)
    counts = _counts(worker)
    pipelines: dict[str, Any] = {}
    for name, pipeline in worker.pipelines.items():
        pipelines[name] = _pipeline_status(worker, pipeline, counts.get(name, {}))
    return {
        "worker": {
            "ready": ready,
            "partitions": partitions,
            "bootstrap": worker.settings.effective_bootstrap,
            "uptime_s": round(time.time() - worker.started, 1),
        },
        "pipelines": pipelines,
        "learners": {name: _learner_status(run) for name, run in worker.learners.items()},
        "consumer_lag": [
            {"topic": t, "partition": p, "lag": n} for (t, p), n in sorted(worker.lag.items())
        ],
        "dead_letters": worker.dead_letter_notices.as_dicts(),
        "alerts": worker.alert_notices.as_dicts(),
    }


async def _positions(worker: Worker, tps: set[TP]) -> dict[TP, int]:
    """The next offset each partition will process: what the pipelines' state reflects,
    else where Faust's streams have read to."""
    consumer: Any = worker.app.consumer
    held: dict[tuple[str, int], int] = {}
    for pipeline in worker.pipelines.values():
        held.update(pipeline.coordinator.state.offsets())
    positions: dict[TP, int] = {}
    for tp in tps:
        if (tp.topic, tp.partition) in held:
            positions[tp] = held[(tp.topic, tp.partition)]
            continue
        read = read_offset(worker.app, tp)
        if read is not None:
            positions[tp] = read + 1
            continue
        with contextlib.suppress(Exception):
            position = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
            if position is not None:
                positions[tp] = position
    return positions


async def update_gauges(worker: Worker) -> None:
    """Set consumer lag per topic/partition and checkpoint age per pipeline stage."""
    metrics = worker.metrics
    now = time.time()
    for name, pipeline in worker.pipelines.items():
        age = worker.checkpoint_age(pipeline, now)
        if age is not None:
            metrics.checkpoint_age.labels(name, pipeline.stage.stage).set(age)
    app = worker.app
    if app.rebalancing:
        return
    tps = set(app.consumer.assignment())
    if not tps:
        return
    highwaters = await asyncio.wait_for(app.consumer.highwaters(*tps), timeout=5.0)
    positions = await _positions(worker, tps)
    lag = {
        (tp.topic, tp.partition): max(0, int(highwaters[tp]) - positions[tp])
        for tp in tps
        if highwaters.get(tp) is not None and tp in positions
    }
    # No await from here on, so a scrape never sees the gauge half rebuilt.
    metrics.consumer_lag.clear()
    for (topic, partition), n in lag.items():
        metrics.consumer_lag.labels(topic, str(partition)).set(n)
    worker.lag = lag


def _alert(catalog: SchemaCatalog, value: bytes) -> Mapping[str, Any] | None:
    with contextlib.suppress(Exception):
        if value[:2] == b"\xc3\x01":
            return decode_single_object(catalog, value)[1]
        doc = json.loads(value)
        return doc if isinstance(doc, dict) else None
    return None


async def tail_notices(worker: Worker) -> None:
    """Read the dlq and the alerts topic from a little before their end, for the status page."""
    settings = worker.settings
    dlq, alerts = settings.topic("riverline.dlq"), settings.topic("riverline.alerts")
    notices = _Notices(worker, dlq)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap,
        enable_auto_commit=False,
        isolation_level="read_committed",
        **client_kwargs(settings),
    )
    await consumer.start()
    try:
        if not await _seek_backlog(consumer, worker, (dlq, alerts)):
            log.warning("no %s or %s topic: the status page shows no dead letters", dlq, alerts)
            return
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=500)
            for tp, messages in sorted(batches.items(), key=lambda kv: kv[0].partition):
                for m in messages:
                    notices.take(tp.topic, m)
    finally:
        await consumer.stop()


async def _seek_backlog(
    consumer: AIOKafkaConsumer, worker: Worker, topics: tuple[str, ...]
) -> list[TopicPartition]:
    """Assign the topics' partitions, each at :data:`NOTICE_BACKLOG` before its end."""
    settings = worker.settings
    tps = [
        TopicPartition(topic, p)
        for topic in topics
        for p in await topic_partitions(
            settings.effective_bootstrap, topic, client_kwargs(settings)
        )
    ]
    if not tps:
        return tps
    consumer.assign(tps)
    starts = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        consumer.seek(tp, max(starts[tp], ends[tp] - NOTICE_BACKLOG))
    return tps


class _Notices:
    """Turns dead letters and alerts read back into the status page's notices."""

    def __init__(self, worker: Worker, dlq: str) -> None:
        settings = worker.settings
        self.worker = worker
        self.dlq = dlq
        self.catalog = load_catalog(settings)
        #: Input topic -> the pipeline reading it, to name a dead letter's pipeline.
        self.by_topic: dict[str, str] = {}
        for name, pipeline in worker.pipelines.items():
            t = pipeline.spec.topics(settings.namespace)
            self.by_topic.update({t.raw: name, t.events: name, t.features: name, t.labels: name})

    def take(self, topic: str, m: ConsumerRecord[bytes, bytes]) -> None:
        worker = self.worker
        if not worker.signer.verify(topic, m.key, m.value, m.headers or ()):
            return  # not written by this deployment: not shown
        ts = m.timestamp / 1000
        if topic == self.dlq:
            notice = dead_letter_notice(lineage_headers(m.headers), ts, self.by_topic)
            if notice is not None:
                worker.dead_letter_notices.add(notice)
        elif m.value is not None:
            record = _alert(self.catalog, m.value)
            notice = alert_notice(record, ts, worker.pipelines) if record else None
            if notice is not None:
                worker.alert_notices.add(notice)


def add_views(worker: Worker) -> None:
    """Add the web views, the gauge timer, the notice reader and the assignment log line."""
    _add_pages(worker)
    _add_background(worker)


def _add_pages(worker: Worker) -> None:
    """``/metrics``, ``/ready``, ``/status.json`` and the status page (``/status``, ``/``)."""
    app = worker.app

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(
                worker.metrics.exposition(),
                content_type="text/plain; version=0.0.4",
            )

    @app.page("/ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            ready, partitions = _ready(worker)
            body = {"ready": ready, "partitions": partitions, "down": worker.down()}
            return self.json(body, status=200 if ready else 503)

    @app.page("/status.json")
    class StatusJson(View):
        async def get(self, request: Request) -> Response:
            return self.json(status_document(worker))

    class StatusPage(View):
        async def get(self, request: Request) -> Response:
            return self.html(render_status_html(status_document(worker)))

    app.page("/status")(StatusPage)
    app.page("/")(StatusPage)


def _add_background(worker: Worker) -> None:
    """The gauge timer, the notice reader and the log line of each partition assignment."""
    app = worker.app

    @app.timer(GAUGE_INTERVAL)
    async def gauges() -> None:
        try:
            await update_gauges(worker)
        except Exception as exc:  # a failed refresh must not stop the timer
            log.warning("could not update the lag and checkpoint-age gauges: %s", exc)

    @app.task
    async def notices() -> None:
        try:
            await tail_notices(worker)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the page then shows no notices; the worker goes on
            log.warning("stopped reading recent dead letters and alerts: %s", exc)

    async def assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        topics: dict[str, list[int]] = {}
        for tp in assigned:
            topics.setdefault(tp.topic, []).append(tp.partition)
        log.info(
            "partitions assigned: %s",
            "; ".join(f"{t} {sorted(p)}" for t, p in sorted(topics.items())) or "none",
            extra={"partitions": len(assigned)},
        )

    # mode types signal handlers as taking ``*args``.
    app.on_partitions_assigned.connect(cast(Any, assigned))
