"""Learn/predict agent: features and delayed labels -> predictions; models learn prequentially.

One agent consumes both ``P.features`` and ``P.labels``, so one lifecycle (champion and
shadows) sees every prediction and every label in a single order. Models are snapshotted
with the offsets they reflect (agents.snapshots) and restored on assignment.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from typing import Any

import faust
from prometheus_client import Counter

from agents.io import run_stage
from agents.snapshots import ModelSnapshots
from streams.catalog import SchemaCatalog
from streams.integrity import RecordSigner
from streams.lifecycle import ModelLifecycle
from streams.metrics import WorkerMetrics
from streams.prediction import Predictor
from streams.registry import ModelRegistry
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["add_learn_agent", "make_predictor", "predict_recorder"]


def make_predictor(settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog) -> Predictor:
    """The predict stage of a pipeline, with its registry, topics and label join."""
    topics = spec.topics(settings.namespace)
    registry = ModelRegistry(settings.home / "registry", spec.name, settings.signing_key_bytes())
    return Predictor(
        spec,
        catalog,
        predictions_topic=topics.predictions,
        dlq_topic=settings.topic("riverline.dlq"),
        lifecycle=ModelLifecycle(spec, registry),
        labels_topic=topics.labels,
        shadow_topic=f"{topics.predictions}.shadow",
        alerts_topic=settings.topic("riverline.alerts"),
        audit_topic=settings.topic("riverline.audit"),
        label_ttl_ms=int(settings.label_ttl * 1000),
        label_max_pending=settings.label_max_pending,
        label_max_bytes=settings.label_max_bytes,
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
    )


def predict_recorder(
    metrics: WorkerMetrics, spec: PipelineSpec, stage: Predictor
) -> Callable[[], None]:
    """What to call after each predict batch: latency, labels, drift, audits.

    The model gauges (served versions, samples seen, prequential metrics) are set when
    ``/metrics`` is scraped, not per batch: at a quarter of the maximum load a batch holds
    a few events, and setting them (the ROC AUC is a trapezoid over its curve) took about
    50 us per batch (timeit, one model of ``transactions``).
    """
    e2e = metrics.end_to_end.labels(spec.name)
    labels = _label_counters(metrics)
    expired = labels["expired"].labels(spec.name)
    joined = labels["joined"].labels(spec.name)
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
        expired.inc(stage.join.expired - reported["expired"])
        joined.inc(stage.join.joined - reported["joined"])
        reported.update(expired=stage.join.expired, joined=stage.join.joined)

    metrics.before_scrape(record_models)
    return record


def add_learn_agent(
    app: faust.App,
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    metrics: WorkerMetrics,
    signer: RecordSigner,
) -> Predictor:
    topics = spec.topics(settings.namespace)
    stage = make_predictor(settings, spec, catalog)
    snapshots = ModelSnapshots(app, settings, stage, [topics.features, topics.labels], signer)
    record = predict_recorder(metrics, spec, stage)

    async def learn(stream: faust.StreamT) -> Any:
        async for _ in run_stage(
            app,
            stream,
            stage,
            spec.name,
            metrics,
            settings.batch_size,
            settings.batch_timeout,
            signer=signer,
            guard=snapshots,
        ):
            record()

    # acks=False: Faust never commits these topics; ModelSnapshots commits the offsets each
    # snapshot reflects (see agents.snapshots and streams.checkpoint).
    source = app.topic(topics.features, topics.labels, acks=False)
    app.agent(source, name=f"{spec.name}.learn", concurrency=1)(learn)
    return stage


def _label_counters(metrics: WorkerMetrics) -> dict[str, Counter]:
    """The delayed-label counters, once per worker registry (shared by its pipelines)."""
    found: dict[str, Counter] | None = getattr(metrics, "_label_counters", None)
    if found is None:
        found = {
            "expired": Counter(
                "riverline_labels_expired",
                "Predictions or labels dropped unjoined after the label TTL.",
                ["pipeline"],
                registry=metrics.registry,
            ),
            "joined": Counter(
                "riverline_labels_joined",
                "Delayed labels joined with the prediction they belong to.",
                ["pipeline"],
                registry=metrics.registry,
            ),
        }
        metrics._label_counters = found  # type: ignore[attr-defined]
    return found
