"""The ``riverline`` command line."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from streams.errors import RiverlineError
from streams.settings import Settings

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)


def _friendly(fn: F) -> F:
    """Show Riverline's errors as one clear message and exit 1, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RiverlineError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


def _default_pipelines(settings: Settings) -> list[Path]:
    return [settings.pipelines_dir / "phishing.toml"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
@_friendly
def cli(ctx: click.Context) -> None:
    """Riverline: streaming MLOps on Kafka with River, Numba and lineage on every prediction."""
    settings = Settings.from_env()
    # Numba reads its cache location when it is first imported; point it under RIVERLINE_HOME.
    os.environ.setdefault("NUMBA_CACHE_DIR", str(settings.numba_cache_dir))
    ctx.obj = settings


@cli.group()
def kafka() -> None:
    """The local single-node Kafka broker (not used when RIVERLINE_BOOTSTRAP is set)."""


@kafka.command("fetch")
@click.pass_context
@_friendly
def kafka_fetch(ctx: click.Context) -> None:
    """Download the broker jars from Maven Central into the cache."""
    from streams.kafka_local import LocalBroker

    path = LocalBroker(_settings(ctx)).fetch(log=console.print)
    console.print(f"Kafka jars in {path}")


@kafka.command("up")
@click.option("--secure", is_flag=True, help="SASL/SCRAM with ACLs (not available yet).")
@click.pass_context
@_friendly
def kafka_up(ctx: click.Context, secure: bool) -> None:
    """Start the local broker (download, format, start, wait until it answers)."""
    from streams.kafka_local import LocalBroker

    if secure:
        raise RiverlineError("--secure is not implemented yet (issue 9); run without it.")
    status = LocalBroker(_settings(ctx)).up(log=console.print)
    console.print(f"Kafka is up: {status.detail}")


@kafka.command("down")
@click.pass_context
@_friendly
def kafka_down(ctx: click.Context) -> None:
    """Stop the broker this machine's Riverline started (by pid)."""
    from streams.kafka_local import LocalBroker

    stopped = LocalBroker(_settings(ctx)).down(log=console.print)
    console.print("Kafka stopped." if stopped else "No Riverline-started broker was running.")


@kafka.command("status")
@click.pass_context
@_friendly
def kafka_status(ctx: click.Context) -> None:
    """Where the broker is and whether it answers (exit 1 if it does not)."""
    from streams.kafka_local import LocalBroker

    status = LocalBroker(_settings(ctx)).status()
    state = "[green]reachable[/]" if status.reachable else "[red]not reachable[/]"
    console.print(f"{status.bootstrap}: {state} — {status.detail}")
    if not status.reachable:
        sys.exit(1)


@cli.command()
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Pipeline spec (TOML); repeat for several. Default: pipelines/phishing.toml.",
)
@click.pass_context
@_friendly
def worker(ctx: click.Context, pipelines: tuple[Path, ...]) -> None:
    """Run the Faust worker with every agent of the pipelines."""
    from agents.worker import run_worker
    from streams.spec import load_spec

    settings = _settings(ctx)
    specs = [load_spec(p) for p in (pipelines or _default_pipelines(settings))]
    run_worker(settings, specs)


@cli.command()
@click.option("--pipeline", type=click.Path(path_type=Path), required=True)
@click.option("--dataset", default=None, help="Dataset to replay (default: the spec's).")
@click.option("--rate", type=float, default=None, help="Events per second (default: max).")
@click.option("--limit", type=int, default=None, help="Send at most N events.")
@click.option("--format", "wire_format", type=click.Choice(["json", "avro"]), default="json")
@click.pass_context
@_friendly
def produce(
    ctx: click.Context,
    pipeline: Path,
    dataset: str | None,
    rate: float | None,
    limit: int | None,
    wire_format: str,
) -> None:
    """Replay a dataset as events on the pipeline's raw topic."""
    from streams.catalog import SchemaCatalog
    from streams.producer import produce_dataset
    from streams.spec import load_spec

    settings = _settings(ctx)
    spec = load_spec(pipeline)
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
    type=click.Path(path_type=Path),
    help="Pipeline spec(s) to run. Default: the bundled demo pipelines.",
)
@click.option("--rate", type=float, default=500.0, show_default=True, help="Events per second.")
@click.pass_context
@_friendly
def demo(ctx: click.Context, pipelines: tuple[Path, ...], rate: float) -> None:
    """Broker up, worker, produce with progress, wait for every prediction, print a report."""
    from streams.demo import run_demo

    settings = _settings(ctx)
    run_demo(settings, list(pipelines or _default_pipelines(settings)), rate=rate, console=console)


@cli.group()
def schemas() -> None:
    """The schema catalog under schemas/."""


@schemas.command("check")
@click.pass_context
@_friendly
def schemas_check(ctx: click.Context) -> None:
    """Check compatibility of consecutive schema versions (exit 1 on a break)."""
    from streams.catalog import SchemaCatalog
    from streams.compat import check_catalog

    catalog = SchemaCatalog.load(_settings(ctx).schemas_dir)
    problems = check_catalog(catalog)
    for subject in catalog.subjects():
        console.print(f"{subject}: {len([p for p in problems if p.subject == subject]) or 'ok'}")
    if problems:
        for p in problems:
            err_console.print(f"[red]incompatible[/] {p}")
        sys.exit(1)


def main() -> None:
    cli(prog_name="riverline")
