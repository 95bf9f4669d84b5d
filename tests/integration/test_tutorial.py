"""The README's tutorial, run as written against the session's broker.

The commands of the README's ``<!-- tutorial -->`` blocks run in one bash script
(:mod:`tutorialkit`) in an empty temporary folder, with ``riverline`` on the PATH as
after ``make install``: the sample CSV, ``init``, ``check``, the worker in the background,
``produce --from``, ``tail``, ``report`` and ``kill %1``. What the tutorial cannot know
comes through ``RIVERLINE_*`` variables, as a user's environment would give it: the
session's broker (``RIVERLINE_BOOTSTRAP``; ``riverline kafka up`` and ``kafka down`` are
left out, see :data:`tutorialkit.BROKER_COMMANDS`), a random namespace, an empty
``RIVERLINE_HOME``, a free web port, development mode, and no offline-store sink (the
tutorial reads nothing from the store; its process would only take CPU time here).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from tutorialkit import CommandResult, read_results, tutorial_commands, tutorial_script

from streams.kafka.broker import free_port
from streams.settings import REPO_ROOT

pytestmark = pytest.mark.integration

#: Longest the whole tutorial may take before the test stops it (it takes far less).
TIMEOUT = 300.0


@dataclass
class TutorialRun:
    results: list[CommandResult]
    folder: Path
    out: Path
    output: str

    def step(self, prefix: str) -> CommandResult:
        """The result of the command starting with ``prefix`` (it must have run)."""
        found = [r for r in self.results if r.command.head.startswith(prefix)]
        assert found, f"the tutorial did not get to `{prefix}`: {self.failure()}"
        return found[0]

    def failure(self) -> str:
        """What the last command that ran said, and the end of the worker's log."""
        last = self.results[-1] if self.results else None
        said = f"`{last.command.head}` exited {last.code}: {last.stderr[-2000:]}" if last else ""
        log = self.folder / "worker.log"
        tail = log.read_text()[-3000:] if log.exists() else "(no worker.log)"
        return f"{said}\nscript output: {self.output[-1000:]}\nworker.log: {tail}"


def _environment(settings_env: dict[str, str]) -> dict[str, str]:
    """The settings as ``RIVERLINE_*`` variables, and ``riverline`` on the PATH."""
    env = dict(settings_env)
    # The tutorial exports its own folders.
    env.pop("RIVERLINE_SCHEMAS_DIR", None)
    env.pop("RIVERLINE_PIPELINES_DIR", None)
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "riverline").exists(), f"no riverline command in {bin_dir}: make install"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run_script(script: Path, cwd: Path, env: dict[str, str]) -> str:
    """Run the script in a session of its own; stop its whole process group on a timeout."""
    proc = subprocess.Popen(
        ["bash", str(script)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        output += f"\n(stopped after {TIMEOUT:.0f} s)"
    return output


@pytest.fixture(scope="module")
def tutorial(settings_factory, tmp_path_factory) -> TutorialRun:
    root = Path(tmp_path_factory.mktemp("tutorial"))
    start, out = root / "user", root / "results"
    start.mkdir()
    out.mkdir()
    settings = settings_factory(web_port=free_port(), sink_enabled=False)
    commands = tutorial_commands((REPO_ROOT / "README.md").read_text())
    script = root / "tutorial.sh"
    script.write_text(tutorial_script(commands, out))
    output = _run_script(script, start, _environment(settings.child_env()))
    cwd = out / "cwd"
    folder = Path(cwd.read_text().strip()) if cwd.exists() else start
    run = TutorialRun(read_results(commands, out), folder, out, output)
    assert (out / "finished").exists(), run.failure()
    return run


def _sample_ids(run: TutorialRun) -> list[str]:
    with (run.folder / "orders.csv").open(newline="") as sample:
        return [row["order_id"] for row in csv.DictReader(sample)]


def test_init_writes_a_schema_and_a_spec_that_check_accepts(tutorial: TutorialRun) -> None:
    init = tutorial.step("riverline init")
    assert init.code == 0, init.stderr
    assert (tutorial.folder / "schemas" / "orders" / "v1.avsc").is_file()
    assert (tutorial.folder / "pipelines" / "orders.toml").is_file()
    check = tutorial.step("riverline check")
    assert check.code == 0, check.stdout + check.stderr
    assert "pipelines/orders.toml: no problems found" in check.stdout


def test_produce_sends_every_row_of_the_sample(tutorial: TutorialRun) -> None:
    produced = tutorial.step("riverline produce")
    assert f"sent {len(_sample_ids(tutorial))} events" in produced.stdout
    assert "skipped" not in produced.stderr


def test_tail_prints_one_prediction_per_row_as_json(tutorial: TutorialRun) -> None:
    assert tutorial.step("riverline tail").code == 0
    lines = (tutorial.folder / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["event_id"] for r in records] == _sample_ids(tutorial)
    assert {r["pipeline"] for r in records} == {"orders"}
    # The first order is predicted before the model has learned anything.
    assert all(isinstance(r["prediction"], bool) for r in records[1:])
    assert tutorial.step("head -n 3").stdout.splitlines() == lines[:3]


def test_report_writes_png_plots(tutorial: TutorialRun) -> None:
    report = tutorial.step("riverline report")
    plots = sorted((tutorial.folder / "report").glob("*.png"))
    assert plots, report.stdout + report.stderr
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)
    assert report.code == 0
    assert report.stdout.count("wrote ") == len(plots)


def test_kill_stops_the_worker_cleanly(tutorial: TutorialRun) -> None:
    assert tutorial.step("kill %1").code == 0
    assert (tutorial.out / "background.rc").read_text().split() == ["0"], tutorial.failure()
