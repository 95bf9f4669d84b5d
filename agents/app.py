"""The Faust app factory: one app (one consumer group) running every pipeline's agent."""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field

import faust

from agents.admin import add_admin_views
from agents.diagnostics import dump_state
from agents.internals import use_fetch_max_wait, use_handover_consumer
from agents.learner import LearnerRun, add_learner_agent
from agents.pipeline import Pipeline, add_pipeline_agent
from agents.sink import add_sink_agent
from agents.views import add_views
from streams.kafka.auth import faust_credentials
from streams.observability.metrics import WorkerMetrics
from streams.observability.status_page import RecentNotices
from streams.serialization.catalog import SchemaCatalog
from streams.settings import PRODUCER_BATCH_BYTES, Settings
from streams.spec import PipelineSpec
from streams.trust.records import RecordSigner

__all__ = ["Worker", "create_app"]

#: Seconds between Faust's own offset commits. Riverline's topics are never acked, so
#: Faust has nothing of its own to commit; the coordinator commits after checkpoints.
_FAUST_COMMIT_INTERVAL = 2.8


@dataclass
class Worker:
    """The app and what it runs, so views and tests can reach the pipelines."""

    app: faust.App
    settings: Settings
    metrics: WorkerMetrics
    #: Signs every record the worker writes and checks what it reads back.
    signer: RecordSigner
    pipelines: dict[str, Pipeline] = field(default_factory=dict)
    #: The learners of decoupled pipelines (a ``learn`` worker's).
    learners: dict[str, LearnerRun] = field(default_factory=dict)
    role: str = "serve"
    started: float = field(default_factory=time.time)
    #: For the status page: read back from the dlq and alerts topics (agents.views).
    dead_letter_notices: RecentNotices = field(default_factory=RecentNotices)
    alert_notices: RecentNotices = field(default_factory=RecentNotices)
    #: (topic, partition) -> messages behind the end, as last measured (agents.views).
    lag: dict[tuple[str, int], int] = field(default_factory=dict)

    def checkpoint_age(self, pipeline: Pipeline, now: float | None = None) -> float | None:
        """Seconds since the pipeline last wrote a checkpoint, if it has."""
        last = pipeline.coordinator.last_saved
        return None if last is None else (now or time.time()) - last

    def down(self) -> dict[str, dict[str, str]]:
        """Pipelines (and learners) that are down, and why (empty when every one is up)."""
        down = {
            n: dict(p.coordinator.down) for n, p in self.pipelines.items() if p.coordinator.down
        }
        for name, run in self.learners.items():
            if run.coordinator.down:
                down[f"{name}.learner"] = dict(run.coordinator.down)
        return down


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def _broker_credentials(settings: Settings) -> faust.SASLCredentials | None:
    creds = faust_credentials(settings)
    if creds is None:
        return None
    return faust.SASLCredentials(
        username=creds.username, password=creds.password, mechanism=creds.mechanism
    )


def create_app(
    settings: Settings, specs: list[PipelineSpec], catalog: SchemaCatalog, role: str = "serve"
) -> Worker:
    """Build the Faust app for these pipelines in this ``role``. Topics must exist already.

    ``serve`` runs each pipeline's agent (a decoupled pipeline's serving agent); ``learn``
    the learners of decoupled pipelines. Each role is a consumer group of its own: the
    learners' group holds the one-partition learning logs, so each decoupled pipeline has
    exactly one active learner.
    """
    app = _faust_app(
        settings, settings.topic("riverline" if role == "serve" else "riverline-learn")
    )
    use_handover_consumer(app)
    signer = RecordSigner(settings.signing_key_bytes())
    worker = Worker(app, settings, WorkerMetrics(), signer, role=role)
    for spec in specs:
        if role == "learn":
            if spec.decoupled:
                worker.learners[spec.name] = add_learner_agent(
                    app, settings, spec, catalog, worker.metrics, signer
                )
            continue
        add_sink_agent(app, settings, spec, catalog)  # offline store (agents.sink)
        worker.pipelines[spec.name] = add_pipeline_agent(
            app, settings, spec, catalog, worker.metrics, signer
        )
    add_views(worker)
    add_admin_views(worker)

    @app.task
    async def dump_state_on_sigusr1() -> None:
        """``kill -USR1 <worker pid>``: the consumer's state and every task's stack, logged."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_state, app)

    return worker


def _faust_app(settings: Settings, app_id: str) -> faust.App:
    """The Faust app (a consumer group ``app_id``) as Riverline configures it."""
    use_fetch_max_wait(settings.fetch_max_wait_ms)
    datadir = settings.home / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
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
        broker_commit_interval=_FAUST_COMMIT_INTERVAL,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=min(3.0, settings.session_timeout / 3),
    )
