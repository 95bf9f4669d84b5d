"""The transactions pipeline end to end on the real broker: per-card features pay off live.

At the demo's size (``riverline demo`` sends the dataset's 20,000 events): the live
scores equal the offline computation of the same model and features over the same events
(``streams.cli.demo.offline_scores``), they beat River's own ``progressive_val_score`` of
the same model on the raw fields alone (what the demo prints beside them: test_demo.py
checks that), and docs/concepts.md quotes both.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from river_offline import logistic_regression, progressive_scores, quoted

from streams.cli.demo import offline_scores, raw_inputs
from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import ProduceReport, dataset_events, produce_dataset
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.store.outputs import OutputCollector, ReadPrediction, score_predictions

pytestmark = pytest.mark.integration

TRANSACTIONS = REPO_ROOT / "pipelines" / "transactions.toml"
#: The demo's size: every event of the dataset, as ``riverline demo`` sends it.
EVENTS = 20_000


@dataclass
class Run:
    spec: PipelineSpec
    report: ProduceReport
    predictions: list[ReadPrediction]  # in the order the live model saw them
    dead_letters: int
    duplicates: int


async def _run(settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog) -> Run:
    collector = OutputCollector(settings, spec, catalog)
    await collector.start()
    try:
        report = await produce_dataset(settings, spec, catalog, limit=EVENTS)
        deadline = time.monotonic() + 240
        while len(collector.predictions) + len(collector.dead_letters) < report.sent:
            assert time.monotonic() < deadline, (
                f"{len(collector.predictions)} predictions after 240 s for {report.sent} events"
            )
            await collector.poll(500)
        await collector.poll(1000)  # anything extra (duplicates) still in flight
    finally:
        await collector.stop()
    preds = sorted(collector.predictions.values(), key=lambda p: (p.partition, p.offset))
    return Run(spec, report, preds, len(collector.dead_letters), collector.duplicates)


@pytest.fixture(scope="module")
def transactions_run(settings_factory, tmp_path_factory) -> Run:
    settings = settings_factory(web_port=free_port())
    spec = load_spec(TRANSACTIONS)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    log = Path(tmp_path_factory.mktemp("worker")) / "worker.log"
    worker = WorkerProcess(settings, [TRANSACTIONS], log)
    worker.start()
    try:
        worker.wait_ready()
        return asyncio.run(_run(settings, spec, catalog))
    finally:
        assert worker.stop() == 0, log.read_text()[-3000:]


def _events_in_live_order(run: Run) -> list[dict]:
    """The produced events, in prediction order, with the event times the worker saw."""
    spec = run.spec
    by_id = {
        e[spec.id_field]: e
        for e in dataset_events(spec, spec.dataset, run.report.run_id, 0)
        if int(e[spec.id_field].rsplit("-", 1)[1]) < EVENTS
    }
    events = []
    for p in run.predictions:
        event = dict(by_id[p.record["event_id"]])
        event[spec.time_field] = p.record["event_ts"]
        events.append(event)
    return events


def test_every_event_is_predicted_once(transactions_run: Run) -> None:
    assert transactions_run.report.sent == EVENTS
    assert len(transactions_run.predictions) == EVENTS
    assert transactions_run.dead_letters == 0
    assert transactions_run.duplicates == 0
    ids = [p.record["event_id"] for p in transactions_run.predictions]
    assert ids == sorted(ids)  # one partition: the dataset's order
    versions = []
    for p in transactions_run.predictions:
        assert p.headers["rl.features"].startswith("card_features@")
        name, _, version = p.headers["rl.model"].partition("@")
        assert name == "transactions-lr"
        versions.append(int(version))
    # A checkpoint every RIVERLINE_CHECKPOINT_EVERY events saves the next version.
    assert versions[0] == 1
    assert versions == sorted(versions)


def _raw_fields_in_river(run: Run) -> dict[str, float]:
    """River alone on the raw fields (``amount``, ``card_limit``), in the live order."""
    spec = run.spec
    fields = raw_inputs(spec)
    events = _events_in_live_order(run)

    def rows() -> Iterator[tuple[dict[str, Any], Any]]:
        return (({k: e[k] for k in fields}, e[spec.model.target]) for e in events)

    return progressive_scores(rows, logistic_regression)


def test_live_scores_equal_the_offline_computation_and_features_pay_off(
    transactions_run: Run,
) -> None:
    run = transactions_run
    live = score_predictions("binary", [p.record for p in run.predictions])
    offline = offline_scores(run.spec, _events_in_live_order(run))
    raw_only = _raw_fields_in_river(run)
    print(f"\ntransactions live {live}; River on the raw fields alone {raw_only}")
    assert live == pytest.approx(offline, abs=1e-12)
    assert live["rocauc"] - raw_only["rocauc"] >= 0.10
    docs = quoted(
        r"\*\*([\d.]+%) with the card\s+features, ([\d.]+%) without\*\* \(([\d,]+)",
        "docs/concepts.md",
    )
    assert docs == (f"{live['rocauc']:.1%}", f"{raw_only['rocauc']:.1%}", f"{EVENTS:,}")
