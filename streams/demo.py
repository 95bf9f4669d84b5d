"""``riverline demo``: broker up, worker, dataset in, predictions out, a report.

It resets the demo pipelines' topics first so the numbers are those of this run, and
stops whatever it started.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams.catalog import SchemaCatalog
from streams.errors import RiverlineError
from streams.kafka_local import LocalBroker
from streams.outputs import OutputCollector, ReadPrediction, score_predictions
from streams.producer import produce_dataset
from streams.settings import Settings
from streams.spec import PipelineSpec, load_spec
from streams.topics import (
    delete_topics,
    ensure_topics,
    pipeline_topic_configs,
    shared_topic_configs,
)
from streams.workerproc import WorkerProcess

__all__ = ["DemoReport", "run_demo", "run_pipeline"]


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

    @property
    def throughput(self) -> float:
        return self.predictions_out / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


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
            produced = progress.add_task(f"{spec.name}: produced", total=None)
            predicted = progress.add_task(f"{spec.name}: predicted", total=None)
            producing = asyncio.ensure_future(
                produce_dataset(settings, spec, catalog, rate=rate, limit=limit, on_sent=on_sent)
            )
            deadline = time.monotonic() + wait_s
            report_sent: int | None = None
            while True:
                await collector.poll(200)
                progress.update(produced, completed=len(sent_at))
                progress.update(
                    predicted,
                    completed=len(collector.predictions),
                    total=report_sent,
                )
                if producing.done() and report_sent is None:
                    report_sent = producing.result().sent
                    progress.update(produced, total=report_sent, completed=report_sent)
                accounted = len(collector.predictions) + len(collector.dead_letters)
                if report_sent is not None and accounted >= report_sent:
                    break
                if time.monotonic() > deadline:
                    raise RiverlineError(
                        f"{spec.name}: only {accounted} of {report_sent or len(sent_at)} events "
                        f"were accounted for after {wait_s:.0f} s. Check the worker log."
                    )
            progress.update(predicted, total=report_sent, completed=len(collector.predictions))
        seconds = time.monotonic() - started
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
        preds.sort(key=lambda p: (p.partition, p.offset))
        return DemoReport(
            pipeline=spec.name,
            events_in=report_sent or 0,
            predictions_out=len(preds),
            dead_letters=len(collector.dead_letters),
            duplicates=collector.duplicates,
            seconds=seconds,
            latencies_ms=latencies,
            scores=score_predictions(spec.model.task, [p.record for p in preds]),
            sample=preds[-1] if preds else None,
            dead_reasons=reasons,
            predictions=preds,
        )
    finally:
        await collector.stop()


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
    for name, value in report.scores.items():
        table.add_row(f"prequential {name}", f"{value:.2%}")
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
    console: Console | None = None,
) -> list[DemoReport]:
    """Run the demo end to end and print its report; stops what it started."""
    console = console or Console()
    specs = [load_spec(p) for p in pipelines]
    catalog = SchemaCatalog.load(settings.schemas_dir)
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

    log_path = settings.home / "logs" / f"worker-{time.strftime('%Y%m%d-%H%M%S')}.log"
    worker = WorkerProcess(settings, pipelines, log_path)
    console.print(f"Starting a worker (log: {log_path}) ...")
    reports: list[DemoReport] = []
    try:
        worker.start()
        worker.wait_ready()
        console.print(f"Worker ready; metrics at {worker.url}/metrics")
        for spec in specs:
            run = run_pipeline(settings, spec, catalog, rate=rate, console=console)
            reports.append(asyncio.run(run))
        for report in reports:
            print_report(console, report)
    finally:
        code = worker.stop()
        console.print(f"Worker stopped (exit code {code}).")
        if started_broker:
            broker.down(log=console.print)
    return reports
