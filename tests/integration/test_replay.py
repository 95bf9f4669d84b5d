"""``riverline replay --verify``: a live run rebuilt from its raw topic is identical."""

from __future__ import annotations

from pathlib import Path

import pytest
from phishing_live import PHISHING, LiveRun, live_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(settings_factory, tmp_path_factory) -> LiveRun:
    return live_run(settings_factory, Path(tmp_path_factory.mktemp("replay-run")))


def test_replay_of_a_live_run_is_identical(run: LiveRun) -> None:
    out = run.cli("replay", "--pipeline", str(PHISHING), "--verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"replayed {run.sent + 1:,} raw events" in out.stdout  # and the bad one
    assert "1 dead letters" in out.stdout
    assert f"{run.sent:,} identical" in out.stdout
    assert out.stdout.rstrip().endswith("identical")
    assert "raw read:" in out.stderr  # progress


def test_replay_with_another_model_shows_the_first_difference(run: LiveRun, tmp_path) -> None:
    changed = tmp_path / "phishing.toml"
    changed.write_text(
        PHISHING.read_text().replace(
            'estimator = "linear_model.LogisticRegression"',
            'estimator = "linear_model.LogisticRegression"\nparams = {l2 = 0.5}',
        )
    )
    out = run.cli("replay", "--pipeline", str(changed), "--verify")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "first difference: event" in out.stdout
    assert " live=" in out.stdout
