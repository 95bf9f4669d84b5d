"""Training from history: a candidate model warm-started on the offline store.

``riverline train --pipeline FILE --from-store`` reads the pipeline's stored feature
vectors and labels, starts from the registry's latest version of the spec's model (or a
fresh one), learns every labelled event once in offset order (prequentially, so the
metrics in the manifest are honest), and registers the result as a new version with note
``candidate`` and its data range in the manifest's ``extra``, ready to go to shadow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.errors import RiverlineError
from streams.models.model import OnlineModel
from streams.models.registry import Manifest, ModelRegistry, RegistryError
from streams.spec import PipelineSpec
from streams.store.offline import OfflineStore

__all__ = ["TrainingError", "TrainingSet", "load_training_set", "train_candidate"]


class TrainingError(RiverlineError):
    """Nothing to train on, or a warm start that cannot be used."""


@dataclass
class TrainingSet:
    """Labelled feature rows in offset order, and where they came from."""

    rows: list[tuple[dict[str, Any], Any]]
    data_range: dict[str, Any]


def load_training_set(store: OfflineStore, spec: PipelineSpec) -> TrainingSet:
    """Feature rows of ``spec``'s feature set, joined with labels from the labels topic.

    A label on the labels topic overrides the one the event carried. Rows of another
    feature set (the spec changed) are left out, and so are duplicates of an event id.
    """
    features = store.read("features", spec.name).to_pylist()
    if not features:
        raise TrainingError(
            f"no stored features for pipeline {spec.name} at {store.url}; run the worker "
            "(its sink writes the store) first."
        )
    labels: dict[str, Any] = {}
    for row in store.read("labels", spec.name).to_pylist():
        if row.get("event_id") and row.get("label") is not None:
            labels[row["event_id"]] = row["label"]
    feature_set = f"{spec.features.get('name', '')}@"
    features.sort(key=lambda r: (r["date"], r.get("_offset", 0)))
    seen: set[str] = set()
    rows: list[tuple[dict[str, Any], Any]] = []
    used: list[dict[str, Any]] = []
    for r in features:
        eid = r.get("event_id")
        if not eid or eid in seen or not str(r.get("rl_features", "")).startswith(feature_set):
            continue
        seen.add(eid)
        y = labels.get(eid, r.get("label"))
        if y is None:
            continue
        x = {
            name: r.get(f"value.{name}")
            for name in spec.model.inputs
            if r.get(f"value.{name}") is not None
        }
        rows.append((x, y))
        used.append(r)
    if not rows:
        raise TrainingError(f"the stored features of {spec.name} have no labelled events.")
    offsets = [int(r["_offset"]) for r in used]
    data_range = {
        "topic_kind": "features",
        "first_offset": min(offsets),
        "last_offset": max(offsets),
        "first_date": min(str(r["date"]) for r in used),
        "last_date": max(str(r["date"]) for r in used),
        "events": len(rows),
        "feature_sets": sorted({str(r.get("rl_features", "")) for r in used}),
    }
    return TrainingSet(rows, data_range)


def train_candidate(
    store: OfflineStore,
    registry: ModelRegistry,
    spec: PipelineSpec,
    *,
    warm_from: ModelRegistry | None = None,
) -> Manifest:
    """Warm-start, learn the stored history, register a candidate; returns its manifest.

    The warm start is the latest version of the spec's model in ``warm_from`` (default:
    ``registry``), if the same spec made it. A decoupled pipeline's versions are its
    learner's (the local registry caches them): its candidates go to a registry of their
    own, numbered apart, so no candidate ever takes a number the learner publishes.
    """
    data = load_training_set(store, spec)
    name = spec.model.name
    model = OnlineModel(spec.model)
    source = warm_from or registry
    parent = source.latest(name)
    if parent is not None:
        try:
            estimator, manifest = source.load(name, parent)
        except RegistryError as exc:
            raise TrainingError(f"cannot warm-start from {name}@{parent}: {exc}") from exc
        if manifest.spec_hash != spec.hash:
            # Another spec's model may take other inputs: start afresh, say why in extra.
            parent = None
        else:
            model.estimator = getattr(estimator, "estimator", estimator)
            model.samples_seen = manifest.samples_seen
    for x, y in data.rows:
        model.learn(x, y, model.predict(x))
    return registry.save(
        name,
        model.estimator,
        parent=parent,
        offsets={"features": data.data_range["last_offset"] + 1},
        samples_seen=model.samples_seen,
        metrics=model.metric_values(),
        spec_hash=spec.hash,
        note="candidate",
        extra={
            "data_range": data.data_range,
            "warm_start": parent,
            "warm_start_registry": str(source.root) if warm_from is not None else "",
            "source": "offline store",
        },
    )
