"""Commands that other packages add to ``riverline``, found through entry points.

A distribution registers a command under the entry-point group ``riverline.commands``;
the entry point's name is the command's name and its object a :class:`click.Command`::

    [project.entry-points."riverline.commands"]
    bench = "benchmarks.cli:bench"

This is how commands that need code :mod:`streams` must not import join the command line:
``worker`` and ``sink`` run Faust (:mod:`agents`), ``bench`` is the benchmark
(:mod:`benchmarks`). :func:`add_plugins` adds every registered command when ``riverline``
starts. A plugin that fails to load does not take the other commands down: its name
becomes a command that fails with the reason and what to do.

Examples
--------
>>> from importlib.metadata import EntryPoint
>>> group = click.Group("riverline")
>>> add_plugins(group, [
...     EntryPoint("replay", "streams.cli.main:replay", COMMANDS_GROUP),
...     EntryPoint("absent", "no_such_package.cli:absent", COMMANDS_GROUP),
... ])
[]
>>> sorted(group.commands), group.commands["absent"].help
(['absent', 'replay'], '(unavailable: its plugin failed to load; run `riverline absent` for why)')
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import click

from streams.cli.commands import friendly
from streams.errors import RiverlineError

__all__ = ["COMMANDS_GROUP", "PluginError", "add_plugins", "registered_plugins"]

#: The entry-point group of plugin commands.
COMMANDS_GROUP = "riverline.commands"


class PluginError(RiverlineError):
    """A plugin command that cannot be loaded or added."""


def registered_plugins() -> list[EntryPoint]:
    """The entry points of :data:`COMMANDS_GROUP` in the installed distributions, by name."""
    return sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name)


def add_plugins(group: click.Group, found: Iterable[EntryPoint]) -> list[PluginError]:
    """Add the command of each entry point to ``group``.

    A plugin that cannot be imported, or whose object is not a :class:`click.Command`,
    is added as a command of the same name that fails with the reason (exit code 1), so
    ``riverline --help`` still lists it and the other commands still work. A plugin whose
    name a command of ``group`` already has is not added; the returned errors say which
    (the caller shows them as warnings).
    """
    problems: list[PluginError] = []
    for ep in found:
        where = _where(ep)
        try:
            loaded: Any = ep.load()
        except Exception as exc:  # a plugin's import can fail in any way; say which
            command = _unavailable(ep.name, f"{where} failed to load: {type(exc).__name__}: {exc}")
        else:
            if isinstance(loaded, click.Command):
                command = loaded
            else:
                command = _unavailable(
                    ep.name, f"{where} is a {type(loaded).__name__}, not a click command"
                )
        existing = group.commands.get(ep.name)
        if existing is command:
            continue
        if existing is not None:
            problems.append(
                PluginError(
                    f"plugin command {ep.name!r} ({where}) was not added: riverline already "
                    f"has a command of that name. Rename the entry point or uninstall the "
                    f"package that registers it."
                )
            )
            continue
        group.add_command(command, name=ep.name)
    return problems


def _where(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    origin = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value!r} (group {COMMANDS_GROUP}{origin})"


def _unavailable(name: str, reason: str) -> click.Command:
    """A command that only says why the plugin ``name`` cannot run."""
    message = (
        f"the command {name!r} is not available: {reason}. Reinstall Riverline so its "
        "packages and entry points match the code (`make install`, or "
        "`pip install -e .`), or uninstall the package that registers it."
    )

    @click.command(
        name=name,
        help=f"(unavailable: its plugin failed to load; run `riverline {name}` for why)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )
    @friendly
    def command() -> None:
        raise PluginError(message)

    return command
