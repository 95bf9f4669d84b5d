"""``riverline schemas check`` and ``riverline schemas push``: the catalog under schemas/."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.markup import escape

from streams.cli.commands import console, err_console, friendly, settings_of
from streams.errors import ConfigError

__all__ = ["schemas"]


@click.group()
def schemas() -> None:
    """The schema catalog under schemas/."""


@schemas.command("check")
@click.pass_context
@friendly
def schemas_check(ctx: click.Context) -> None:
    """Check compatibility of consecutive schema versions (exit 1 on a break)."""
    from streams.serialization.catalog import SchemaCatalog
    from streams.serialization.compat import check_catalog

    catalog = SchemaCatalog.load(settings_of(ctx).schemas_dir)
    problems = check_catalog(catalog)
    for subject in catalog.subjects():
        console.print(f"{subject}: {len([p for p in problems if p.subject == subject]) or 'ok'}")
    if problems:
        for p in problems:
            err_console.print(f"[red]incompatible[/] {p}")
        sys.exit(1)


@schemas.command("push")
@click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Pipeline spec whose topics get subjects; repeat for several. "
    "Default: every spec in RIVERLINE_PIPELINES_DIR.",
)
@click.pass_context
@friendly
def schemas_push(ctx: click.Context, pipelines: tuple[Path, ...]) -> None:
    """Register the catalog in RIVERLINE_SCHEMA_REGISTRY_URL as <topic>-value subjects.

    Each subject gets its catalog subject's compatibility mode first. Exit 1 if the
    registry refuses a version (the subject, the version and the registry's reasons are
    printed).
    """
    from streams.serialization.catalog import SchemaCatalog
    from streams.serialization.registry_client import SchemaRegistryClient
    from streams.serialization.registry_push import push_catalog, push_plan
    from streams.spec import load_spec

    settings = settings_of(ctx)
    client = SchemaRegistryClient.from_settings(settings)
    if client is None:
        raise ConfigError(
            "riverline schemas push needs a registry: set RIVERLINE_SCHEMA_REGISTRY_URL "
            "(and _USER/_PASSWORD or _TOKEN if it asks for them)"
        )
    paths = list(pipelines) or sorted(settings.pipelines_dir.glob("*.toml"))
    specs = [load_spec(path) for path in paths]
    catalog = SchemaCatalog.load(settings.schemas_dir)
    plan = push_plan(catalog, specs, settings.namespace)
    report = push_catalog(
        client, catalog, plan, say=lambda line: console.print(line, soft_wrap=True, markup=False)
    )
    console.print(
        f"{len(report.ids)} versions registered or already there under {len(plan)} subjects "
        f"at {client.url}"
    )
    if report.refused:
        for refusal in report.refused:
            err_console.print(
                f"[red]refused[/] {escape(str(refusal))}", highlight=False, soft_wrap=True
            )
        sys.exit(1)
