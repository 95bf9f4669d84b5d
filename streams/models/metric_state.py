"""River metrics as plain data, so a checkpoint holds their state without a pickle.

Riverline scores its models with a few River metrics (:meth:`streams.models.model.OnlineModel`):
``Accuracy``, ``ROCAUC``, ``MacroF1``, ``MAE`` and ``RMSE``. Their state is confusion
matrices and running means; :func:`metric_to_data` writes it as JSON-ready data and
:func:`metric_from_data` builds an equal metric from it, so a restored metric continues
exactly where it was. Any other metric is refused rather than written half.

Examples
--------
>>> from river import metrics
>>> m = metrics.ROCAUC()
>>> for y, p in [(True, {True: 0.8, False: 0.2}), (False, {True: 0.6, False: 0.4})]:
...     m.update(y, p)
>>> again = metric_from_data(metric_to_data(m))
>>> float(again.get()) == float(m.get())
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from river import metrics

from streams.errors import RiverlineError

__all__ = ["MetricStateError", "metric_from_data", "metric_to_data"]


class MetricStateError(RiverlineError):
    """A metric that cannot be written as data, or data that is not a metric's state."""


_CONFUSION_METRICS: dict[str, type] = {
    "Accuracy": metrics.Accuracy,
    "MacroF1": metrics.MacroF1,
}
_MEAN_METRICS: dict[str, type] = {"MAE": metrics.MAE, "RMSE": metrics.RMSE}


def metric_to_data(metric: Any) -> dict[str, Any]:
    """The state of a supported River metric as JSON-ready data.

    Raises
    ------
    MetricStateError
        If the metric is not one Riverline knows how to write.
    """
    cls: type = type(metric)
    kind = cls.__name__
    if _CONFUSION_METRICS.get(kind) is cls:
        return {"kind": kind, "cm": _cm_to_data(metric.cm)}
    if _MEAN_METRICS.get(kind) is cls:
        return {"kind": kind, "n": metric._mean.n, "mean": metric._mean._mean}
    if cls is metrics.ROCAUC:
        return {
            "kind": "ROCAUC",
            "n_thresholds": metric.n_thresholds,
            "pos_val": metric.pos_val,
            "cms": [_cm_to_data(cm) for cm in metric.cms],
        }
    raise MetricStateError(
        f"cannot write the state of metric {cls.__module__}.{kind} as data; "
        "Riverline writes Accuracy, MacroF1, ROCAUC, MAE and RMSE."
    )


def metric_from_data(data: dict[str, Any]) -> Any:
    """A River metric equal to the one :func:`metric_to_data` wrote.

    Raises
    ------
    MetricStateError
        If ``data`` is not a metric state this module writes.
    """
    try:
        kind = data["kind"]
        if kind in _CONFUSION_METRICS:
            metric = _CONFUSION_METRICS[kind]()
            _cm_fill(metric.cm, data["cm"])
            return metric
        if kind in _MEAN_METRICS:
            metric = _MEAN_METRICS[kind]()
            metric._mean.n = float(data["n"])
            metric._mean._mean = float(data["mean"])
            return metric
        if kind == "ROCAUC":
            metric = metrics.ROCAUC(n_thresholds=int(data["n_thresholds"]), pos_val=data["pos_val"])
            if len(data["cms"]) != len(metric.cms):
                raise ValueError("one confusion matrix per threshold")
            for cm, cm_data in zip(metric.cms, data["cms"], strict=True):
                _cm_fill(cm, cm_data)
            return metric
    except (KeyError, TypeError, ValueError) as exc:
        raise MetricStateError(f"metric state is malformed: {exc!r}.") from exc
    raise MetricStateError(f"unknown metric kind {kind!r} in a metric state.")


def _cm_to_data(cm: metrics.ConfusionMatrix) -> dict[str, Any]:
    # Every stored cell, zeros included: River's readers create zero cells on lookup, and
    # the restored matrix must be the same object state, not just the same totals.
    return {
        "cells": [[t, p, w] for t, row in cm.data.items() for p, w in row.items()],
        "sum_row": [[c, w] for c, w in cm.sum_row.items()],
        "sum_col": [[c, w] for c, w in cm.sum_col.items()],
        "n_samples": cm.n_samples,
        "total_weight": cm.total_weight,
        "true_positives": cm._total_true_positives,
        "init_classes": sorted(cm._init_classes, key=repr),
    }


def _cm_fill(cm: metrics.ConfusionMatrix, data: dict[str, Any]) -> None:
    for t, p, w in data["cells"]:
        cm.data[_label(t)][_label(p)] = float(w)
    for target, pairs in ((cm.sum_row, data["sum_row"]), (cm.sum_col, data["sum_col"])):
        for c, w in pairs:
            target[_label(c)] = float(w)
    cm.n_samples = int(data["n_samples"])
    cm.total_weight = data["total_weight"]
    cm._total_true_positives = float(data["true_positives"])
    cm._init_classes = {_label(c) for c in _items(data["init_classes"])}


def _items(value: Any) -> Iterable[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _label(value: Any) -> Any:
    """A class label as River saw it: JSON keeps bools, ints, floats and strings apart."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    raise TypeError(f"a class label must be a scalar, not {type(value).__name__}")
