"""River's own numbers, computed at test time, for the claims the live tests check.

Each reference runs River alone (its dataset, its estimators, its evaluation loop) with no
Riverline code between, so a live figure that equals it equals River's, and the docs'
figures are checked against what River computes, not against a constant.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from typing import Any

from river import datasets, evaluate, linear_model, metrics, preprocessing, tree

from streams.models.drift import DriftMonitor
from streams.settings import REPO_ROOT

__all__ = [
    "agrawal_drift_rows",
    "drift_detections",
    "logistic_regression",
    "phishing_rows",
    "progressive_scores",
    "quoted",
]

Rows = Iterable[tuple[dict[str, Any], Any]]


def logistic_regression() -> Any:
    """``StandardScaler | LogisticRegression``, River's defaults (the pipelines' model)."""
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


def phishing_rows(limit: int | None = None) -> Rows:
    """River's Phishing dataset, in its own order; its first ``limit`` rows if given."""
    return itertools.islice(datasets.Phishing(), limit)


def agrawal_drift_rows(n: int) -> Rows:
    """Agrawal function 0 drifting to 4 at 10,000 (``pipelines/agrawal.toml``'s stream)."""
    return datasets.synth.ConceptDriftStream(
        stream=datasets.synth.Agrawal(classification_function=0, seed=42),
        drift_stream=datasets.synth.Agrawal(classification_function=4, seed=42),
        seed=1,
        position=10_000,
        width=1_000,
    ).take(n)


def progressive_scores(
    rows: Callable[[], Rows], model: Callable[[], Any], *, delay: int | None = None
) -> dict[str, float]:
    """River's ``progressive_val_score`` accuracy and ROC AUC (a fresh model for each).

    ``delay``: each label is revealed that many events after its event, as in River.
    """
    scores: dict[str, float] = {}
    for name, metric in (("accuracy", metrics.Accuracy()), ("rocauc", metrics.ROCAUC())):
        evaluate.progressive_val_score(rows(), model(), metric, delay=delay)
        scores[name] = float(metric.get())
    return scores


def drift_detections(rows: Rows) -> list[int]:
    """After how many labels ADWIN sees the error rate of River's Hoeffding tree rise.

    The tree predicts each event before learning it (prequential); ADWIN (through
    :class:`~streams.models.drift.DriftMonitor`, which keeps rises only, as the worker)
    watches its 0/1 mistakes.
    """
    model = tree.HoeffdingTreeClassifier()
    monitor = DriftMonitor()
    found: list[int] = []
    for x, y in rows:
        event = monitor.update(float(model.predict_one(x) != y))
        if event is not None:
            found.append(event.samples)
        model.learn_one(x, y)
    return found


def quoted(pattern: str, path: str = "README.md") -> tuple[str, ...]:
    """The groups of the first match of ``pattern`` in a document: the figures it quotes."""
    text = (REPO_ROOT / path).read_text()
    match = re.search(pattern, text, re.DOTALL)
    assert match is not None, f"{path} no longer quotes /{pattern}/: update the pattern"
    return match.groups()
