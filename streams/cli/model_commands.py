"""``riverline models``: the running worker's models through its admin API (audited)."""

from __future__ import annotations

from typing import Any

import click

from streams.cli.commands import console, friendly, settings_of
from streams.errors import RiverlineError

__all__ = ["models"]


@click.group()
def models() -> None:
    """Models of the running worker: list, show, promote, roll back (audited).

    Calls the worker's admin API at RIVERLINE_WEB_HOST:RIVERLINE_WEB_PORT with the bearer
    token RIVERLINE_ADMIN_TOKEN (viewer to read, operator to change).
    """


def _admin(ctx: click.Context) -> Any:
    from streams.cli.admin_client import AdminClient

    return AdminClient.from_settings(settings_of(ctx))


def _print_models(body: dict[str, Any], model: str | None = None) -> None:
    from rich.table import Table

    for name, pipeline in body.get("pipelines", {}).items():
        table = Table(title=f"{name}: champion {pipeline['champion']}")
        for column in ("model", "stage", "samples", "metrics", "recent"):
            table.add_column(column)
        for m in pipeline["models"]:
            if model is not None and m["name"] != model:
                continue
            metrics = ", ".join(f"{k}={v:.4f}" for k, v in m["metrics"].items())
            recent = "" if m["recent"] is None else f"{m['recent']:.4f}"
            label = f"{m['name']}@{m['version']}"
            table.add_row(label, m["stage"], f"{m['samples_seen']:,}", metrics, recent)
        console.print(table)


@models.command("list")
@click.option("--pipeline", default=None, help="Only this pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@friendly
def models_list(ctx: click.Context, pipeline: str | None, as_json: bool) -> None:
    """Every served model: champion and shadows, versions, samples, metrics."""
    import json

    body = _admin(ctx).models(pipeline)
    if as_json:
        click.echo(json.dumps(body, indent=2, sort_keys=True))
    else:
        _print_models(body)


@models.command("show")
@click.option("--pipeline", default=None, help="Pipeline (needed when the worker runs several).")
@click.option("--model", default=None, help="Model name (default: every model).")
@click.pass_context
@friendly
def models_show(ctx: click.Context, pipeline: str | None, model: str | None) -> None:
    """One model (or one pipeline's models) in detail, as JSON."""
    import json

    body = _admin(ctx).models(pipeline)
    found = []
    for name, p in body.get("pipelines", {}).items():
        for m in p["models"]:
            if model in (None, m["name"]):
                found.append({"pipeline": name, "history": p["history"], **m})
    if not found:
        raise RiverlineError(f"no model {model!r} on the worker; see `riverline models list`.")
    click.echo(json.dumps(found, indent=2, sort_keys=True))


def _report_action(body: dict[str, Any]) -> None:
    if "queued" in body:  # a decoupled pipeline: its learner applies it in the log's order
        queued = body["queued"]
        console.print(
            f"{queued['action']} {queued['model']} queued for the learner by {queued['actor']} "
            f"({queued['why'] or 'no reason given'}); it applies it in the learning log's "
            "order and writes it to riverline.audit. See `riverline models list`.",
            highlight=False,
        )
        return
    audit = body["audit"]
    console.print(
        f"{audit['action']}: {audit['before']} -> {audit['after']} by {audit['who']}"
        f" ({audit['why'] or 'no reason given'})",
        highlight=False,
    )


@models.command("promote")
@click.option("--pipeline", default=None, help="Pipeline (needed when the worker runs several).")
@click.option("--model", required=True, help="The shadow to make champion.")
@click.option("--why", default="", help="Reason, written to riverline.audit.")
@click.pass_context
@friendly
def models_promote(ctx: click.Context, pipeline: str | None, model: str, why: str) -> None:
    """Make a shadow the champion (the champion becomes a shadow)."""
    _report_action(_admin(ctx).promote(pipeline, model, why))


@models.command("rollback")
@click.option("--pipeline", default=None, help="Pipeline (needed when the worker runs several).")
@click.option("--why", default="", help="Reason, written to riverline.audit.")
@click.pass_context
@friendly
def models_rollback(ctx: click.Context, pipeline: str | None, why: str) -> None:
    """Bring back the previous champion version from the registry."""
    _report_action(_admin(ctx).rollback(pipeline, why))


@models.command("reset")
@click.option("--pipeline", default=None, help="Pipeline (needed when the worker runs several).")
@click.option("--why", default="", help="Reason, written to riverline.audit.")
@click.pass_context
@friendly
def models_reset(ctx: click.Context, pipeline: str | None, why: str) -> None:
    """Replace the champion with a fresh, untrained model (the old one stays in the registry)."""
    _report_action(_admin(ctx).reset(pipeline, why))
