"""``riverline worker`` and ``riverline sink``: the commands that run Faust.

:mod:`streams` never imports Faust or :mod:`agents`, so these two join the command line
as plugins, registered under the entry-point group ``riverline.commands`` in
pyproject.toml (see :mod:`streams.cli.plugins`). Faust is imported only when one of them
runs, not when ``riverline`` starts.
"""

from __future__ import annotations

from pathlib import Path

import click

from streams.cli.commands import default_pipelines, friendly, pipelines_option, settings_of

__all__ = ["sink", "worker"]


@click.command()
@pipelines_option
@click.option(
    "--role",
    type=click.Choice(["all", "serve", "learn"]),
    default="all",
    show_default=True,
    help="serve: run the pipelines; learn: run the learners of decoupled pipelines; all: "
    "serve here and start a learner process beside it for decoupled pipelines.",
)
@click.pass_context
@friendly
def worker(ctx: click.Context, pipelines: tuple[Path, ...], role: str) -> None:
    """Run the Faust worker with every agent of the pipelines."""
    from agents.worker import run_worker
    from streams.spec import load_spec

    settings = settings_of(ctx)
    specs = [load_spec(p, settings.schemas_dir) for p in (pipelines or default_pipelines(settings))]
    run_worker(settings, specs, role)


@click.command()
@pipelines_option
@click.pass_context
@friendly
def sink(ctx: click.Context, pipelines: tuple[Path, ...]) -> None:
    """Run the pipelines' offline sinks (Parquet store) until SIGTERM.

    The worker starts this itself (RIVERLINE_SINK_PROCESS, default on); run it alone with
    RIVERLINE_SINK_ENABLED=false on the workers to place it elsewhere.
    """
    from agents.sink import run_sinks
    from streams.spec import load_spec

    settings = settings_of(ctx)
    run_sinks(settings, [load_spec(p) for p in (pipelines or default_pipelines(settings))])
