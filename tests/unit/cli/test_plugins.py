"""Plugin commands: entry points of ``riverline.commands`` join the command line."""

from __future__ import annotations

import sys
import tomllib
import types
from importlib.metadata import EntryPoint

import click
import pytest
from click.testing import CliRunner

import streams.cli.main
from streams.cli.plugins import COMMANDS_GROUP, PluginError, add_plugins
from streams.settings import REPO_ROOT

PLUGIN_MODULE = "riverline_fake_plugin"


@click.command()
@click.option("--name", default="world")
def hello(name: str) -> None:
    """Say hello."""
    click.echo(f"hello {name}")


@pytest.fixture
def plugin_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """An importable module holding a command and an object that is not one."""
    module = types.ModuleType(PLUGIN_MODULE)
    module.hello = hello  # type: ignore[attr-defined]
    module.not_a_command = len  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, PLUGIN_MODULE, module)
    return module


def _ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name, value, COMMANDS_GROUP)


def _group() -> click.Group:
    @click.group()
    def root() -> None:
        """A stand-in for the riverline group."""

    @root.command()
    def replay() -> None:
        """A built-in command."""
        click.echo("built-in replay")

    return root


def test_a_plugin_command_is_added_under_its_entry_point_name(plugin_module) -> None:
    group = _group()
    assert add_plugins(group, [_ep("greet", f"{PLUGIN_MODULE}:hello")]) == []
    result = CliRunner().invoke(group, ["greet", "--name", "kafka"])
    assert result.exit_code == 0
    assert result.output == "hello kafka\n"


def test_a_plugin_that_fails_to_import_says_why_and_the_others_still_work(plugin_module) -> None:
    group = _group()
    problems = add_plugins(
        group,
        [_ep("bench", "no_such_benchmarks.cli:bench"), _ep("greet", f"{PLUGIN_MODULE}:hello")],
    )
    assert problems == []
    runner = CliRunner()
    assert runner.invoke(group, ["greet"]).output == "hello world\n"
    listed = runner.invoke(group, ["--help"]).output
    assert "bench" in listed
    assert "unavailable" in listed

    failed = runner.invoke(group, ["bench", "--quick", "--json", "x.json"])
    assert failed.exit_code == 1
    message = " ".join(failed.stderr.split())
    assert "the command 'bench' is not available" in message
    assert "entry point bench = 'no_such_benchmarks.cli:bench'" in message
    assert f"group {COMMANDS_GROUP}" in message
    assert "ModuleNotFoundError" in message
    assert "make install" in message
    assert "Traceback" not in failed.stderr


def test_an_entry_point_that_is_not_a_click_command_is_refused_when_run(plugin_module) -> None:
    group = _group()
    assert add_plugins(group, [_ep("count", f"{PLUGIN_MODULE}:not_a_command")]) == []
    failed = CliRunner().invoke(group, ["count"])
    assert failed.exit_code == 1
    assert "is a builtin_function_or_method, not a click command" in " ".join(failed.stderr.split())


def test_a_plugin_never_replaces_a_built_in_command(plugin_module) -> None:
    group = _group()
    problems = add_plugins(group, [_ep("replay", f"{PLUGIN_MODULE}:hello")])
    assert [type(p) for p in problems] == [PluginError]
    assert "plugin command 'replay'" in str(problems[0])
    assert "already has a command of that name" in str(problems[0])
    assert CliRunner().invoke(group, ["replay"]).output == "built-in replay\n"


def test_adding_the_same_plugins_twice_changes_nothing(plugin_module) -> None:
    group = _group()
    found = [_ep("greet", f"{PLUGIN_MODULE}:hello")]
    assert add_plugins(group, found) == []
    assert add_plugins(group, found) == []
    assert sorted(group.commands) == ["greet", "replay"]


def test_the_commands_pyproject_registers_all_load() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    registered = pyproject["project"]["entry-points"][COMMANDS_GROUP]
    assert registered == {
        "worker": "agents.cli:worker",
        "sink": "agents.cli:sink",
        "bench": "benchmarks.cli:bench",
    }
    group = click.Group("riverline")
    assert add_plugins(group, [_ep(name, value) for name, value in registered.items()]) == []
    for name in registered:
        assert not (group.commands[name].help or "").startswith("(unavailable"), name


def test_main_warns_when_no_plugin_is_registered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(streams.cli.main, "registered_plugins", list)
    monkeypatch.setattr(sys, "argv", ["riverline", "--help"])
    with pytest.raises(SystemExit) as stopped:
        streams.cli.main.main()
    assert stopped.value.code == 0
    warning = " ".join(capsys.readouterr().err.split())
    assert f"no plugin commands are registered (entry-point group {COMMANDS_GROUP})" in warning
    assert "make install" in warning
