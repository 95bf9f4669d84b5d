"""The Grafana dashboard only queries metrics the worker exports."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from streams.observability.metrics import WorkerMetrics
from streams.settings import REPO_ROOT

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "riverline.json"
METRIC = re.compile(r"\briverline_[a-z0-9_]+")


def _exported() -> set[str]:
    metrics = WorkerMetrics()
    # Labelled families without samples still carry their HELP and TYPE lines.
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
    return names


def _queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    return exprs


def test_every_dashboard_query_names_an_exported_metric() -> None:
    exported = _exported()
    queries = _queries()
    assert len(queries) >= 8
    for expr in queries:
        names = METRIC.findall(expr)
        assert names, f"query names no riverline metric: {expr}"
        for name in names:
            assert name in exported, f"{name} (in {expr!r}) is not exported by the worker"


def test_dashboard_covers_what_operators_look_at() -> None:
    board = json.loads(DASHBOARD.read_text())
    text = json.dumps(board)
    for metric in (
        "riverline_events_total",
        "riverline_consumer_lag",
        "riverline_end_to_end_latency_seconds_bucket",
        "riverline_dead_letters_total",
        "riverline_model_metric",
        "riverline_drift_detections_total",
        "riverline_registry_actions_total",
    ):
        assert metric in text, f"the dashboard does not show {metric}"
