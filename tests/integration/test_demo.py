"""``riverline demo`` end to end, as a user runs it, with its report checked against River.

The command runs in its own process against the session's broker (``RIVERLINE_BOOTSTRAP``,
so it starts none) on both bundled pipelines with a reduced ``--limit`` (1,000 events
each; ``RIVERLINE_DEMO_EVENTS`` for more) sent as fast as the broker takes them. Its
printed report must account for every event, and its scores must be River's, computed
here over the same events: Phishing's accuracy and ROC AUC from River's own
``progressive_val_score``; for transactions, the offline computation of the same model
and features, and the raw fields alone from River's own ``progressive_val_score``.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from river_offline import logistic_regression, phishing_rows, progressive_scores

from streams.cli.demo import offline_scores, raw_inputs
from streams.ingestion.producer import dataset_events
from streams.kafka.broker import free_port
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"
TRANSACTIONS = REPO_ROOT / "pipelines" / "transactions.toml"
EVENTS = int(os.environ.get("RIVERLINE_DEMO_EVENTS", "1000"))
_ROW = re.compile(r"^[│|]\s*(.+?)\s*[│|]\s*(.+?)\s*[│|]$")


def _tables(output: str) -> dict[str, dict[str, str]]:
    """Each ``Riverline demo: NAME`` table of the printed report, as {row: value}."""
    tables: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in output.splitlines():
        title = re.search(r"Riverline demo: (\w+)", line)
        if title:
            current = tables.setdefault(title.group(1), {})
        elif current is not None and (row := _ROW.match(line.strip())):
            current[row.group(1)] = row.group(2)
        elif "lineage of one prediction" in line:
            current = None
    return tables


def _pct(scores: dict[str, float]) -> dict[str, str]:
    return {name: f"{value:.2%}" for name, value in scores.items()}


@pytest.fixture(scope="module")
def demo(settings_factory: Callable[..., Settings]) -> tuple[Settings, str]:
    settings = settings_factory(web_port=free_port())
    env = settings.child_env() | {"COLUMNS": "300", "PYTHONIOENCODING": "utf-8"}
    pipelines = ["--pipeline", str(PHISHING), "--pipeline", str(TRANSACTIONS)]
    size = ["--limit", str(EVENTS), "--rate", "0"]  # as fast as the broker takes them
    done = subprocess.run(
        [sys.executable, "-m", "streams", "demo", *pipelines, *size],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return settings, done.stdout


def test_the_demo_accounts_for_every_event_and_stops_its_worker(demo) -> None:
    settings, output = demo
    tables = _tables(output)
    assert sorted(tables) == ["phishing", "transactions"], output[-3000:]
    for name, size in (("phishing", 1250), ("transactions", 20_000)):
        sent = min(EVENTS, size)
        shown = tables[name]
        assert shown["events in"] == shown["predictions out"] == f"{sent:,}", shown
        assert shown["dead letters"] == shown["duplicates seen"] == "0", shown
    assert "Worker stopped (exit code 0)." in output
    plots = re.findall(r"plot: (\S+\.png)", output)
    assert {p.split("/")[-2] for p in plots} == {"phishing", "transactions"}, plots
    assert all(os.path.getsize(p) > 0 for p in plots)
    assert all(p.startswith(str(settings.home)) for p in plots)


def test_the_demo_prints_rivers_phishing_scores(demo) -> None:
    _, output = demo
    shown = _tables(output)["phishing"]
    river = progressive_scores(lambda: phishing_rows(EVENTS), logistic_regression)
    assert {
        "accuracy": shown["prequential accuracy"],
        "rocauc": shown["prequential rocauc"],
    } == _pct(river)


def test_the_demo_prints_the_transactions_scores_with_and_without_features(demo) -> None:
    _, output = demo
    shown = _tables(output)["transactions"]
    spec = load_spec(TRANSACTIONS)
    events = list(itertools.islice(dataset_events(spec, spec.dataset, "demo", 0), EVENTS))
    fields = raw_inputs(spec)

    def raw_rows() -> Iterator[tuple[dict[str, Any], Any]]:
        return (({k: e[k] for k in fields}, e[spec.model.target]) for e in events)

    with_features = _pct(offline_scores(spec, events))
    raw_alone = _pct(progressive_scores(raw_rows, logistic_regression))
    for name in ("accuracy", "rocauc"):
        assert shown[f"prequential {name} with features"] == with_features[name], shown
        assert shown[f"prequential {name} on raw fields alone"] == raw_alone[name], shown
