"""Topics recreated under a worker's saved state (a second ``make demo``, a reset).

The first worker run leaves a feature checkpoint and a model snapshot at offset 1,250.
The pipeline's topics are then deleted and created again (empty), as ``riverline demo``
does before each run. The next worker must not restore state whose offsets are past the
new topics' ends (it would skip every new event as already seen): it rebuilds the
features, starts fresh models, and predicts every new event.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import (
    delete_topics,
    ensure_topics,
    pipeline_topic_configs,
    shared_topic_configs,
)
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.store.outputs import OutputCollector

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"


def _run_once(settings: Settings, spec: PipelineSpec, limit: int, log: Path) -> int:
    catalog = SchemaCatalog.load(settings.schemas_dir)
    worker = WorkerProcess(settings, [PHISHING], log)
    worker.start()
    try:
        worker.wait_ready()

        async def run() -> int:
            collector = OutputCollector(settings, spec, catalog)
            await collector.start()
            try:
                report = await produce_dataset(settings, spec, catalog, limit=limit)
                deadline = time.monotonic() + 120
                while len(collector.predictions) < report.sent:
                    if time.monotonic() > deadline:
                        break
                    await collector.poll(500)
            finally:
                await collector.stop()
            return len(collector.predictions)

        return asyncio.run(run())
    finally:
        assert worker.stop() == 0, log.read_text()[-3000:]


def test_state_of_deleted_topics_is_not_restored(settings_factory, tmp_path: Path) -> None:
    settings = settings_factory(web_port=free_port())
    spec = load_spec(PHISHING)
    configs = pipeline_topic_configs(settings, spec)
    ensure_topics(settings.effective_bootstrap, shared_topic_configs(settings) + configs)
    assert _run_once(settings, spec, 1250, tmp_path / "first.log") == 1250

    delete_topics(settings.effective_bootstrap, [c.name for c in configs])
    ensure_topics(settings.effective_bootstrap, configs)
    predicted = _run_once(settings, spec, 300, tmp_path / "second.log")
    log = (tmp_path / "second.log").read_text()
    assert predicted == 300, log[-3000:]
    assert "past the end of" in log  # the model snapshot was recognised as stale
    assert "fresh models" in log
