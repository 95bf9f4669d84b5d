"""PNG plots for people: learning curves per model version, and latency distributions.

Plots are drawn from prediction records (what consumers saw), so they show the same
prequential numbers as the metrics, with drift and promotion markers where they happened.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt
from river import metrics

from streams.models.model import label_from_key
from streams.spec import PipelineSpec

__all__ = [
    "Marker",
    "drift_markers",
    "learning_curve",
    "plot_latency",
    "plot_learning_curve",
    "version_markers",
    "write_report",
]


@dataclass(frozen=True)
class Marker:
    """A vertical line on a learning curve: a drift, a promotion, a rollback."""

    at: int
    kind: str
    text: str = ""


def learning_curve(
    records: Sequence[dict[str, Any]], metric: str = "accuracy", every: int = 10
) -> dict[str, tuple[list[int], list[float]]]:
    """Prequential metric after each labelled prediction, per model version.

    Returns ``{model@version: (event numbers, values)}``; the metric of a version counts
    only the predictions that version made.
    """
    curves: dict[str, tuple[list[int], list[float]]] = {}
    scores: dict[str, metrics.base.Metric] = {}
    for i, r in enumerate(records):
        y = r.get("label")
        if y is None:
            continue
        model = r["model"]
        if model not in scores:
            scores[model] = metrics.ROCAUC() if metric == "rocauc" else metrics.Accuracy()
            curves[model] = ([], [])
        if metric == "rocauc":
            scores[model].update(y, {label_from_key(k, y): v for k, v in r["proba"].items()})
        elif r.get("prediction") is not None:
            scores[model].update(y, r["prediction"])
        xs, ys = curves[model]
        if i % every == 0 or i == len(records) - 1:
            xs.append(i)
            ys.append(float(scores[model].get()))
    return curves


def plot_learning_curve(
    records: Sequence[dict[str, Any]],
    path: Path,
    *,
    metric: str = "accuracy",
    markers: Sequence[Marker] = (),
    title: str = "",
) -> Path:
    """Write the prequential ``metric`` over events, one line per model version."""
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    for model, (xs, ys) in learning_curve(records, metric).items():
        ax.plot(xs, ys, label=model, linewidth=1.5)
    colours = {
        "drift": "tab:red",
        "promote": "tab:green",
        "rollback": "tab:orange",
        "version": "tab:gray",
    }
    for m in markers:
        ax.axvline(m.at, color=colours.get(m.kind, "grey"), linestyle="--", linewidth=1)
        ax.annotate(
            m.text or m.kind,
            (m.at, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=8,
        )
    ax.set_xlabel("event")
    ax.set_ylabel(f"prequential {metric}")
    ax.set_title(title or f"prequential {metric} per model version")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_latency(latencies_ms: Sequence[float], path: Path, *, title: str = "") -> Path:
    """Histogram of end-to-end latencies with p50 and p99 marked."""
    fig, ax = plt.subplots(figsize=(9, 4), dpi=100)
    ordered = sorted(latencies_ms)
    ax.hist(ordered, bins=50, color="tab:blue", alpha=0.8)
    if ordered:
        for q, colour in ((0.5, "tab:green"), (0.99, "tab:red")):
            value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            ax.axvline(value, color=colour, linestyle="--")
            ax.annotate(
                f"p{int(q * 100)} {value:.1f} ms",
                (value, 0.9),
                xycoords=("data", "axes fraction"),
                fontsize=8,
            )
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("predictions")
    ax.set_title(title or "end-to-end latency")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def version_markers(records: Sequence[dict[str, Any]]) -> list[Marker]:
    """A marker wherever the model that answered changed.

    Another model name is a promotion or a rollback; the same name with another version is
    a new version of the same model (a snapshot, a reset).
    """
    found: list[Marker] = []
    for i in range(1, len(records)):
        before, now = records[i - 1]["model"], records[i]["model"]
        if now != before:
            same = before.rpartition("@")[0] == now.rpartition("@")[0]
            found.append(Marker(i, "version" if same else "promote", f"{before} -> {now}"))
    return found


def drift_markers(
    records: Sequence[dict[str, Any]], alerts: Sequence[dict[str, Any]]
) -> list[Marker]:
    """A marker per drift alert, at the first prediction made after it was raised."""
    times = [int(r["predict_ts"]) for r in records]
    found = []
    for alert in alerts:
        if alert.get("kind") != "drift":
            continue
        at = bisect.bisect_left(times, int(alert["ts"]))
        if at < len(records):
            found.append(Marker(at, "drift", f"drift {alert.get('model') or ''}".strip()))
    return found


def write_report(
    spec: PipelineSpec,
    records: Sequence[dict[str, Any]],
    folder: Path,
    alerts: Sequence[dict[str, Any]] = (),
) -> list[Path]:
    """The report PNGs of one pipeline from its prediction records, in event order.

    The pipeline's main metric (ROC AUC for binary tasks, else accuracy), accuracy too for
    classifiers, and the ingest-to-prediction latency distribution.
    """
    metric = "rocauc" if spec.model.task == "binary" else "accuracy"
    markers = version_markers(records) + drift_markers(records, alerts)
    written = [
        plot_learning_curve(
            records, folder / f"{spec.name}-{metric}.png", metric=metric, markers=markers
        ),
        plot_latency(
            [float(r["predict_ts"] - r["ingest_ts"]) for r in records],
            folder / f"{spec.name}-latency.png",
            title="ingest to prediction latency",
        ),
    ]
    if spec.model.task in ("binary", "multiclass") and metric != "accuracy":
        written.append(
            plot_learning_curve(records, folder / f"{spec.name}-accuracy.png", markers=markers)
        )
    return written
