"""The Faust app factory: one app (one consumer group) running every pipeline's agents."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
from faust.web import Request, Response, View

from agents.checkpoints import FeatureCheckpoints
from agents.features import add_features_agent
from agents.ingest import add_ingest_agent
from agents.learn import add_learn_agent
from streams.catalog import SchemaCatalog
from streams.featurization import Featurization
from streams.ingestion import Ingestion
from streams.metrics import WorkerMetrics
from streams.prediction import Predictor
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["PipelineStages", "Worker", "create_app"]


@dataclass
class PipelineStages:
    spec: PipelineSpec
    ingestion: Ingestion
    featurization: Featurization
    checkpoints: FeatureCheckpoints
    predictor: Predictor


@dataclass
class Worker:
    """The app and what it runs, so views and tests can reach the stages."""

    app: faust.App
    settings: Settings
    metrics: WorkerMetrics
    pipelines: dict[str, PipelineStages] = field(default_factory=dict)


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def create_app(settings: Settings, specs: list[PipelineSpec], catalog: SchemaCatalog) -> Worker:
    """Build the Faust app for these pipelines. Topics must exist already."""
    app_id = settings.topic("riverline")
    datadir = settings.home / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=_broker_url(settings.effective_bootstrap),
        value_serializer="raw",
        key_serializer="raw",
        # Riverline creates its topics explicitly; the broker refuses auto-creation.
        topic_allow_declare=False,
        topic_disable_leader=True,
        store="memory://",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        datadir=str(datadir),
        web_enabled=True,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        autodiscover=False,
        producer_max_request_size=max(settings.max_message_bytes * 2, 1 << 20),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
    )
    worker = Worker(app, settings, WorkerMetrics())
    for spec in specs:
        ingestion = add_ingest_agent(app, settings, spec, catalog, worker.metrics)
        featurization, checkpoints = add_features_agent(
            app, settings, spec, catalog, worker.metrics
        )
        worker.pipelines[spec.name] = PipelineStages(
            spec,
            ingestion,
            featurization,
            checkpoints,
            add_learn_agent(app, settings, spec, catalog, worker.metrics),
        )
    _add_views(worker)
    return worker


def _add_views(worker: Worker) -> None:
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
            assigned = app.consumer.assignment() if app.consumer else set()
            ready = bool(assigned) and not app.rebalancing
            return self.json(
                {"ready": ready, "partitions": len(assigned)}, status=200 if ready else 503
            )

    @app.page("/status.json")
    class Status(View):
        async def get(self, request: Request) -> Response:
            body: dict[str, Any] = {"pipelines": {}}
            for name, stages in worker.pipelines.items():
                model = stages.predictor.model
                body["pipelines"][name] = {
                    "spec": stages.spec.label,
                    "features": stages.featurization.feature_set.label,
                    "feature_partitions": stages.featurization.positions(),
                    "checkpoints_written": stages.checkpoints.written,
                    "events_replayed": stages.featurization.replayed,
                    "events_reingested": stages.featurization.reingested,
                    "model": model.label,
                    "samples_seen": model.samples_seen,
                    "metrics": model.metric_values(),
                }
            return self.json(body)
