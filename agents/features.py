"""Features agent: events topic -> features topic, with feature state checkpointed."""

from __future__ import annotations

from typing import Any

import faust

from agents.checkpoints import FeatureCheckpoints
from agents.io import run_stage
from streams.catalog import SchemaCatalog
from streams.featurization import Featurization
from streams.integrity import RecordSigner
from streams.metrics import WorkerMetrics
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["add_features_agent"]


def add_features_agent(
    app: faust.App,
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    metrics: WorkerMetrics,
    signer: RecordSigner,
) -> tuple[Featurization, FeatureCheckpoints]:
    topics = spec.topics(settings.namespace)
    stage = Featurization(
        spec,
        catalog,
        features_topic=topics.features,
        dlq_topic=settings.topic("riverline.dlq"),
        hold_new_partitions=False,  # partitions come from checkpoints on assignment
    )
    checkpoints = FeatureCheckpoints(app, settings, stage, topics.events, signer)
    metrics.watch_features(spec.name, stage)

    async def features(stream: faust.StreamT) -> Any:
        async for _ in run_stage(
            app,
            stream,
            stage,
            spec.name,
            metrics,
            settings.batch_size,
            settings.batch_timeout,
            signer=signer,
            guard=checkpoints,
        ):
            pass

    # acks=False: Faust never commits P.events; FeatureCheckpoints commits the offsets of
    # each checkpoint once it is written (see streams.checkpoint).
    source = app.topic(topics.events, acks=False)
    app.agent(source, name=f"{spec.name}.features", concurrency=1)(features)
    return stage, checkpoints
