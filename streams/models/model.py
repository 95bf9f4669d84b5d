"""Online models built from a spec's allow-listed River estimators, learned prequentially.

Specs name estimators (``"linear_model.LogisticRegression"``) and give JSON-scalar
parameters; nothing is evaluated from strings. Unknown names or parameters fail at start
with a message that lists the valid ones.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from river import (
    anomaly,
    base,
    compose,
    forest,
    linear_model,
    metrics,
    naive_bayes,
    preprocessing,
    tree,
)

from streams.errors import SpecError
from streams.spec import ModelSpec

__all__ = ["ESTIMATORS", "OnlineModel", "Prediction", "build_estimator", "label_from_key"]

#: Every estimator a spec may name. Adding one here is a reviewed code change.
ESTIMATORS: dict[str, type] = {
    "preprocessing.StandardScaler": preprocessing.StandardScaler,
    "preprocessing.MinMaxScaler": preprocessing.MinMaxScaler,
    "preprocessing.MaxAbsScaler": preprocessing.MaxAbsScaler,
    "preprocessing.OneHotEncoder": preprocessing.OneHotEncoder,
    "linear_model.LogisticRegression": linear_model.LogisticRegression,
    "linear_model.LinearRegression": linear_model.LinearRegression,
    "linear_model.PAClassifier": linear_model.PAClassifier,
    "linear_model.Perceptron": linear_model.Perceptron,
    "linear_model.SoftmaxRegression": linear_model.SoftmaxRegression,
    "tree.HoeffdingTreeClassifier": tree.HoeffdingTreeClassifier,
    "tree.HoeffdingAdaptiveTreeClassifier": tree.HoeffdingAdaptiveTreeClassifier,
    "tree.HoeffdingTreeRegressor": tree.HoeffdingTreeRegressor,
    "forest.ARFClassifier": forest.ARFClassifier,
    "forest.ARFRegressor": forest.ARFRegressor,
    "naive_bayes.GaussianNB": naive_bayes.GaussianNB,
    "naive_bayes.BernoulliNB": naive_bayes.BernoulliNB,
    "anomaly.HalfSpaceTrees": anomaly.HalfSpaceTrees,
}

_SCALARS = (bool, int, float, str, type(None))


def _build_step(step: Mapping[str, Any], where: str) -> base.Estimator:
    name = step.get("estimator")
    if name not in ESTIMATORS:
        raise SpecError(
            f"{where}: unknown estimator {name!r}. "
            f"Valid estimators: {', '.join(sorted(ESTIMATORS))}."
        )
    cls = ESTIMATORS[name]
    params = step.get("params", {})
    if not isinstance(params, Mapping):
        raise SpecError(f"{where}: params of {name} must be a table.")
    accepted = {
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    for key, value in params.items():
        if key not in accepted:
            raise SpecError(
                f"{where}: {name} has no parameter {key!r}. Valid: {', '.join(sorted(accepted))}."
            )
        if not isinstance(value, _SCALARS):
            raise SpecError(
                f"{where}: parameter {key!r} of {name} must be a number, string or boolean."
            )
    try:
        return cls(**params)  # type: ignore[no-any-return,unused-ignore]
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {name}({params}) was refused by River: {exc}") from exc


def build_estimator(spec: ModelSpec) -> base.Estimator:
    """Chain the spec's steps into one River pipeline (or a single estimator)."""
    steps = [_build_step(s, f"[[model.steps]] #{i + 1}") for i, s in enumerate(spec.steps)]
    if len(steps) == 1:
        return steps[0]
    return compose.Pipeline(*steps)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a model said about one event, before it learned from it."""

    prediction: bool | int | float | str | None
    proba: dict[str, float]
    score: float | None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class OnlineModel:
    """One named, versioned model that predicts then learns, and scores itself prequentially.

    Metrics are prequential: the prediction made before the label is the one scored.
    """

    def __init__(self, spec: ModelSpec, version: int = 1) -> None:
        self.spec = spec
        self.version = version
        # River's base classes do not declare predict/learn methods; duck-typed on purpose.
        self.estimator: Any = build_estimator(spec)
        self.samples_seen = 0
        self.metrics: dict[str, metrics.base.Metric] = self._new_metrics(spec.task)

    @staticmethod
    def _new_metrics(task: str) -> dict[str, metrics.base.Metric]:
        if task == "binary":
            return {"accuracy": metrics.Accuracy(), "rocauc": metrics.ROCAUC()}
        if task == "multiclass":
            return {"accuracy": metrics.Accuracy(), "macro_f1": metrics.MacroF1()}
        if task == "regression":
            return {"mae": metrics.MAE(), "rmse": metrics.RMSE()}
        return {}

    @property
    def label(self) -> str:
        return f"{self.spec.name}@{self.version}"

    def predict(self, x: dict[str, Any]) -> Prediction:
        est = self.estimator
        task = self.spec.task
        if task in ("binary", "multiclass"):
            proba = est.predict_proba_one(x)
            # Same tie-break as River's Classifier.predict_one: first key with the max.
            pred = max(proba, key=proba.get) if proba else None
            return Prediction(pred, {str(k): float(v) for k, v in proba.items()}, None)
        if task == "regression":
            value = est.predict_one(x)
            return Prediction(float(value), {}, float(value))
        score = est.score_one(x)
        return Prediction(None, {}, float(score))

    def learn(self, x: dict[str, Any], y: Any, said: Prediction) -> None:
        """Score ``said`` against ``y`` (prequential), then learn from (x, y)."""
        task = self.spec.task
        if task == "anomaly":
            self.estimator.learn_one(x)
            self.samples_seen += 1
            return
        if y is None:
            return
        for name, metric in self.metrics.items():
            if name == "rocauc":
                proba = {label_from_key(k, y): v for k, v in said.proba.items()}
                metric.update(y, proba)
            elif said.prediction is not None:
                metric.update(y, said.prediction)
        self.estimator.learn_one(x, y)
        self.samples_seen += 1

    def metric_values(self) -> dict[str, float]:
        return {name: float(m.get()) for name, m in self.metrics.items()}


def label_from_key(key: str, like: Any) -> Any:
    """Proba keys travel as strings; give them back the label's type for River's metrics."""
    if isinstance(like, bool):
        return key == "True"
    if isinstance(like, int):
        return int(key)
    return key
