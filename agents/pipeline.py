"""The pipeline agent: ``P.raw`` and ``P.labels`` -> events, features, predictions.

One agent per pipeline runs the one-pass stage (:class:`streams.pipeline.onepass.OnePass`) over
micro-batches; its :class:`~agents.coordinator.Coordinator` keeps state, outputs and
committed offsets in step. Here only the wiring: build the stage, its state and its
coordinator, record metrics after each batch.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust

from agents.coordinator import Coordinator
from agents.internals import RawTopic
from agents.io import run_stage
from streams.errors import ConfigError
from streams.features.stage import Featurization
from streams.ingestion.stage import Ingestion
from streams.kafka.auth import client_kwargs
from streams.kafka.topics import ARTIFACTS, CHECKPOINTS, MODELS
from streams.models.lifecycle import ModelLifecycle
from streams.models.registry import ModelRegistry
from streams.models.stage import Predictor
from streams.observability.metrics import WorkerMetrics
from streams.pipeline.onepass import OnePass
from streams.serialization.catalog import SchemaCatalog
from streams.settings import Settings
from streams.spec import PipelineSpec
from streams.state.feed import VersionFeed
from streams.state.pipeline import PipelineState
from streams.state.store import CheckpointStore
from streams.trust.records import RecordSigner

__all__ = ["Pipeline", "add_pipeline_agent", "make_stage"]


@dataclass
class Pipeline:
    """A pipeline as the worker runs it: its spec, its stage and its coordinator."""

    spec: PipelineSpec
    stage: OnePass
    coordinator: Coordinator


def make_stage(settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog) -> OnePass:
    """The one-pass stage of a pipeline, with its registry, topics and label join."""
    topics = spec.topics(settings.namespace)
    dlq = settings.topic("riverline.dlq")
    registry = ModelRegistry(settings.registry_dir, spec.name, settings.signing_key_bytes())
    predictor = Predictor(
        spec,
        catalog,
        predictions_topic=topics.predictions,
        dlq_topic=dlq,
        lifecycle=ModelLifecycle(spec, registry),
        labels_topic=topics.labels,
        shadow_topic=f"{topics.predictions}.shadow",
        alerts_topic=settings.topic("riverline.alerts"),
        audit_topic=settings.topic("riverline.audit"),
        label_ttl_ms=int(settings.label_ttl * 1000),
        label_max_pending=settings.label_max_pending,
        label_max_bytes=settings.label_max_bytes,
        max_id_bytes=settings.max_id_bytes,
        # A decoupled pipeline's serving worker: what its models learn goes to the log.
        learning_topic=topics.learn if spec.decoupled else None,
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
    )
    return OnePass(
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
        predictor,
        raw_topic=topics.raw,
        max_output_bytes=settings.output_max_bytes,
    )


def add_pipeline_agent(
    app: faust.App,
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    metrics: WorkerMetrics,
    signer: RecordSigner,
) -> Pipeline:
    """One agent on ``P.raw`` and ``P.labels`` running the three stages per batch."""
    if settings.exactly_once and spec.decoupled:
        raise ConfigError(
            f"pipeline {spec.name} runs in decoupled mode, where RIVERLINE_GUARANTEE="
            "exactly_once is not available yet: serving workers publish at least once. Use "
            'single mode ([pipeline] mode = "single") for exactly-once outputs, or unset '
            "RIVERLINE_GUARANTEE."
        )
    topics = spec.topics(settings.namespace)
    stage = make_stage(settings, spec, catalog)
    store = CheckpointStore(
        settings.effective_bootstrap,
        settings.topic(CHECKPOINTS),
        settings.checkpoint_max_bytes,
        signer,
        client_kwargs(settings),
    )
    state = PipelineState(
        stage,
        store,
        catalog,
        labels_topic=topics.labels,
        models_topic=settings.topic("riverline.models"),
        registry_keep=settings.registry_keep,
        exactly_once=settings.exactly_once,
    )
    feed = _replica_feed(app, settings, spec, stage, signer, metrics) if spec.decoupled else None
    coordinator = Coordinator(app, settings, state, signer, metrics, replicas=feed)
    record = predict_recorder(metrics, spec, stage.predictor)
    metrics.watch_features(spec.name, stage.featurization)

    async def pipeline(stream: faust.StreamT) -> Any:
        await coordinator.started()
        async for _ in run_stage(
            app,
            stream,
            stage,
            spec.name,
            metrics,
            settings.batch_size,
            signer=signer,
            guard=coordinator,
        ):
            record()

    # acks=False: Faust never commits these topics; the coordinator commits the offsets
    # each checkpoint reflects (see streams.state.checkpoint).
    source = RawTopic(app, topics=[topics.raw, topics.labels], acks=False)
    app.agent(source, name=f"{spec.name}.pipeline", concurrency=1)(pipeline)
    return Pipeline(spec, stage, coordinator)


def _replica_feed(
    app: faust.App,
    settings: Settings,
    spec: PipelineSpec,
    stage: OnePass,
    signer: RecordSigner,
    metrics: WorkerMetrics,
) -> VersionFeed:
    """A serving worker's feed of the learner's versions, read by a task of the app; the
    served versions' staleness is set when ``/metrics`` is scraped."""
    registry = stage.predictor.lifecycle.registry
    assert registry is not None  # make_stage gives every predictor one
    feed = VersionFeed(
        settings.effective_bootstrap,
        client_kwargs(settings),
        signer,
        registry,
        spec.name,
        settings.topic(ARTIFACTS),
        settings.topic(MODELS),
    )

    @app.task
    async def follow_the_learner() -> None:
        await feed.start()
        try:
            while True:
                await feed.poll(500)
        finally:
            await feed.stop()

    def staleness() -> None:
        metrics.model_staleness.clear()
        metrics.model_age.clear()
        for served in stage.predictor.lifecycle.served:
            found = feed.staleness(served.model.spec.name, served.model.samples_seen)
            if found is not None:
                ahead, age = found
                metrics.model_staleness.labels(spec.name, served.model.spec.name).set(ahead)
                metrics.model_age.labels(spec.name, served.model.spec.name).set(age)

    metrics.before_scrape(staleness)
    return feed


def predict_recorder(
    metrics: WorkerMetrics, spec: PipelineSpec, stage: Predictor
) -> Callable[[], None]:
    """What to call after each batch: latency, labels, drift, audits.

    The model gauges (served versions, samples seen, prequential metrics) are set when
    ``/metrics`` is scraped, not per batch: at a quarter of the maximum load a batch holds
    a few events, and setting them (the ROC AUC is a trapezoid over its curve) would cost
    more than the batch's own metric updates.
    """
    e2e = metrics.end_to_end.labels(spec.name)
    expired = metrics.labels_expired.labels(spec.name)
    joined = metrics.labels_joined.labels(spec.name)
    reported = {"expired": 0, "joined": 0}

    families = {
        "info": metrics.model_info,
        "samples": metrics.model_samples,
        "metric": metrics.model_metric,
    }
    shown: set[tuple[str, ...]] = set()  # (family, *label values) set at the last scrape

    def record_models() -> None:
        current: set[tuple[str, ...]] = set()
        for served in stage.lifecycle.served:
            model = served.model
            series = (spec.name, model.spec.name, str(model.version))
            metrics.model_info.labels(*series, served.stage).set(1)
            metrics.model_samples.labels(*series).set(model.samples_seen)
            current |= {("info", *series, served.stage), ("samples", *series)}
            for metric, value in model.metric_values().items():
                metrics.model_metric.labels(*series, metric).set(value)
                current.add(("metric", *series, metric))
        # A checkpoint serves the next version: the last one's series go, not pile up.
        for family, *values in shown - current:
            with contextlib.suppress(KeyError):
                families[family].remove(*values)
        shown.clear()
        shown.update(current)

    def record() -> None:
        for seconds in stage.latencies:
            e2e.observe(seconds)
        for alert in stage.alerts:
            if alert.kind == "drift":
                name, _, version = alert.model.partition("@")
                metrics.drift.labels(spec.name, name, version).inc()
        for entry in stage.audits:
            metrics.registry_actions.labels(spec.name, entry.model, entry.action).inc()
        # The join may be replaced by a restore: never count backwards.
        expired.inc(max(0, stage.join.expired - reported["expired"]))
        joined.inc(max(0, stage.join.joined - reported["joined"]))
        reported.update(expired=stage.join.expired, joined=stage.join.joined)

    metrics.before_scrape(record_models)
    return record
