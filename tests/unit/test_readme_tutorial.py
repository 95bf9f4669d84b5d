"""The README's tutorial, read without a broker: its commands, in order, and a script bash
accepts. ``tests/integration/test_tutorial.py`` runs that script against the real broker."""

from __future__ import annotations

import csv
import io
import subprocess

from tutorialkit import BROKER_COMMANDS, tutorial_commands, tutorial_script

from streams.settings import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _riverline_steps() -> list[str]:
    return [
        " ".join(c.words()[:2])
        for c in tutorial_commands(README)
        if c.head.startswith("riverline ") and not c.starts_or_stops_a_broker
    ]


def test_the_tutorial_takes_a_csv_through_every_step_in_order() -> None:
    assert _riverline_steps() == [
        "riverline init",
        "riverline check",
        "riverline worker",
        "riverline produce",
        "riverline tail",
        "riverline report",
    ]
    commands = tutorial_commands(README)
    assert [c.words()[:2] for c in commands if c.background] == [["riverline", "worker"]]
    heads = [c.head for c in commands]
    assert [h for h in heads if h.startswith(BROKER_COMMANDS)] == list(BROKER_COMMANDS)


def test_tail_waits_for_one_prediction_per_row_of_the_sample() -> None:
    commands = tutorial_commands(README)
    sample = next(c for c in commands if c.head.startswith("cat > orders.csv <<"))
    rows = list(csv.DictReader(io.StringIO(sample.text.split("\n", 1)[1].rsplit("\n", 1)[0])))
    tail = next(c for c in commands if c.head.startswith("riverline tail")).words()
    assert len(rows) == int(tail[tail.index("-n") + 1]) == 24
    assert len({r["order_id"] for r in rows}) == len(rows)


def test_the_script_is_valid_bash_and_leaves_the_broker_commands_out(tmp_path) -> None:
    script = tutorial_script(tutorial_commands(README), tmp_path / "out")
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    run_lines = [line for line in script.splitlines() if line.startswith("{ ")]
    assert not [line for line in run_lines if "kafka" in line]
    assert "# left out, the session's broker is used: riverline kafka up" in script
