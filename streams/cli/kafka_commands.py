"""``riverline kafka``: the local single-node broker (fetch, up, down, status) and ACLs."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from streams.cli.commands import PIPELINE_FILE, console, err_console, friendly, settings_of

__all__ = ["kafka"]


@click.group()
def kafka() -> None:
    """The local single-node Kafka broker (not used when RIVERLINE_BOOTSTRAP is set)."""


@kafka.command("fetch")
@click.pass_context
@friendly
def kafka_fetch(ctx: click.Context) -> None:
    """Download the broker jars from Maven Central into the cache."""
    from streams.kafka.broker import LocalBroker

    path = LocalBroker(settings_of(ctx)).fetch(log=console.print)
    console.print(f"Kafka jars in {path}")


@kafka.command("up")
@click.option(
    "--secure",
    is_flag=True,
    help="SASL/SCRAM-SHA-256 with ACLs for the principals admin, producer, consumer and "
    "riverline (see docs/security.md).",
)
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=PIPELINE_FILE,
    help="With --secure: grant the ACLs of this pipeline spec; repeat for several. "
    "Default: every spec in the pipelines dir.",
)
@click.pass_context
@friendly
def kafka_up(ctx: click.Context, secure: bool, pipelines: tuple[Path, ...]) -> None:
    """Start the local broker (download, format, start, wait until it answers)."""
    from streams.kafka.broker import LocalBroker
    from streams.spec import load_spec

    settings = settings_of(ctx)
    # Without --secure a data dir formatted secure stays secure (LocalBroker decides).
    broker = LocalBroker(settings, secure=True if secure else None)
    status = broker.up(log=console.print)
    console.print(f"Kafka is up: {status.detail}")
    if broker.secure and not settings.bootstrap:
        paths = list(pipelines) or sorted(settings.pipelines_dir.glob("*.toml"))
        names = [load_spec(path).name for path in paths]
        broker.grant_pipelines(names)
        console.print(
            f"ACLs granted for pipeline(s) {', '.join(names) or '(none)'}: producer writes "
            f"P.raw and P.labels, consumer reads P.predictions (groups consumer-*), "
            f"riverline runs the service. Passwords: RIVERLINE_KAFKA_<PRINCIPAL>_PASSWORD "
            f"where set, else {broker.credentials_path} (mode 0600). For the worker: "
            f"RIVERLINE_KAFKA_SECURITY=sasl_scram RIVERLINE_KAFKA_USERNAME=riverline "
            f"RIVERLINE_KAFKA_PASSWORD=<riverline's password>."
        )
    elif secure:
        console.print(
            "RIVERLINE_BOOTSTRAP is set: Riverline manages no broker, so --secure changed "
            "nothing; that cluster's own security applies."
        )


@kafka.command("down")
@click.pass_context
@friendly
def kafka_down(ctx: click.Context) -> None:
    """Stop the broker this machine's Riverline started (by pid)."""
    from streams.kafka.broker import LocalBroker

    stopped = LocalBroker(settings_of(ctx)).down(log=console.print)
    console.print("Kafka stopped." if stopped else "No Riverline-started broker was running.")


@kafka.command("status")
@click.pass_context
@friendly
def kafka_status(ctx: click.Context) -> None:
    """Where the broker is and whether it answers (exit 1 if it does not)."""
    from streams.kafka.broker import LocalBroker

    status = LocalBroker(settings_of(ctx)).status()
    if not status.reachable:
        err_console.print(
            f"[bold red]error:[/] {status.bootstrap}: not reachable — {escape(status.detail)}",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    console.print(f"{status.bootstrap}: [green]reachable[/] — {status.detail}")


@kafka.command("acls")
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=PIPELINE_FILE,
    help="Grant the ACLs of this pipeline spec; repeat for several. "
    "Default: every spec in the pipelines dir.",
)
@click.pass_context
@friendly
def kafka_acls(ctx: click.Context, pipelines: tuple[Path, ...]) -> None:
    """Grant the service's and the pipelines' ACLs on the cluster Riverline talks to.

    Logs in as RIVERLINE_KAFKA_USERNAME, which must be a super user (admin). For a
    secured cluster of your own, or the secure docker-compose broker.
    """
    from streams.kafka.auth import client_kwargs, grant_pipeline_acls
    from streams.spec import load_spec

    settings = settings_of(ctx)
    paths = list(pipelines) or sorted(settings.pipelines_dir.glob("*.toml"))
    names = [load_spec(path).name for path in paths]
    bootstrap = settings.effective_bootstrap
    rules = grant_pipeline_acls(
        bootstrap, client_kwargs(settings), names, namespace=settings.namespace
    )
    console.print(
        f"{len(rules)} ACLs granted at {bootstrap} for pipeline(s) "
        f"{', '.join(names) or '(none)'} and the riverline service."
    )
