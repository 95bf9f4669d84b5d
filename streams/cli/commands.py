"""What every ``riverline`` command shares, built in or added by a plugin.

The root command puts the :class:`~streams.settings.Settings` in the click context;
:func:`settings_of` takes them out. :func:`friendly` shows Riverline's errors as one line
and exit code 1 instead of a traceback. Plugin commands (:mod:`streams.cli.plugins`) use
these too, so they read and fail like the built-in ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from streams.errors import RiverlineError
from streams.settings import Settings

__all__ = [
    "console",
    "default_pipelines",
    "err_console",
    "friendly",
    "pipelines_option",
    "settings_of",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Where commands print their results.
console = Console()
#: Where errors and warnings go.
err_console = Console(stderr=True)


def friendly(fn: F) -> F:
    """Show Riverline's errors as one clear message and exit 1, not a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RiverlineError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def settings_of(ctx: click.Context) -> Settings:
    """The settings the ``riverline`` group built for this invocation."""
    settings: Settings = ctx.obj
    return settings


def default_pipelines(settings: Settings) -> list[Path]:
    """The bundled pipelines a command runs when given no ``--pipeline``."""
    return [settings.pipelines_dir / name for name in ("phishing.toml", "transactions.toml")]


#: ``--pipeline FILE``, repeatable, for the commands that run pipelines.
pipelines_option = click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Pipeline spec (TOML); repeat for several. Default: pipelines/phishing.toml.",
)
