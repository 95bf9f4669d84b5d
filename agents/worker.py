"""Run a Faust worker with every agent of the given pipelines."""

from __future__ import annotations

import gc
import logging
import logging.config
from collections.abc import Sequence

import faust

from agents.app import create_app
from agents.sink import start_learner_process, start_sink_process
from streams.errors import ConfigError
from streams.features.engine import warm_up
from streams.kafka.auth import client_kwargs
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.observability.logs import logging_config
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.registry import load_catalog
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = ["run_worker"]

log = logging.getLogger("riverline.worker")


def run_worker(settings: Settings, specs: Sequence[PipelineSpec], role: str = "all") -> None:
    """Check the signing key, prepare topics, compile kernels, then run until SIGTERM.

    ``role``: ``serve`` runs the pipelines (a decoupled one's serving agent), ``learn``
    the learners of decoupled pipelines, ``all`` serves here and starts a learner process
    beside it when a pipeline is decoupled (a hot standby when another learner is active).

    Raises
    ------
    ConfigError
        Before anything else, if the signing key is the built-in one outside development
        mode (see :meth:`streams.settings.Settings.signing_key_bytes`).
    """
    settings.signing_key_bytes()
    # Configured now for the lines before Faust starts; Faust applies the same again.
    logging.config.dictConfig(logging_config(settings))
    log.info(
        "worker starting: %d pipeline(s), web http://%s:%d/status",
        len(specs),
        settings.web_host,
        settings.web_port,
    )
    if role == "learn" and not any(spec.decoupled for spec in specs):
        raise ConfigError(
            'a learner runs decoupled pipelines only ([pipeline] mode = "decoupled"); '
            "none of these is."
        )
    catalog = _prepare(settings, specs)
    worker = create_app(settings, list(specs), catalog, "learn" if role == "learn" else "serve")
    # Everything loaded so far (modules, kernels, the app) lives as long as the worker:
    # out of the collector's sight, full collections (pauses events wait behind) are short.
    gc.freeze()
    paths = [s.path for s in specs if s.path is not None]
    if role != "learn":
        # The offline sink in a process of its own (agents.sink), unless it runs in the app.
        start_sink_process(settings, paths)
    if role == "all" and any(spec.decoupled for spec in specs):
        start_learner_process(settings, paths)
    for spec in specs:
        if spec.name not in worker.pipelines:
            continue
        log.info(
            "pipeline %s: spec %s, features %s, model %s",
            spec.name,
            spec.label,
            worker.pipelines[spec.name].stage.featurization.feature_set.label,
            worker.pipelines[spec.name].stage.predictor.model.label,
        )
    faust.Worker(
        worker.app,
        loglevel=settings.log_level.upper(),
        logging_config=logging_config(settings),
        quiet=True,
    ).execute_from_commandline()


def _prepare(settings: Settings, specs: Sequence[PipelineSpec]) -> SchemaCatalog:
    """The schemas (each spec's subject checked now, not on the first event), the topics,
    and every kernel compiled (cached under ``RIVERLINE_HOME``)."""
    catalog = load_catalog(settings)
    configs = shared_topic_configs(settings)
    for spec in specs:
        catalog.latest(spec.subject)
        configs += pipeline_topic_configs(settings, spec)
    created = ensure_topics(settings.effective_bootstrap, configs, client_kwargs(settings))
    if created:
        log.info("created topics: %s", ", ".join(created))
    warm_up()
    return catalog
