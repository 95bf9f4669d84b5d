"""PNG plots for people: learning curves per model version, and latency distributions.

Plots are drawn from prediction records (what consumers saw), so they show the same
prequential numbers as the metrics, with drift and promotion markers where they happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt
from river import metrics

from streams.model import label_from_key

__all__ = ["Marker", "learning_curve", "plot_latency", "plot_learning_curve"]


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
    colours = {"drift": "tab:red", "promote": "tab:green", "rollback": "tab:orange"}
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
