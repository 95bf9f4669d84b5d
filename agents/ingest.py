"""Ingest agent: raw topic -> events topic (or dead letters)."""

from __future__ import annotations

from typing import Any

import faust

from agents.io import run_stage
from streams.catalog import SchemaCatalog
from streams.ingestion import Ingestion
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["add_ingest_agent"]


def add_ingest_agent(
    app: faust.App,
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    metrics: WorkerMetrics,
) -> Ingestion:
    topics = spec.topics(settings.namespace)
    stage = Ingestion(
        spec,
        catalog,
        events_topic=topics.events,
        dlq_topic=settings.topic("riverline.dlq"),
        max_bytes=settings.max_message_bytes,
        max_id_bytes=settings.max_id_bytes,
        max_event_time_ahead=settings.max_event_time_ahead,
    )

    async def ingest(stream: faust.StreamT) -> Any:
        async for _ in run_stage(
            app, stream, stage, spec.name, metrics, settings.batch_size, settings.batch_timeout
        ):
            pass

    app.agent(app.topic(topics.raw), name=f"{spec.name}.ingest", concurrency=1)(ingest)
    return stage
