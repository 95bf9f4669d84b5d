"""The Faust app factory: one app (one consumer group) running every pipeline's agents."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from agents.admin import add_admin_views
from agents.checkpoints import FeatureCheckpoints
from agents.diagnostics import dump_state
from agents.features import add_features_agent
from agents.handover import use_handover_consumer
from agents.ingest import add_ingest_agent
from agents.learn import add_learn_agent
from agents.onepass import add_onepass_agent
from agents.sink import add_sink_agent
from agents.views import add_views
from streams.catalog import SchemaCatalog
from streams.featurization import Featurization
from streams.ingestion import Ingestion
from streams.integrity import RecordSigner
from streams.metrics import WorkerMetrics
from streams.prediction import Predictor
from streams.security import faust_credentials
from streams.settings import PRODUCER_BATCH_BYTES, Settings
from streams.spec import PipelineSpec
from streams.status_page import RecentNotices

__all__ = ["PipelineStages", "Worker", "create_app", "use_fetch_max_wait"]


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
    #: Signs every record the worker writes and checks what it reads back.
    signer: RecordSigner
    pipelines: dict[str, PipelineStages] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    #: For the status page: read back from the dlq and alerts topics (agents.views).
    dead_letter_notices: RecentNotices = field(default_factory=RecentNotices)
    alert_notices: RecentNotices = field(default_factory=RecentNotices)
    #: (topic, partition) -> messages behind the end, as last measured (agents.views).
    lag: dict[tuple[str, int], int] = field(default_factory=dict)

    def checkpoint_age(self, stages: PipelineStages, now: float | None = None) -> float | None:
        """Seconds since the pipeline's features stage last wrote a checkpoint, if it has."""
        last = stages.checkpoints.last_saved
        return None if last is None else (now or time.time()) - last


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def _broker_credentials(settings: Settings) -> faust.SASLCredentials | None:
    creds = faust_credentials(settings)
    if creds is None:
        return None
    return faust.SASLCredentials(
        username=creds.username, password=creds.password, mechanism=creds.mechanism
    )


def use_fetch_max_wait(ms: int) -> None:
    """Faust's consumer with ``fetch_max_wait_ms = ms`` instead of its hard-coded 1,500.

    aiokafka keeps one fetch in flight per broker, and leaves out of it a partition whose
    fetched records are not consumed yet. A fetch then asks only for an idle partition
    (``P.labels``) and the broker holds it for the whole wait while events pile up on
    ``P.raw``: after a busy minute, latency at a quarter of the load was 1.0 s at p50 and
    1.6 s at most (1.5 s plus), and 6 ms at p50 with 10 ms. Idle, it costs a fetch every
    ``ms`` milliseconds.
    """
    cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    original = getattr(cls, "_riverline_original", None) or cls._create_worker_consumer

    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        consumer = original(self, *args, **kwargs)
        consumer._fetch_max_wait_ms = ms  # read by AIOKafkaConsumer.start()
        return consumer

    cls._riverline_original = original
    cls._create_worker_consumer = create


def create_app(settings: Settings, specs: list[PipelineSpec], catalog: SchemaCatalog) -> Worker:
    """Build the Faust app for these pipelines. Topics must exist already."""
    use_fetch_max_wait(settings.fetch_max_wait_ms)
    app_id = settings.topic("riverline")
    datadir = settings.home / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=_broker_url(settings.effective_bootstrap),
        broker_credentials=_broker_credentials(settings),
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
        # A record batch holds at least one whole output or dead letter.
        producer_max_request_size=max(settings.output_max_bytes * 2, 1 << 20),
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        # Faust commits the ingest stage's raw offsets (acked topics) on the same schedule
        # as Riverline's checkpoints, so a crash repeats at most that much ingestion.
        broker_commit_every=settings.checkpoint_every,
        broker_commit_interval=min(2.8, settings.checkpoint_interval),
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
    )
    use_handover_consumer(app)
    worker = Worker(app, settings, WorkerMetrics(), RecordSigner(settings.signing_key_bytes()))
    signer = worker.signer
    for spec in specs:
        add_sink_agent(app, settings, spec, catalog)  # offline store (agents.sink)
        if settings.topology == "one-pass":
            stage, guard = add_onepass_agent(app, settings, spec, catalog, worker.metrics, signer)
            worker.pipelines[spec.name] = PipelineStages(
                spec, stage.ingestion, stage.featurization, guard.features, stage.predictor
            )
            continue
        ingestion = add_ingest_agent(app, settings, spec, catalog, worker.metrics, signer)
        featurization, checkpoints = add_features_agent(
            app, settings, spec, catalog, worker.metrics, signer
        )
        worker.pipelines[spec.name] = PipelineStages(
            spec,
            ingestion,
            featurization,
            checkpoints,
            add_learn_agent(app, settings, spec, catalog, worker.metrics, signer),
        )
    add_views(worker)
    # Model lifecycle per pipeline (stages.predictor.lifecycle) behind the admin API.
    predictors = {name: stages.predictor for name, stages in worker.pipelines.items()}
    add_admin_views(app, settings, worker.metrics, predictors, signer)

    @app.task
    async def dump_state_on_sigusr1() -> None:
        """``kill -USR1 <worker pid>``: the consumer's state and every task's stack, logged."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_state, app)

    return worker
