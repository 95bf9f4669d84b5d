"""What a pipeline's models know, and how they learn: the one learning core.

:class:`Learning` holds the model lifecycle (champion and shadows, :mod:`streams.models.
lifecycle`), the label join (:mod:`streams.models.labels`) and the clock of label expiry,
and learns what it is given in the order it is given:

* :meth:`Learning.observe`: an event that every served model has just predicted (what each
  said). With its label it is learned at once; without, it waits in the join for its
  delayed label, so the model learns from the features it saw and the metric scores what
  it said (prequential).
* :meth:`Learning.label`: a delayed label, joined with its waiting prediction and learned.

The single-worker predict stage (:class:`streams.models.stage.Predictor`) uses it beside
its predictions; the learner of a decoupled pipeline (:mod:`streams.models.learner`) uses
it over the learning log. Its state goes into checkpoints as data (:meth:`state_data`);
the estimators are registry versions, saved and loaded here.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.models.labels import LabelJoin, Pending
from streams.models.lifecycle import Alert, AuditEntry, LifecycleError, ModelLifecycle, Served
from streams.models.metric_state import MetricStateError, metric_from_data, metric_to_data
from streams.models.model import OnlineModel, Prediction
from streams.models.registry import Manifest, ModelRegistry, PendingVersion, RegistryError
from streams.spec import PipelineSpec
from streams.state.checkpoint import CheckpointError

__all__ = ["DEFAULT_LABEL_TTL_MS", "Learning", "load_verified", "read_state", "state_bytes"]

#: A day of event time: labels later than that are counted as expired.
DEFAULT_LABEL_TTL_MS = 24 * 3600 * 1000


class Learning:
    """The lifecycle, the label join and their prequential record, for one pipeline."""

    def __init__(
        self,
        spec: PipelineSpec,
        lifecycle: ModelLifecycle | None = None,
        *,
        delayed_labels: bool = True,
        label_ttl_ms: int = DEFAULT_LABEL_TTL_MS,
        label_max_pending: int = 100_000,
        label_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        """``delayed_labels``: an event without its label waits for one (else it is
        learned without: anomaly models, or a pipeline with no labels topic)."""
        self.spec = spec
        self.lifecycle = lifecycle if lifecycle is not None else ModelLifecycle(spec)
        self.delayed_labels = delayed_labels
        self.join = LabelJoin(label_ttl_ms, label_max_pending, label_max_bytes)
        #: Largest event time seen: the clock of label expiry.
        self.watermark_ms = 0
        #: Alerts and audit entries of the current batch (:meth:`start_batch`).
        self.alerts: list[Alert] = []
        self.audits: list[AuditEntry] = []
        #: Delayed labels taken (all time).
        self.labels_read = 0

    @property
    def model(self) -> OnlineModel:
        """The champion (whose predictions consumers see)."""
        return self.lifecycle.champion.model

    def start_batch(self) -> None:
        """Forget the last batch's alerts and audit entries."""
        self.alerts = []
        self.audits = []

    def predict(self, x: dict[str, Any]) -> list[tuple[Served, Prediction]]:
        """What every served model says about ``x``, the champion's first."""
        return self.lifecycle.predict(x)

    def observe(
        self,
        event_id: str,
        x: dict[str, Any],
        event_ts: int,
        label: Any,
        said: list[tuple[Served, Prediction]],
    ) -> None:
        """Learn a predicted event now (its label given, or none to wait for), or keep it
        until its delayed label comes."""
        if label is not None or not self.delayed_labels or self.spec.model.task == "anomaly":
            self._learn(x, label, said)
        else:
            early = self.join.add_prediction(
                Pending(event_id, x, tuple((s.model.spec.name, p) for s, p in said), event_ts)
            )
            if early is not None:
                self._joined(early[0], early[1])
        self.watermark_ms = max(self.watermark_ms, event_ts)

    def label(self, event_id: str, label: Any) -> None:
        """A delayed label: learned with its waiting prediction, or kept until it comes."""
        self.labels_read += 1
        for pending in self.join.add_label(event_id, label, now_ms=self.watermark_ms):
            self._joined(pending, label)

    def expire(self) -> int:
        """Drop what waited longer than the label TTL; how many."""
        return self.join.expire(self.watermark_ms)

    def _learn(self, x: dict[str, Any], y: Any, said: list[tuple[Served, Prediction]]) -> None:
        alerts, audits = self.lifecycle.learn(x, y, said)
        self.alerts += alerts
        self.audits += audits

    def _joined(self, pending: Pending, label: Any) -> None:
        said: list[tuple[Served, Prediction]] = []
        for name, prediction in pending.said:
            served = next((s for s in self.lifecycle.served if s.model.spec.name == name), None)
            if served is not None:
                said.append((served, prediction))
        self._learn(pending.x, label, said)

    def reset(self) -> None:
        """Fresh models and an empty join, as at construction (before a restore)."""
        self.lifecycle = ModelLifecycle(self.spec, self.lifecycle.registry)
        self.join = LabelJoin(self.join.ttl_ms, self.join.max_pending, self.join.max_bytes)
        self.watermark_ms = 0

    # -- registry versions ----------------------------------------------------------------

    def register_fresh(self) -> list[str]:
        """Save every served model, untrained, as a new registry version (first start).

        So the version a prediction carries always names a version in the registry, and
        a promotion, rollback or checkpoint always moves to a higher one.
        """
        if self.lifecycle.registry is None:
            return []
        return [self.save(s, "fresh at worker start").label for s in self.lifecycle.served]

    def save(self, served: Served, note: str, offsets: dict[str, int] | None = None) -> Manifest:
        """Save one served model as a new signed registry version; it now carries it."""
        registry = self._registry()
        manifest = registry.write(self.prepare(served, note, offsets))
        served.model.version = manifest.version
        return manifest

    def prepare(
        self, served: Served, note: str, offsets: dict[str, int] | None = None
    ) -> PendingVersion:
        """The next registry version of one served model, pickled now, not written yet.

        The model keeps its version until the caller has written this one
        (``registry.write``): predictions never name a version that is not on disk.
        """
        registry = self._registry()
        model = served.model
        return registry.prepare(
            model.spec.name,
            model.estimator,
            parent=model.version,
            offsets=offsets or {},
            samples_seen=model.samples_seen,
            metrics=model.metric_values(),
            spec_hash=self.spec.hash,
            note=note,
            extra={"stage": served.stage},
        )

    def promote(self, name: str, who: str, why: str) -> AuditEntry:
        """Promote shadow ``name``; the champion gets a version first, so rollback restores
        it. The versions are written by ``lifecycle.write_pending``, off the batch path."""
        if self.lifecycle.registry is not None and name != self.model.spec.name:
            self.lifecycle.find(name)  # an unknown name fails before anything is saved
            note = f"saved before promoting {name} by {who}"
            self.lifecycle.new_version(self.lifecycle.champion, note)
        return self.lifecycle.promote(name, who, why)

    def _registry(self) -> ModelRegistry:
        registry = self.lifecycle.registry
        if registry is None:
            raise LifecycleError("saving a model needs a registry (RIVERLINE_HOME/registry).")
        return registry

    # -- state ------------------------------------------------------------------------

    def state_data(self, versions: Mapping[str, int] | None = None) -> dict[str, Any]:
        """Everything but the estimators (those are registry versions), as data.

        ``versions`` (model name -> version) overrides the models' own: the versions a
        checkpoint is writing, which they carry only once written. Drift detectors are not
        saved: they restart after a restore.
        """
        versions = versions or {}
        models = [
            {
                "name": s.model.spec.name,
                "version": versions.get(s.model.spec.name, s.model.version),
                "stage": s.stage,
                "samples_seen": s.model.samples_seen,
                "metrics": {k: metric_to_data(m) for k, m in s.model.metrics.items()},
                "recent": list(s.recent),
            }
            for s in self.lifecycle.served
        ]
        return {
            "models": models,
            "history": [[name, version] for name, version in self.lifecycle.history],
            "join": self.join.to_data(),
            "watermark": self.watermark_ms,
        }

    def restore_data(self, state: Mapping[str, Any]) -> list[Alert]:
        """Restore :meth:`state_data` and each model's version from the registry.

        A version whose artifact fails verification is refused; the model falls back to
        its newest earlier version that verifies, else to a fresh model. Each fallback is
        returned as an ``integrity`` alert.

        Raises
        ------
        CheckpointError
            If ``state`` is malformed; nothing is changed then.
        """
        registry = self._registry()
        try:
            models = [_SavedModel.of(entry) for entry in state["models"]]
            history = [(str(name), int(version)) for name, version in state["history"]]
            join = LabelJoin.from_data(state["join"], self.join.max_pending, self.join.max_bytes)
            watermark = int(state["watermark"])
        except (KeyError, TypeError, ValueError, AttributeError, MetricStateError) as exc:
            raise CheckpointError(f"the models' state is malformed: {exc!r}.") from exc
        alerts: list[Alert] = []
        order: list[Served] = []
        for saved in models:
            served = next(
                (s for s in self.lifecycle.served if s.model.spec.name == saved.name), None
            )
            if served is None:
                continue  # no longer in the spec
            alert = self._restore_model(registry, served, saved)
            if alert is not None:
                alerts.append(alert)
            served.stage = saved.stage
            order.append(served)
        rest = [s for s in self.lifecycle.served if s not in order]
        self.lifecycle.served[:] = order + rest
        self.lifecycle.history = history
        self.join = join
        self.watermark_ms = watermark
        return alerts

    def _restore_model(
        self, registry: ModelRegistry, served: Served, saved: _SavedModel
    ) -> Alert | None:
        """Load the saved version of one model (or its fallback); an alert if it fell back."""
        name, version = saved.name, saved.version
        model = served.model
        loaded, problems = load_verified(registry, name, version, self.spec.hash)
        if loaded is None:
            model.estimator = OnlineModel(model.spec).estimator
            model.samples_seen = 0
            model.version = self.save(served, "fresh: no snapshot verified").version
            fallback = f"a fresh model {model.label}"
        else:
            estimator, manifest = loaded
            model.estimator, model.version = estimator, manifest.version
            model.samples_seen = manifest.samples_seen
            if manifest.version == version:
                model.samples_seen, model.metrics = saved.samples_seen, saved.metrics
                served.recent = deque(saved.recent, maxlen=served.recent.maxlen)
            fallback = f"the previous verified version {manifest.label}"
        if not problems:
            return None
        return Alert(
            self.spec.name,
            "integrity",
            f"{name}@{version}",
            f"{' '.join(problems)} Serving {fallback} instead; it does not "
            "reflect the events since that version.",
        )


def load_verified(
    registry: ModelRegistry, name: str, version: int, spec_hash: str
) -> tuple[tuple[Any, Manifest] | None, list[str]]:
    """The newest version <= ``version`` that verifies and was made by this spec.

    A version of another spec is never continued: a changed spec starts fresh rather than
    mixing the old model into the new one.
    """
    problems: list[str] = []
    for candidate in sorted((v for v in registry.versions(name) if v <= version), reverse=True):
        try:
            if registry.manifest(name, candidate).spec_hash != spec_hash:
                problems.append(f"{name}@{candidate} was made by another spec.")
                continue
            return registry.load(name, candidate), problems
        except RegistryError as exc:
            problems.append(str(exc))
    if not problems:
        problems.append(f"{name}@{version} is not in the registry at {registry.root}.")
    return None, problems


def state_bytes(format_name: tuple[str, int], document: Mapping[str, Any]) -> bytes:
    """A state document as the JSON bytes of a checkpoint, named by its format."""
    state = {"format": format_name[0], "version": format_name[1], **document}
    return json.dumps(state, separators=(",", ":")).encode()


def read_state(format_name: tuple[str, int], data: bytes) -> dict[str, Any]:
    """The JSON document of :func:`state_bytes`, checked for its format.

    Raises
    ------
    CheckpointError
        If ``data`` is not JSON, or not a document of this format and version.
    """
    try:
        state = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"the {format_name[0]} is not JSON: {exc}.") from exc
    if not isinstance(state, dict) or [state.get("format"), state.get("version")] != list(
        format_name
    ):
        raise CheckpointError(
            f"the state is not a {format_name[0]} document of version {format_name[1]}; it "
            "was written by another Riverline version."
        )
    return state


@dataclass(frozen=True)
class _SavedModel:
    """One served model's entry in :meth:`Learning.state_data`."""

    name: str
    version: int
    stage: str
    samples_seen: int
    metrics: dict[str, Any]
    recent: list[float]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> _SavedModel:
        return cls(
            name=str(entry["name"]),
            version=int(entry["version"]),
            stage=str(entry["stage"]),
            samples_seen=int(entry["samples_seen"]),
            metrics={str(k): metric_from_data(v) for k, v in entry["metrics"].items()},
            recent=[float(v) for v in entry["recent"]],
        )
