"""Model lifecycle of one pipeline: a champion and its shadows, promoted on evidence.

The champion's predictions go to consumers; shadows learn and predict on the same
features, and their predictions go to ``P.predictions.shadow`` only. A model moves
candidate (registered, e.g. by ``riverline train``) -> shadow -> champion, by an
operator's ``promote`` or by the spec's promotion policy (the shadow beats the champion by
a margin over the last N labels). ``rollback`` brings back the previous champion from
the registry. Every change bumps the version that predictions carry and returns an
audit entry; drift on a model's error stream returns an alert and applies the spec's
action.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.errors import RiverlineError
from streams.models.drift import DriftMonitor
from streams.models.model import OnlineModel, Prediction
from streams.models.registry import Manifest, ModelRegistry, PendingVersion
from streams.spec import ModelSpec, PipelineSpec

__all__ = ["Alert", "AuditEntry", "LifecycleError", "ModelLifecycle", "Served"]


class LifecycleError(RiverlineError):
    """A promotion, rollback or reset that cannot be done as asked."""


@dataclass(frozen=True)
class AuditEntry:
    """Who did what to which model, when and why (written to ``riverline.audit``)."""

    pipeline: str
    who: str
    action: str
    model: str
    before: str
    after: str
    why: str
    ts: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Alert:
    """Something an operator should know (written to ``riverline.alerts``)."""

    pipeline: str
    kind: str
    model: str
    message: str
    ts: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Served:
    """A model in service, with its recent record and drift detector."""

    model: OnlineModel
    stage: str
    recent: deque[float]
    drift: DriftMonitor

    @property
    def label(self) -> str:
        return self.model.label

    def recent_score(self) -> float:
        """Mean over the window: accuracy (higher is better) or -MAE for regressors."""
        if not self.recent:
            return float("nan")
        mean = sum(self.recent) / len(self.recent)
        return -mean if self.model.spec.task == "regression" else mean


def _error(task: str, said: Prediction, y: Any) -> float:
    if task == "regression":
        return abs(float(y) - float(said.prediction or 0.0))
    return 0.0 if said.prediction == y else 1.0


class ModelLifecycle:
    """The champion and shadows of one pipeline, and the operations on them."""

    def __init__(self, spec: PipelineSpec, registry: ModelRegistry | None = None) -> None:
        self.spec = spec
        self.registry = registry
        self.served: list[Served] = [self._serve(spec.model, "champion")]
        self.served += [self._serve(s, "shadow") for s in spec.shadows]
        #: Champion (name, version) before each promotion or rollback, for ``rollback``.
        self.history: list[tuple[str, int]] = []
        #: Versions made by promotions, rollbacks and resets, not written yet.
        self.unwritten: list[PendingVersion] = []

    def _serve(self, model_spec: ModelSpec, stage: str, model: OnlineModel | None = None) -> Served:
        window = self.spec.promotion.window
        drift = DriftMonitor(self.spec.drift.detector, **dict(self.spec.drift.params))
        return Served(model or OnlineModel(model_spec), stage, deque(maxlen=window), drift)

    @property
    def champion(self) -> Served:
        return self.served[0]

    @property
    def shadows(self) -> list[Served]:
        return self.served[1:]

    def find(self, name: str) -> Served:
        for s in self.served:
            if s.model.spec.name == name:
                return s
        known = ", ".join(s.model.spec.name for s in self.served)
        raise LifecycleError(f"no model {name!r} in pipeline {self.spec.name} (models: {known}).")

    def predict(self, x: dict[str, Any]) -> list[tuple[Served, Prediction]]:
        """Every served model's prediction, the champion's first."""
        return [(s, s.model.predict(x)) for s in self.served]

    def learn(
        self, x: dict[str, Any], y: Any, said: list[tuple[Served, Prediction]]
    ) -> tuple[list[Alert], list[AuditEntry]]:
        """Score and learn every model that predicted; apply drift actions and the policy."""
        alerts: list[Alert] = []
        audits: list[AuditEntry] = []
        if y is None and self.spec.model.task != "anomaly":
            return alerts, audits
        for served, prediction in said:
            if served not in self.served:  # promoted or rolled back meanwhile
                continue
            served.model.learn(x, y, prediction)
            if y is None:
                continue
            error = _error(served.model.spec.task, prediction, y)
            served.recent.append(-error if served.model.spec.task == "regression" else 1 - error)
            # Regressors: feed the detector the error itself; classifiers: 0/1 mistakes.
            event = served.drift.update(error)
            if event is not None:
                alerts.append(
                    Alert(
                        self.spec.name,
                        "drift",
                        served.label,
                        f"error rate rose from {event.error_before:.3f} to "
                        f"{event.error_after:.3f} after {event.samples} labels; "
                        f"action: {self.spec.drift.action}",
                    )
                )
                if served is self.champion:
                    audits += self._drift_action()
        audits += self._apply_policy()
        return alerts, audits

    def _drift_action(self) -> list[AuditEntry]:
        action = self.spec.drift.action
        if action == "reset":
            return [self.reset("drift", "drift detected on the champion's errors")]
        if action == "promote_shadow" and self.shadows:
            best = max(self.shadows, key=lambda s: s.recent_score())
            return [self.promote(best.model.spec.name, "drift", "drift on the champion")]
        return []

    def _apply_policy(self) -> list[AuditEntry]:
        policy = self.spec.promotion
        if not policy.enabled or not self.shadows:
            return []
        champion = self.champion
        if len(champion.recent) < policy.window:
            return []
        for shadow in self.shadows:
            if len(shadow.recent) < policy.window:
                continue
            lead = shadow.recent_score() - champion.recent_score()
            if lead >= policy.margin:
                why = (
                    f"policy: {shadow.label} beat {champion.label} by {lead:.4f} "
                    f"over the last {policy.window} labels (margin {policy.margin})"
                )
                return [self.promote(shadow.model.spec.name, "policy", why)]
        return []

    def new_version(self, served: Served, note: str, offsets: dict[str, int] | None = None) -> None:
        """A new version of a served model, prepared now (the model carries it at once)
        and written by :meth:`write_pending`, before any prediction naming it is sent."""
        model = served.model
        if self.registry is None:
            model.version += 1
            return
        pending = self.registry.prepare(
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
        self.unwritten.append(pending)
        model.version = pending.manifest.version

    def write_pending(self) -> list[Manifest]:
        """Write the versions promotions, rollbacks and resets made (file I/O: a caller
        on an event loop runs this in a thread), oldest first."""
        written = []
        while self.unwritten:
            pending = self.unwritten[0]
            assert self.registry is not None  # only new_version queues, with a registry
            written.append(self.registry.write(pending))
            self.unwritten.pop(0)
        return written

    def snapshot(self, offsets: dict[str, int]) -> list[Manifest]:
        """Save every served model at these input offsets; each gets a new version."""
        if self.registry is None:
            raise LifecycleError("snapshots need a registry (RIVERLINE_HOME/registry).")
        for served in self.served:
            self.new_version(served, "snapshot", offsets)
        return self.write_pending()

    def promote(self, name: str, who: str, why: str) -> AuditEntry:
        """Make shadow ``name`` the champion; the champion becomes a shadow."""
        shadow = self.find(name)
        if shadow is self.champion:
            raise LifecycleError(f"{shadow.label} is already the champion.")
        before = self.champion
        self.history.append((before.model.spec.name, before.model.version))
        before.stage, shadow.stage = "shadow", "champion"
        self.served.remove(shadow)
        self.served.insert(0, shadow)
        self.new_version(shadow, f"promoted by {who}")
        return AuditEntry(self.spec.name, who, "promote", name, before.label, shadow.label, why)

    def rollback(self, who: str, why: str) -> AuditEntry:
        """Bring back the previous champion version from the registry."""
        if not self.history:
            raise LifecycleError(
                f"pipeline {self.spec.name} has no earlier champion to roll back to."
            )
        if self.registry is None:
            raise LifecycleError("rollback needs a registry (RIVERLINE_HOME/registry).")
        name, version = self.history.pop()
        estimator, manifest = self.registry.load(name, version)
        current = self.champion
        target = next((s for s in self.served if s.model.spec.name == name), None)
        if target is None:
            raise LifecycleError(f"{name} is no longer in the spec; cannot roll back to it.")
        target.model.estimator = estimator
        target.model.version = manifest.version
        target.model.samples_seen = manifest.samples_seen
        if target is not current:
            current.stage, target.stage = "shadow", "champion"
            self.served.remove(target)
            self.served.insert(0, target)
        self.new_version(target, f"rollback to {name}@{version} by {who}")
        return AuditEntry(self.spec.name, who, "rollback", name, current.label, target.label, why)

    def reset(self, who: str, why: str) -> AuditEntry:
        """Replace the champion's estimator with a fresh one (a new version)."""
        champion = self.champion
        before = champion.label
        self.history.append((champion.model.spec.name, champion.model.version))
        if self.registry is not None:
            self.new_version(champion, f"saved before reset by {who}")
            self.history[-1] = (champion.model.spec.name, champion.model.version)
        fresh = OnlineModel(champion.model.spec, version=champion.model.version)
        champion.model.estimator = fresh.estimator
        champion.model.samples_seen = 0
        champion.drift = DriftMonitor(self.spec.drift.detector, **dict(self.spec.drift.params))
        champion.recent.clear()
        self.new_version(champion, f"reset by {who}")
        return AuditEntry(
            self.spec.name, who, "reset", champion.model.spec.name, before, champion.label, why
        )

    def describe(self) -> list[dict[str, Any]]:
        """For ``models list`` and the status page."""
        return [
            {
                "name": s.model.spec.name,
                "version": s.model.version,
                "stage": s.stage,
                "samples_seen": s.model.samples_seen,
                "metrics": s.model.metric_values(),
                "recent": s.recent_score() if s.recent else None,
            }
            for s in self.served
        ]
