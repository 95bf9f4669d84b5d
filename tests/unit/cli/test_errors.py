"""Every command, with the broker down or a file wrong: one line on stderr, exit 1.

Each case runs ``riverline`` as a user would, in a subprocess with its own
``RIVERLINE_HOME``, Kafka at a closed port (``RIVERLINE_BOOTSTRAP``) and the worker's web
port closed too. The cases start together (a few at a time) so the module costs about
as much as its slowest case.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.kafka.broker import free_port

#: ``riverline`` arguments per case, with Kafka at a closed port; every command has a
#: case here or in :data:`FILE_WRONG` (the cheaper of the two where both apply).
BROKER_DOWN: dict[str, list[str]] = {
    "produce": ["produce", "--pipeline", "phishing", "--limit", "5"],
    "kafka up": ["kafka", "up"],
    "kafka status": ["kafka", "status"],
    "kafka acls": ["kafka", "acls", "--pipeline", "phishing"],
    "models list": ["models", "list"],
}
#: Commands whose process sets up logging (its log lines come first), with the broker down.
LOGGING_BROKER_DOWN: dict[str, list[str]] = {
    "worker": ["worker", "--pipeline", "phishing"],
    "sink": ["sink", "--pipeline", "phishing"],
}
#: Cases with a wrong file (``{bad}`` is a folder of them) -> what the one line must name.
FILE_WRONG: dict[str, tuple[list[str], str]] = {
    "produce, no such spec": (
        ["produce", "--pipeline", "{bad}/missing.toml"],
        "missing.toml does not exist",
    ),
    "report, spec not TOML": (
        ["report", "--pipeline", "{bad}/broken.toml"],
        "broken.toml is not valid TOML",
    ),
    "replay, no such spec": (
        ["replay", "--pipeline", "{bad}/missing.toml", "--verify"],
        "missing.toml does not exist",
    ),
    "train, no such spec": (
        ["train", "--pipeline", "{bad}/missing.toml", "--from-store"],
        "missing.toml does not exist",
    ),
    "lineage, empty store": (["lineage", "no-such-event"], "no event with id 'no-such-event'"),
    "demo, spec not TOML": (
        ["demo", "--pipeline", "{bad}/broken.toml"],
        "broken.toml is not valid TOML",
    ),
    "check, no such spec": (["check", "{bad}/missing.toml"], "missing.toml does not exist"),
    "tail, spec not TOML": (
        ["tail", "--pipeline", "{bad}/broken.toml"],
        "broken.toml is not valid TOML",
    ),
    "schemas check, schema not JSON": (
        ["--schemas-dir", "{bad}/schemas", "schemas", "check"],
        "gauge/v1.avsc",
    ),
}


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _bad_files(folder: Path) -> Path:
    folder.mkdir()
    (folder / "broken.toml").write_text("[pipeline\nname = \n")
    subject = folder / "schemas" / "gauge"
    subject.mkdir(parents=True)
    (subject / "v1.avsc").write_text('{"type": "record", "name": ')
    return folder


def _run(args: list[str], env: dict[str, str], cwd: Path) -> Outcome:
    done = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    """Every case's outcome, run a few at a time."""
    root = tmp_path_factory.mktemp("errors")
    bad = _bad_files(root / "bad")
    closed = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env.update(
        RIVERLINE_DEV_MODE="1",
        RIVERLINE_HOME=str(root / "home"),
        RIVERLINE_CACHE_DIR=str(root / "cache"),
        RIVERLINE_BOOTSTRAP=f"127.0.0.1:{closed}",
        RIVERLINE_WEB_PORT=str(closed),
    )
    cases = {
        **BROKER_DOWN,
        **LOGGING_BROKER_DOWN,
        **{name: args for name, (args, _) in FILE_WRONG.items()},
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(_run, [a.format(bad=bad) for a in args], env, root)
            for name, args in cases.items()
        }
        yield {name: future.result() for name, future in futures.items()}


def _assert_one_line_error(outcome: Outcome) -> str:
    assert outcome.returncode == 1, outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr_lines
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("error: "), outcome.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(BROKER_DOWN))
def test_with_the_broker_down_a_command_says_so_in_one_line(
    outcomes: dict[str, Outcome], case: str
) -> None:
    line = _assert_one_line_error(outcomes[case])
    assert "127.0.0.1:" in line


@pytest.mark.parametrize("case", list(LOGGING_BROKER_DOWN))
def test_a_long_running_command_ends_its_log_with_one_error_line(
    outcomes: dict[str, Outcome], case: str
) -> None:
    outcome = outcomes[case]
    assert outcome.returncode == 1, outcome
    assert "Traceback" not in outcome.stderr, outcome.stderr
    errors = [line for line in outcome.stderr_lines if line.startswith("error: ")]
    assert errors == [outcome.stderr_lines[-1]], outcome.stderr
    assert "127.0.0.1" in errors[0]


@pytest.mark.parametrize("case", list(FILE_WRONG))
def test_a_wrong_file_is_named_in_one_line(outcomes: dict[str, Outcome], case: str) -> None:
    line = _assert_one_line_error(outcomes[case])
    assert FILE_WRONG[case][1] in line


def test_an_invalid_setting_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env.update(RIVERLINE_HOME=str(tmp_path), RIVERLINE_KAFKA_PORT="not-a-port")
    line = _assert_one_line_error(_run(["kafka", "status"], env, tmp_path))
    assert "kafka_port" in line
