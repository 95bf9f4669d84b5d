"""What every ``riverline`` command shares, built in or added by a plugin.

The root command puts the :class:`~streams.settings.Settings` in the click context;
:func:`settings_of` takes them out. :func:`friendly` shows what stops a command (a
Riverline error, a broker that does not answer, a file that cannot be read or written)
as one line and exit code 1 instead of a traceback. Plugin commands
(:mod:`streams.cli.plugins`) use these too, so they read and fail like the built-in ones.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from aiokafka.errors import KafkaError
from rich.console import Console
from rich.markup import escape

from streams.errors import RiverlineError
from streams.settings import Settings

__all__ = [
    "PIPELINE_FILE",
    "PipelineFile",
    "console",
    "default_pipelines",
    "err_console",
    "friendly",
    "one_line",
    "pipelines_option",
    "settings_of",
]

F = TypeVar("F", bound=Callable[..., Any])

#: Where commands print their results.
# Long lines are not broken: paths and commands stay whole to copy (the terminal wraps).
console = Console(soft_wrap=True)
#: Where errors and warnings go.
err_console = Console(stderr=True, soft_wrap=True)


def one_line(exc: BaseException, bootstrap: str | None = None) -> str:
    """What went wrong, on one line: the error's own message, or for a Kafka client error
    (at ``bootstrap``, the cluster the command talked to) or an ``OSError`` (neither is
    Riverline's) what it means and what to do.

    Examples
    --------
    >>> one_line(FileNotFoundError(2, "No such file or directory", "out/x.png"))
    'out/x.png: No such file or directory'
    >>> from streams.errors import ConfigError
    >>> one_line(ConfigError("bad value,\\n  see the docs"))
    'bad value, see the docs'
    """
    if isinstance(exc, KafkaError):
        detail = str(exc)
        if not detail.startswith(type(exc).__name__):
            detail = f"{type(exc).__name__}: {detail}"
        where = f" at {bootstrap}" if bootstrap else ""
        text = (
            f"Kafka{where} did not answer as expected ({detail}). Is the broker running "
            "(`riverline kafka status`), and is RIVERLINE_BOOTSTRAP its address?"
        )
    elif isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


#: Loggers whose messages about a failed connection repeat what a command's one-line
#: error says (aiokafka's "Unable connect to", asyncio's "Unclosed AIOKafkaProducer").
_CLIENT_LOGGERS = ("aiokafka", "asyncio")


class _ClientLogs(logging.Handler):
    """Stands in for Python's last-resort handler while a command runs without logging set
    up: warnings go to stderr as before, except the Kafka client's and asyncio's, which
    wait: shown when the command ends well, dropped when it fails with its one-line error
    (and from then on, as the client's objects are collected at exit)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.held: list[logging.LogRecord] = []
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(_CLIENT_LOGGERS):
            print(self.format(record), file=sys.stderr)
        elif not self.failed:
            self.held.append(record)

    def show_held(self) -> None:
        """The command ended well: show what was held, and from now on pass all through."""
        held, self.held = self.held, []
        for record in held:
            print(self.format(record), file=sys.stderr)
        logging.getLogger().removeHandler(self)


def friendly(fn: F) -> F:
    """Show what stops a command as one line on stderr and exit 1, not a traceback.

    Riverline's own errors, the Kafka client's (a broker that is down or refuses) and
    ``OSError`` (a file that cannot be read or written, a port that is closed); anything
    else is a bug and keeps its traceback. When nothing has set up logging, the Kafka
    client's own messages about that failure are left out too.
    """

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = logging.getLogger()
        client_logs = None if root.handlers else _ClientLogs()
        if client_logs is not None:
            root.addHandler(client_logs)
        try:
            return fn(*args, **kwargs)
        except (RiverlineError, KafkaError, OSError) as exc:
            if client_logs is not None:
                client_logs.failed = True
                client_logs.held.clear()
                client_logs = None
            line = one_line(exc, _bootstrap())
            err_console.print(
                f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True
            )
            sys.exit(1)
        finally:
            if client_logs is not None:
                client_logs.show_held()

    return wrapper  # type: ignore[return-value]


def _bootstrap() -> str | None:
    """The Kafka cluster of the running command, if its settings are built yet."""
    ctx = click.get_current_context(silent=True)
    settings = ctx.find_root().obj if ctx is not None else None
    return settings.effective_bootstrap if isinstance(settings, Settings) else None


def settings_of(ctx: click.Context) -> Settings:
    """The settings the ``riverline`` group built for this invocation."""
    settings: Settings = ctx.obj
    return settings


def default_pipelines(settings: Settings) -> list[Path]:
    """The bundled pipelines a command runs when given no ``--pipeline``."""
    return [settings.pipelines_dir / name for name in ("phishing.toml", "transactions.toml")]


class PipelineFile(click.ParamType):
    """A pipeline spec: a file, or the name of one in the pipelines folder.

    ``phishing`` (or ``phishing.toml``) with no such file in the working directory is
    ``<pipelines_dir>/phishing.toml`` (``riverline --pipelines-dir``, default: the example
    pipelines Riverline ships), so an installed Riverline runs its examples by name.
    Anything else stays the path given; reading it says what is wrong.
    """

    name = "pipeline"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        path = Path(value)
        settings = ctx.find_root().obj if ctx is not None else None
        if path.exists() or len(path.parts) != 1 or not isinstance(settings, Settings):
            return path
        named = settings.pipelines_dir / (path.name if path.suffix else f"{path.name}.toml")
        return named if named.is_file() else path


#: The ``--pipeline`` option's type: a spec file, or a name in the pipelines folder.
PIPELINE_FILE = PipelineFile()

#: ``--pipeline FILE``, repeatable, for the commands that run pipelines.
pipelines_option = click.option(
    "--pipeline",
    "pipelines",
    multiple=True,
    type=PIPELINE_FILE,
    help="Pipeline spec (TOML file, or the name of one in the pipelines folder); repeat "
    "for several. Default: phishing and transactions.",
)
