"""River metrics written as data continue exactly where they were."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from river import metrics

from streams.models.metric_state import MetricStateError, metric_from_data, metric_to_data


def _updates(kind: str, n: int, seed: int) -> list[tuple[Any, Any]]:
    rng = random.Random(seed)
    if kind == "binary":
        return [(rng.random() < 0.4, rng.random() < 0.5) for _ in range(n)]
    if kind == "proba":
        out = []
        for _ in range(n):
            p = rng.random()
            out.append((rng.random() < 0.4, {True: p, False: 1 - p}))
        return out
    if kind == "multiclass":
        classes = ["a", "b", 3, True]
        return [(rng.choice(classes), rng.choice(classes)) for _ in range(n)]
    return [(rng.gauss(0, 10), rng.gauss(0, 10)) for _ in range(n)]


CASES = [
    (metrics.Accuracy, "binary"),
    (metrics.Accuracy, "multiclass"),
    (metrics.MacroF1, "multiclass"),
    (metrics.ROCAUC, "proba"),
    (metrics.MAE, "regression"),
    (metrics.RMSE, "regression"),
]


@pytest.mark.parametrize(("make", "kind"), CASES)
def test_a_restored_metric_continues_like_the_original(make: Any, kind: str) -> None:
    original = make()
    for y, p in _updates(kind, 300, seed=1):
        original.update(y, p)
    data = json.loads(json.dumps(metric_to_data(original)))
    restored = metric_from_data(data)
    assert type(restored) is type(original)
    assert restored.get() == original.get()
    for y, p in _updates(kind, 300, seed=2):
        original.update(y, p)
        restored.update(y, p)
        assert restored.get() == original.get()
    assert metric_to_data(restored) == metric_to_data(original)


def test_labels_keep_their_types() -> None:
    """Bools, ints, floats and strings come back as what they were."""
    metric = metrics.Accuracy()
    for y, p in [(True, False), ("3", 3.5), (2, 2)]:
        metric.update(y, p)
    restored = metric_from_data(json.loads(json.dumps(metric_to_data(metric))))
    assert [(k, type(k)) for k in restored.cm.data] == [(k, type(k)) for k in metric.cm.data]
    assert [(k, type(k)) for k in restored.cm.sum_col] == [(k, type(k)) for k in metric.cm.sum_col]


def test_an_unknown_metric_is_refused_by_name() -> None:
    with pytest.raises(MetricStateError, match="LogLoss"):
        metric_to_data(metrics.LogLoss())


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "Pickle"},
        {"kind": "Accuracy"},
        {"kind": "ROCAUC", "n_thresholds": 10, "pos_val": True, "cms": []},
        {"kind": "MAE", "n": "many", "mean": 0.0},
        {"kind": "Accuracy", "cm": {"cells": [[[1], 1, 1.0]]}},
    ],
)
def test_malformed_data_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(MetricStateError):
        metric_from_data(data)
