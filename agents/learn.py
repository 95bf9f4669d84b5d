"""Learn/predict agent: features topic -> predictions topic; the model learns prequentially."""

from __future__ import annotations

from typing import Any

import faust

from agents.io import run_stage
from streams.catalog import SchemaCatalog
from streams.metrics import WorkerMetrics
from streams.prediction import Predictor
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["add_learn_agent"]


def add_learn_agent(
    app: faust.App,
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    metrics: WorkerMetrics,
) -> Predictor:
    topics = spec.topics(settings.namespace)
    stage = Predictor(
        spec,
        catalog,
        predictions_topic=topics.predictions,
        dlq_topic=settings.topic("riverline.dlq"),
    )
    e2e = metrics.end_to_end.labels(spec.name)

    def record_model() -> None:
        model = stage.model
        version = str(model.version)
        metrics.model_info.labels(spec.name, model.spec.name, version, "champion").set(1)
        metrics.model_samples.labels(spec.name, model.spec.name, version).set(model.samples_seen)
        for metric, value in model.metric_values().items():
            metrics.model_metric.labels(spec.name, model.spec.name, version, metric).set(value)

    async def learn(stream: faust.StreamT) -> Any:
        async for _ in run_stage(
            app, stream, stage, spec.name, metrics, settings.batch_size, settings.batch_timeout
        ):
            for seconds in stage.latencies:
                e2e.observe(seconds)
            record_model()

    record_model()
    app.agent(app.topic(topics.features), name=f"{spec.name}.learn", concurrency=1)(learn)
    return stage
