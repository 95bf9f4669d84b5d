"""``riverline demo``: broker up, worker, dataset in, predictions out, a report.

It resets the demo pipelines' topics first so the numbers are those of this run, and
stops whatever it started. For a pipeline whose model reads derived features, the report
also scores the same model on the raw fields alone, computed here over the same events in
the order the live model saw them, so the features' contribution is plain to see.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from streams.cli.workerproc import WorkerProcess
from streams.errors import RiverlineError
from streams.features.engine import FeatureSet
from streams.ingestion.producer import ProduceReport, dataset_events, produce_dataset
from streams.kafka.broker import LocalBroker
from streams.kafka.topics import (
    CHECKPOINTS,
    delete_topics,
    ensure_topics,
    pipeline_topic_configs,
    shared_topic_configs,
)
from streams.models.model import OnlineModel
from streams.observability.plots import write_report
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.registry import load_catalog
from streams.settings import Settings
from streams.spec import PipelineSpec, load_spec
from streams.state.checkpoint import checkpoint_key
from streams.store.outputs import OutputCollector, ReadPrediction, read_alerts, score_predictions

__all__ = ["DemoReport", "offline_scores", "raw_inputs", "run_demo", "run_pipeline"]


@dataclass
class DemoReport:
    """What one pipeline's run produced, measured from the outside."""

    pipeline: str
    events_in: int
    predictions_out: int
    dead_letters: int
    duplicates: int
    seconds: float
    latencies_ms: list[float]
    scores: dict[str, float]
    sample: ReadPrediction | None
    predictions: list[ReadPrediction] = field(default_factory=list, repr=False)
    dead_reasons: dict[str, int] = field(default_factory=dict)
    #: The same model's prequential scores on the raw fields alone (empty when the model
    #: reads no derived feature).
    raw_scores: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.predictions_out / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


def raw_inputs(spec: PipelineSpec) -> tuple[str, ...]:
    """The model inputs that are raw event fields, not derived features."""
    derived = set(FeatureSet.from_spec(spec.features).outputs)
    return tuple(name for name in spec.model.inputs if name not in derived)


def offline_scores(
    spec: PipelineSpec, events: Sequence[dict[str, Any]], *, raw_only: bool = False
) -> dict[str, float]:
    """Prequential scores of the spec's model over ``events`` in this order, without Kafka.

    ``events`` are what the producer sends (id, time, raw fields, label). Features are
    computed as the worker computes them (per ``key_field``, in event time; a non-finite
    value becomes None); with ``raw_only`` the model reads only :func:`raw_inputs`.
    """
    inputs = raw_inputs(spec) if raw_only else spec.model.inputs
    model = OnlineModel(replace(spec.model, inputs=inputs))
    derived: dict[str, np.ndarray] = {}
    if not raw_only:
        fs = FeatureSet.from_spec(spec.features)
        key = spec.key_field
        derived = fs.compute(
            fs.new_state(),
            [str(e[key]) if key else "" for e in events],
            np.array([e[spec.time_field] / 1000.0 for e in events], dtype=np.float64),
            {name: [e.get(name) for e in events] for name in fs.inputs},
        )
    target = spec.model.target
    for i, event in enumerate(events):
        x: dict[str, Any] = {}
        for name in inputs:
            if name in derived:
                v = float(derived[name][i])
                x[name] = v if math.isfinite(v) else None
            else:
                x[name] = event[name]
        model.learn(x, event.get(target), model.predict(x))
    return model.metric_values()


def _raw_scores(
    spec: PipelineSpec, run_id: str, preds: Sequence[ReadPrediction]
) -> dict[str, float]:
    """The raw-fields-alone baseline over the predicted events, in the live model's order."""
    if not spec.dataset or raw_inputs(spec) == spec.model.inputs:
        return {}
    # The producer's events again (same run id, so the same ids); times do not matter here.
    by_id = {e[spec.id_field]: e for e in dataset_events(spec, spec.dataset, run_id, 0)}
    events = [by_id[p.record["event_id"]] for p in preds if p.record["event_id"] in by_id]
    return offline_scores(spec, events, raw_only=True)


async def run_pipeline(
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    *,
    rate: float | None,
    limit: int | None = None,
    wait_s: float = 300.0,
    console: Console | None = None,
) -> DemoReport:
    """Produce the pipeline's dataset and collect every prediction, with live progress."""
    console = console or Console()
    collector = OutputCollector(settings, spec, catalog)
    await collector.start()
    sent_at: dict[str, int] = {}
    started = time.monotonic()

    def on_sent(event_id: str, ms: int) -> None:
        sent_at[event_id] = ms

    columns = (
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            bars = (
                progress.add_task(f"{spec.name}: produced", total=None),
                progress.add_task(f"{spec.name}: predicted", total=None),
            )
            producing = asyncio.ensure_future(
                produce_dataset(settings, spec, catalog, rate=rate, limit=limit, on_sent=on_sent)
            )
            sent = await _follow(spec, collector, producing, sent_at, progress, bars, wait_s)
        return _report(spec, collector, sent_at, time.monotonic() - started, sent)
    finally:
        await collector.stop()


async def _follow(
    spec: PipelineSpec,
    collector: OutputCollector,
    producing: asyncio.Future[ProduceReport],
    sent_at: dict[str, int],
    progress: Progress,
    bars: tuple[TaskID, TaskID],
    wait_s: float,
) -> ProduceReport:
    """Collect outputs, showing progress, until every event sent is predicted or dead."""
    produced, predicted = bars
    deadline = time.monotonic() + wait_s
    sent: ProduceReport | None = None
    while True:
        await collector.poll(200)
        progress.update(produced, completed=len(sent_at))
        progress.update(
            predicted,
            completed=len(collector.predictions),
            total=None if sent is None else sent.sent,
        )
        if producing.done() and sent is None:
            sent = producing.result()
            progress.update(produced, total=sent.sent, completed=sent.sent)
        accounted = len(collector.predictions) + len(collector.dead_letters)
        if sent is not None and accounted >= sent.sent:
            break
        if time.monotonic() > deadline:
            raise RiverlineError(
                f"{spec.name}: only {accounted} of {sent.sent if sent else len(sent_at)} "
                f"events were accounted for after {wait_s:.0f} s. Check the worker log."
            )
    progress.update(predicted, total=sent.sent, completed=len(collector.predictions))
    return sent


def _report(
    spec: PipelineSpec,
    collector: OutputCollector,
    sent_at: dict[str, int],
    seconds: float,
    sent: ProduceReport,
) -> DemoReport:
    """What the run produced: counts, latencies, scores, dead-letter reasons."""
    preds = list(collector.predictions.values())
    latencies = [
        float(p.received_ms - sent_at[p.record["event_id"]])
        for p in preds
        if p.record["event_id"] in sent_at
    ]
    reasons: dict[str, int] = {}
    for d in collector.dead_letters:
        reason = d.get("rl.error.class", "?")
        reasons[reason] = reasons.get(reason, 0) + 1
    # With one partition this is the order the live model predicted and learned in.
    preds.sort(key=lambda p: (p.partition, p.offset))
    return DemoReport(
        pipeline=spec.name,
        events_in=sent.sent or 0,
        predictions_out=len(preds),
        dead_letters=len(collector.dead_letters),
        duplicates=collector.duplicates,
        seconds=seconds,
        latencies_ms=latencies,
        scores=score_predictions(spec.model.task, [p.record for p in preds]),
        sample=preds[-1] if preds else None,
        dead_reasons=reasons,
        predictions=preds,
        raw_scores=_raw_scores(spec, sent.run_id, preds),
    )


async def _forget_previous_runs(settings: Settings, specs: Sequence[PipelineSpec]) -> None:
    """Drop what the worker kept of earlier runs on the topics the demo just recreated.

    The worker would otherwise resume the new, empty topics at the old runs' positions and
    skip this run's events: the feature checkpoints get a tombstone, and the consumer
    group is committed to offset 0 on every topic it reads (deleting a topic should drop
    the group's offsets, but a broker that has just started may still be loading them).
    """
    producer = AIOKafkaProducer(bootstrap_servers=settings.effective_bootstrap, acks="all")
    await producer.start()
    try:
        for spec in specs:
            for p in range(spec.partitions):
                key = checkpoint_key(spec.name, p).encode()
                await producer.send_and_wait(settings.topic(CHECKPOINTS), None, key=key)
    finally:
        await producer.stop()
    parts = [
        TopicPartition(topic, p)
        for spec in specs
        for topic in (
            spec.topics(settings.namespace).raw,
            spec.topics(settings.namespace).events,
            spec.topics(settings.namespace).features,
        )
        for p in range(spec.partitions)
    ]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap,
        group_id=settings.topic("riverline"),  # the worker's group (agents/app.py)
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.commit({tp: 0 for tp in parts})
    finally:
        await consumer.stop()


def print_report(console: Console, report: DemoReport) -> None:
    table = Table(title=f"Riverline demo: {report.pipeline}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    table.add_row("events in", f"{report.events_in:,}")
    table.add_row("predictions out", f"{report.predictions_out:,}")
    table.add_row("dead letters", f"{report.dead_letters:,}")
    table.add_row("duplicates seen", f"{report.duplicates:,}")
    table.add_row("throughput", f"{report.throughput:,.0f} events/s")
    table.add_row("end-to-end latency p50", f"{report.latency_ms(50):.1f} ms")
    table.add_row("end-to-end latency p99", f"{report.latency_ms(99):.1f} ms")
    with_features = " with features" if report.raw_scores else ""
    for name, value in report.scores.items():
        table.add_row(f"prequential {name}{with_features}", f"{value:.2%}")
    for name, value in report.raw_scores.items():
        table.add_row(f"prequential {name} on raw fields alone", f"{value:.2%}")
    console.print(table)
    if report.sample is not None:
        lineage = Table(title="lineage of one prediction", show_header=False)
        lineage.add_column("header", style="bold")
        lineage.add_column("value")
        for k, v in report.sample.headers.items():
            lineage.add_row(k, v)
        r: dict[str, Any] = report.sample.record
        said = f"{r['prediction']!r}  proba={r['proba']}  label={r['label']!r}"
        lineage.add_row("prediction", said)
        console.print(lineage)


def run_demo(
    settings: Settings,
    pipelines: list[Path],
    *,
    rate: float | None = 500.0,
    limit: int | None = None,
    console: Console | None = None,
) -> list[DemoReport]:
    """Run the demo end to end and print its report; stops what it started."""
    console = console or Console()
    specs = [load_spec(p) for p in pipelines]
    catalog = load_catalog(settings)
    broker = LocalBroker(settings)
    started_broker = False
    if settings.bootstrap:
        console.print(f"Using the Kafka cluster at {settings.bootstrap} (RIVERLINE_BOOTSTRAP).")
    elif not broker.status().reachable:
        console.print(
            "Starting a local Kafka broker (first run downloads it from Maven Central)..."
        )
        broker.up(log=console.print)
        started_broker = True
    else:
        console.print(f"Using the local Kafka broker at {broker.bootstrap}.")
    bootstrap = settings.effective_bootstrap
    console.print("Resetting the demo pipelines' topics: " + ", ".join(s.name for s in specs))
    delete_topics(bootstrap, [c.name for s in specs for c in pipeline_topic_configs(settings, s)])
    configs = shared_topic_configs(settings)
    for spec in specs:
        configs += pipeline_topic_configs(settings, spec)
    ensure_topics(bootstrap, configs)
    asyncio.run(_forget_previous_runs(settings, specs))

    log_path = settings.home / "logs" / f"worker-{time.strftime('%Y%m%d-%H%M%S')}.log"
    worker = WorkerProcess(settings, pipelines, log_path)
    console.print(f"Starting a worker (log: {log_path}) ...")
    reports: list[DemoReport] = []
    try:
        worker.start()
        worker.wait_ready()
        console.print(f"Worker ready; metrics at {worker.url}/metrics")
        for spec in specs:
            run = run_pipeline(settings, spec, catalog, rate=rate, limit=limit, console=console)
            reports.append(asyncio.run(run))
        for spec, report in zip(specs, reports, strict=True):
            print_report(console, report)
            folder = settings.home / "reports" / spec.name
            ordered = sorted(report.predictions, key=lambda p: (p.record["predict_ts"], p.offset))
            records = [p.record for p in ordered]
            alerts = asyncio.run(read_alerts(settings, catalog, spec.name))
            for path in write_report(spec, records, folder, alerts) if records else []:
                console.print(f"plot: {path}")
    finally:
        code = worker.stop()
        console.print(f"Worker stopped (exit code {code}).")
        if started_broker:
            broker.down(log=console.print)
    return reports
