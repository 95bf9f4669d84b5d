"""The ``riverline`` command line.

The built-in commands are here, with the ``kafka`` group of
:mod:`~streams.cli.kafka_commands`, the ``models`` group of
:mod:`~streams.cli.model_commands` and the ``schemas`` group of
:mod:`~streams.cli.schema_commands`; :func:`main` adds the plugin commands that other
packages register (:mod:`streams.cli.plugins`): ``worker`` and ``sink`` from
:mod:`agents`, which run Faust, and ``bench`` from :mod:`benchmarks`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.cli.check_commands import check
from streams.cli.commands import (
    PIPELINE_FILE,
    console,
    default_pipelines,
    err_console,
    friendly,
    settings_of,
)
from streams.cli.init_commands import init
from streams.cli.kafka_commands import kafka
from streams.cli.model_commands import models
from streams.cli.plugins import COMMANDS_GROUP, add_plugins, registered_plugins
from streams.cli.produce_commands import produce_from_file
from streams.cli.schema_commands import schemas
from streams.cli.tail_commands import tail
from streams.errors import RiverlineError
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.serialization.catalog import SchemaCatalog
    from streams.spec import PipelineSpec
    from streams.store.offline import OfflineStore
    from streams.store.provenance import Provenance

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="riverline", prog_name="riverline")
@click.option(
    "--schemas-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Your schema folder (<subject>/v<N>.avsc; RIVERLINE_SCHEMAS_DIR). "
    "Default: the example schemas Riverline ships.",
)
@click.option(
    "--pipelines-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Your pipeline folder, where --pipeline NAME looks (RIVERLINE_PIPELINES_DIR). "
    "Default: the example pipelines Riverline ships.",
)
@click.pass_context
@friendly
def cli(ctx: click.Context, schemas_dir: Path | None, pipelines_dir: Path | None) -> None:
    """Riverline: streaming MLOps on Kafka with River, Numba and lineage on every prediction."""
    # Absolute, because workers and sinks run as child processes with these settings.
    folders = {"schemas_dir": schemas_dir, "pipelines_dir": pipelines_dir}
    settings = Settings.from_env(
        **{name: folder.resolve() for name, folder in folders.items() if folder is not None}
    )
    # Numba reads its cache location when it is first imported; point it under RIVERLINE_HOME.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(settings.numba_cache_dir))
    ctx.obj = settings


@cli.command()
@click.option("--pipeline", type=PIPELINE_FILE, required=True)
@click.option("--dataset", default=None, help="Dataset to replay (default: the spec's).")
@click.option("--rate", type=float, default=None, help="Events per second (default: max).")
@click.option("--limit", type=int, default=None, help="Send at most N events.")
@click.option("--format", "wire_format", type=click.Choice(["json", "avro"]), default="json")
@click.option("--from", "source", default=None, help="Send your own file (- for stdin) instead.")
@click.option("--input-format", type=click.Choice(["jsonl", "csv", "parquet"]), default=None)
@click.pass_context
@friendly
def produce(
    ctx: click.Context,
    pipeline: Path,
    dataset: str | None,
    rate: float | None,
    limit: int | None,
    wire_format: str,
    source: str | None,
    input_format: str | None,
) -> None:
    """Replay a dataset, or send your JSON lines, CSV or Parquet (--from), as events on the
    pipeline's raw topic."""
    from streams.spec import load_spec

    settings = settings_of(ctx)
    # The spec first: a wrong one is reported before the pipeline code is imported.
    spec = load_spec(pipeline, settings.schemas_dir)
    if source is not None:
        if wire_format != "json" or dataset:
            raise RiverlineError("--from sends JSON events: drop --dataset and --format.")
        produce_from_file(settings, spec, source, input_format=input_format, rate=rate, limit=limit)
        return
    from streams.ingestion.producer import produce_dataset
    from streams.serialization.catalog import SchemaCatalog

    catalog = SchemaCatalog.load(settings.schemas_dir)
    with console.status(f"producing to {spec.topics(settings.namespace).raw} ..."):
        report = asyncio.run(
            produce_dataset(
                settings,
                spec,
                catalog,
                dataset=dataset,
                rate=rate,
                limit=limit,
                wire_format=wire_format,
            )
        )
    console.print(
        f"sent {report.sent:,} events (run {report.run_id}) in {report.seconds:.1f} s "
        f"to {spec.topics(settings.namespace).raw}"
    )


@cli.command()
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=PIPELINE_FILE,
    help="Pipeline spec(s) to run (a file, or a name in the pipelines folder). Default: "
    "the bundled demo pipelines.",
)
@click.option("--rate", type=float, default=500.0, show_default=True, help="Events per second.")
@click.option("--limit", type=int, default=None, help="Send at most N events per pipeline.")
@click.pass_context
@friendly
def demo(ctx: click.Context, pipelines: tuple[Path, ...], rate: float, limit: int | None) -> None:
    """Broker up, worker, produce with progress, wait for every prediction, print a report.

    The default pipelines are phishing (1,250 events) and transactions (20,000 events,
    about 40 s at the default rate).
    """
    from streams.spec import load_spec

    settings = settings_of(ctx)
    paths = list(pipelines or default_pipelines(settings))
    # Every spec is checked before the demo's code is imported and a broker is started.
    for path in paths:
        load_spec(path)
    from streams.cli.demo import run_demo

    run_demo(
        settings,
        paths,
        rate=rate,
        limit=limit,
        console=console,
    )


@cli.command()
@click.option("--pipeline", type=PIPELINE_FILE, required=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder for the PNG files (default: RIVERLINE_HOME/reports/<pipeline>).",
)
@click.pass_context
@friendly
def report(ctx: click.Context, pipeline: Path, out: Path | None) -> None:
    """Plot the prequential metric per model version and the latency distribution (PNG)."""
    from streams.spec import load_spec

    settings = settings_of(ctx)
    spec = load_spec(pipeline, settings.schemas_dir)
    from streams.serialization.registry import load_catalog
    from streams.store.outputs import read_alerts, read_all_predictions

    catalog = load_catalog(settings)
    with console.status(f"reading {spec.topics(settings.namespace).predictions} ..."):
        collected = asyncio.run(read_all_predictions(settings, spec, catalog))
    preds = sorted(collected.predictions.values(), key=lambda p: (p.record["predict_ts"], p.offset))
    if not preds:
        raise RiverlineError(
            f"no predictions on {spec.topics(settings.namespace).predictions} yet: "
            "run a worker and produce events first."
        )
    folder = out or settings.home / "reports" / spec.name
    alerts = asyncio.run(read_alerts(settings, catalog, spec.name))
    # Plotting (matplotlib) is imported once there is something to plot.
    from streams.observability.plots import write_report

    for path in write_report(spec, [p.record for p in preds], folder, alerts):
        console.print(f"wrote {path}")


@cli.command()
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly
def lineage(ctx: click.Context, event_id: str, as_json: bool) -> None:
    """Where a prediction came from: raw offset, schema, features, model, label."""
    import json

    from rich.table import Table

    from streams.models.registry import ModelRegistry
    from streams.store.offline import OfflineStore
    from streams.store.provenance import trace

    settings = settings_of(ctx)
    store = OfflineStore.from_settings(settings)
    registries: dict[str, ModelRegistry] = {}
    registry_root = settings.home / "registry"
    if registry_root.is_dir():
        key = settings.signing_key_bytes()
        for folder in registry_root.iterdir():
            registries[folder.name] = ModelRegistry(registry_root, folder.name, key)
    found = trace(event_id, store, registries)
    if found.model and found.manifest is None:
        # A version another machine made (a decoupled pipeline's learner): from Kafka.
        found = _trace_with_published(settings, event_id, store, found.pipeline) or found
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2, default=str))
        return
    table = Table(title=f"lineage of {event_id}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = [
        ("pipeline", found.pipeline),
        ("raw topic:partition:offset", found.raw_source),
        ("writer schema", found.writer_schema),
        ("event time / ingest time (ms)", f"{found.event_ts} / {found.ingest_ts}"),
        ("feature set", found.feature_set),
        ("feature values", ", ".join(f"{k}={v}" for k, v in found.feature_values.items())),
        ("model", found.model),
        ("prediction", f"{found.prediction!r} {found.proba}"),
        ("label", f"{found.label!r} ({found.label_source or 'not yet'})"),
    ]
    if found.manifest:
        m = found.manifest
        rows.append(
            (
                "model manifest",
                f"parent {m['parent']}, offsets {m['offsets']}, "
                f"samples {m['samples_seen']}, metrics {m['metrics']}",
            )
        )
    elif found.manifest_error:
        rows.append(("model manifest", found.manifest_error))
    for what, value in rows:
        table.add_row(what, str(value))
    console.print(table)


@cli.command()
@click.option("--pipeline", type=PIPELINE_FILE, required=True)
@click.option("--verify", is_flag=True, help="Compare with the live run; exit 1 on a difference.")
@click.pass_context
@friendly
def replay(ctx: click.Context, pipeline: Path, verify: bool) -> None:
    """Rebuild features and model from the raw topic (offset 0) and compare with live."""
    from streams.spec import load_spec

    settings = settings_of(ctx)
    spec = load_spec(pipeline, settings.schemas_dir)
    from streams.serialization.registry import load_catalog
    from streams.store.replay import replay as run_replay

    catalog = load_catalog(settings)

    def progress(stage: str, n: int) -> None:
        click.echo(f"{stage}: {n:,}", err=True)

    if spec.decoupled:
        _replay_learning(settings, spec, catalog, verify, progress)
        return
    report = asyncio.run(run_replay(settings, spec, catalog, progress=progress))
    click.echo(
        f"replayed {report.raw_read:,} raw events of {spec.label}: {report.predictions:,} "
        f"predictions, {report.dead_letters:,} dead letters; final model {report.model} "
        f"sha256 {report.model_sha256[:16]}"
    )
    if not verify:
        return
    click.echo(f"live: {report.live_predictions:,} predictions; {report.compared:,} identical")
    if report.difference is not None:
        click.echo(f"first difference: {report.difference}")
        sys.exit(1)
    if report.live_sha256 is not None and report.live_sha256 != report.model_sha256:
        click.echo(
            f"first difference: final model sha256 live={report.live_sha256} "
            f"replayed={report.model_sha256}"
        )
        sys.exit(1)
    click.echo(report.hash_note)
    click.echo("identical")


def _trace_with_published(
    settings: Settings, event_id: str, store: OfflineStore, pipeline: str
) -> Provenance | None:
    """The lineage again, once the pipeline's published versions are in the local
    registry; None if they cannot be read (the lineage without a manifest stands)."""
    from streams.state.feed import sync_versions
    from streams.store.provenance import trace

    try:
        feed = asyncio.run(sync_versions(settings, pipeline, within=30.0))
    except (RiverlineError, OSError) as exc:
        console.print(f"[yellow]model manifests on Kafka not read: {exc}[/yellow]")
        return None
    return trace(event_id, store, {pipeline: feed.registry})


def _replay_learning(
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    verify: bool,
    progress: Callable[[str, int], None],
) -> None:
    """``replay`` of a decoupled pipeline: the learning log, against the learner."""
    from streams.store.relearn import replay_learning

    report = asyncio.run(replay_learning(settings, spec, catalog, progress=progress))
    click.echo(
        f"relearned {report.records:,} records of {spec.topics(settings.namespace).learn} "
        f"(offsets 0 to {report.position:,}): {report.learned:,} learned, "
        f"{report.dead_letters:,} dead letters"
    )
    for m in report.models:
        verdict = "identical" if m.identical else "DIFFERENT"
        click.echo(
            f"{m.published}: sha256 {m.sha256_replayed[:16]} ({verdict}; published "
            f"{m.sha256_published[:16]}), samples {m.samples_replayed:,}, "
            f"metrics {m.metrics_replayed}"
        )
    click.echo(
        f"predictions: {report.reproduced:,} of {report.predictions:,} reproduced from the "
        f"version each names ({report.pruned:,} name versions pruned since)"
    )
    if not verify:
        return
    if report.difference is not None:
        click.echo(f"first difference: {report.difference}")
    if not report.identical:
        sys.exit(1)
    click.echo("identical")


@cli.command()
@click.option("--pipeline", type=PIPELINE_FILE, required=True)
@click.option("--from-store", is_flag=True, required=True, help="Train on the offline store.")
@click.pass_context
@friendly
def train(ctx: click.Context, pipeline: Path, from_store: bool) -> None:
    """Warm-start a candidate model on stored features and labels; register it."""
    import json

    from streams.spec import load_spec

    settings = settings_of(ctx)
    spec = load_spec(pipeline, settings.schemas_dir)
    from streams.models.registry import ModelRegistry
    from streams.store.offline import OfflineStore
    from streams.store.training import train_candidate

    key = settings.signing_key_bytes()
    registry = ModelRegistry(settings.registry_dir, spec.name, key)
    warm_from = None
    if spec.decoupled:
        from streams.state.feed import sync_versions

        # Warm-start from the learner's latest version; the candidate is numbered apart.
        warm_from = asyncio.run(sync_versions(settings, spec.name)).registry
        registry = ModelRegistry(settings.home / "candidates", spec.name, key)
    manifest = train_candidate(
        OfflineStore.from_settings(settings), registry, spec, warm_from=warm_from
    )
    where = f" in {registry.root}" if warm_from is not None else ""
    click.echo(
        f"registered {manifest.label}{where} (candidate, parent {manifest.parent}): "
        f"{manifest.samples_seen:,} samples, metrics {manifest.metrics}"
    )
    click.echo(json.dumps(manifest.extra["data_range"], sort_keys=True))


cli.add_command(kafka)
cli.add_command(models)
for own_data_command in (init, check, tail):
    cli.add_command(own_data_command)
cli.add_command(schemas)


def main() -> None:
    """``riverline``: the built-in commands and every plugin command installed."""
    found = registered_plugins()
    if not found:
        err_console.print(
            f"[yellow]warning:[/] no plugin commands are registered (entry-point group "
            f"{COMMANDS_GROUP}), so worker, sink and bench are missing: the installed "
            "metadata predates them. Reinstall Riverline (`make install`, or "
            "`pip install -e .`).",
            highlight=False,
        )
    for problem in add_plugins(cli, found):
        err_console.print(f"[yellow]warning:[/] {problem}", highlight=False)
    cli(prog_name="riverline")
