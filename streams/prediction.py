"""Prediction: feature vectors -> a prediction per event, then learning from its label.

Prequential: each event is predicted before the model learns from it, so the prediction
a consumer sees is the one the metrics score. The models are a
:class:`~streams.lifecycle.ModelLifecycle`: the champion's prediction goes to
``P.predictions`` and carries its ``name@version`` (``rl.model`` and the ``model``
field); each shadow's goes to ``P.predictions.shadow``.

Labels come either in the event (the vector's ``label``: learned at once) or later on
``P.labels``, keyed by event id, as Avro single-object ``label.avsc`` or JSON
``{"event_id": ..., "label": ...}``. Delayed labels are joined (:class:`LabelJoin`) with
the features and predictions stored at prediction time, so the model learns from what
it saw and the metric scores what it said. Pending entries expire after ``label_ttl_ms``
of event time (the largest event time seen so far); expiries are counted.
"""

from __future__ import annotations

import json
import pickle
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from streams.catalog import SchemaCatalog
from streams.codec import decode_single_object, encode_single_object
from streams.errors import DecodeError
from streams.featurization import Vector
from streams.labels import LabelJoin, Pending
from streams.lifecycle import Alert, AuditEntry, LifecycleError, ModelLifecycle, Served
from streams.lineage import Lineage
from streams.messages import InMessage, OutMessage
from streams.model import OnlineModel, Prediction
from streams.registry import Manifest, ModelRegistry, PendingVersion, RegistryError
from streams.spec import PipelineSpec
from streams.stage import DeadLetter, StageResult, now_ms

__all__ = ["DEFAULT_LABEL_TTL_MS", "Predictor"]

#: A day of event time: labels later than that are counted as expired.
DEFAULT_LABEL_TTL_MS = 24 * 3600 * 1000

_SINGLE_OBJECT = b"\xc3\x01"
#: Event ids remembered to drop the features stage's repeats after a crash.
_SEEN_IDS = 200_000


class Predictor:
    """Predict, publish, learn, for one pipeline's champion and shadows."""

    stage = "predict"

    def __init__(
        self,
        spec: PipelineSpec,
        catalog: SchemaCatalog,
        *,
        predictions_topic: str,
        dlq_topic: str,
        model: OnlineModel | None = None,
        lifecycle: ModelLifecycle | None = None,
        labels_topic: str | None = None,
        shadow_topic: str | None = None,
        alerts_topic: str | None = None,
        audit_topic: str | None = None,
        label_ttl_ms: int = DEFAULT_LABEL_TTL_MS,
        worker_id: str = "worker",
    ) -> None:
        self.spec = spec
        self.catalog = catalog
        self.vector_schema = catalog.record("feature_vector")
        self.prediction_schema = catalog.record("prediction")
        self.label_schema = catalog.record("label")
        self.alert_schema = catalog.record("alert")
        self.audit_schema = catalog.record("audit")
        self.lifecycle = lifecycle if lifecycle is not None else ModelLifecycle(spec)
        if model is not None:
            self.lifecycle.champion.model = model
        self.predictions_topic = predictions_topic
        self.shadow_topic = shadow_topic or f"{predictions_topic}.shadow"
        self.labels_topic = labels_topic
        self.dlq_topic = dlq_topic
        self.alerts_topic = alerts_topic
        self.audit_topic = audit_topic
        self.worker_id = worker_id
        self.join = LabelJoin(label_ttl_ms)
        #: What every served model said about each event still waiting for its label.
        self._said: OrderedDict[str, tuple[int, list[tuple[str, Prediction]]]] = OrderedDict()
        #: Largest event time seen: the clock of label expiry.
        self.watermark_ms = 0
        #: End-to-end latencies (seconds) of the last batch, for the worker's histogram.
        self.latencies: list[float] = []
        #: Alerts and audit entries of the last batch (also sent), for the worker's metrics.
        self.alerts: list[Alert] = []
        self.audits: list[AuditEntry] = []
        #: Labels read from ``P.labels`` (all time).
        self.labels_read = 0
        #: ``topic:partition`` -> next input offset, when the worker owns the commits
        #: (agents.snapshots); empty means every message is processed as it comes.
        self.positions: dict[str, int] = {}
        self.tracking = False
        #: Recent event ids: P.features repeats events after a crash of the features stage.
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.skipped = 0
        self.duplicates = 0
        #: ``topic:partition`` keys that delivered offsets past their next one (a gap):
        #: the worker seeks them back (agents.snapshots).
        self.gaps: set[str] = set()

    @property
    def model(self) -> OnlineModel:
        """The champion (whose predictions consumers see)."""
        return self.lifecycle.champion.model

    def register_fresh(self) -> list[str]:
        """Save every served model, untrained, as a new registry version (worker start).

        So the version a prediction carries always names a version in the registry, and
        a promotion, rollback or snapshot always moves to a higher one.
        """
        if self.lifecycle.registry is None:
            return []
        return [self.save(s, "fresh at worker start").label for s in self.lifecycle.served]

    def save(self, served: Served, note: str, offsets: dict[str, int] | None = None) -> Manifest:
        """Save one served model as a new signed registry version; it now carries it."""
        registry = self.lifecycle.registry
        assert registry is not None  # prepare() checked
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
        registry = self.lifecycle.registry
        if registry is None:
            raise LifecycleError("saving a model needs a registry (RIVERLINE_HOME/registry).")
        model = served.model
        return registry.prepare(
            model.spec.name,
            model.estimator,
            parent=registry.latest(model.spec.name),
            offsets=offsets or {},
            samples_seen=model.samples_seen,
            metrics=model.metric_values(),
            spec_hash=self.spec.hash,
            note=note,
            extra={"stage": served.stage},
        )

    def promote(self, name: str, who: str, why: str) -> AuditEntry:
        """Promote shadow ``name``; the champion is saved first, so rollback restores it."""
        if self.lifecycle.registry is not None and name != self.model.spec.name:
            self.lifecycle.find(name)  # an unknown name fails before anything is saved
            self.save(self.lifecycle.champion, f"saved before promoting {name} by {who}")
        return self.lifecycle.promote(name, who, why)

    def process(self, batch: Sequence[InMessage | Vector]) -> StageResult:
        """Predict and learn from a micro-batch of feature vectors and labels, in order.

        A :class:`~streams.featurization.Vector` (one-pass, :mod:`streams.onepass`) is
        predicted as it is: its offset was checked by the caller, which also keeps
        ``positions`` of its source topic.
        """
        result = StageResult()
        self.latencies = []
        self.alerts = []
        self.audits = []
        for msg in batch:
            if isinstance(msg, Vector):  # computed in this pass, selected in order already
                self._predict(msg.msg, msg.vector, msg.lineage, result, repeats=False)
                continue
            if self.tracking and not self._next_in_order(msg):
                continue
            if self.labels_topic is not None and msg.topic == self.labels_topic:
                self._label(msg, result)
            else:
                self._features(msg, result)
        expired_before = self.join.expired
        if self.join.expire(self.watermark_ms) or self.join.expired != expired_before:
            self._forget_expired()
        self._send_events(result)
        return result

    def _next_in_order(self, msg: InMessage) -> bool:
        """Keep a message only if it is its partition's next offset (see streams.checkpoint)."""
        key = f"{msg.topic}:{msg.partition}"
        at = self.positions.get(key)
        if at is not None and msg.offset > at and msg.topic == self.labels_topic:
            # Users write P.labels, maybe with transactions: their markers take offsets.
            at = msg.offset
        if at is None or msg.offset != at:  # not held, already in the state, or after a gap
            self.skipped += 1
            if at is not None and msg.offset > at:
                self.gaps.add(key)
            return False
        self.positions[key] = at + 1
        return True

    # -- checkpoints ------------------------------------------------------------------

    def state_bytes(self, versions: Mapping[str, int] | None = None) -> bytes:
        """Everything but the estimators (those are registry versions): for a checkpoint.

        ``versions`` (model name -> version) overrides the models' own: the versions a
        snapshot is writing, which they carry only once written.
        """
        versions = versions or {}
        models = [
            (
                s.model.spec.name,
                versions.get(s.model.spec.name, s.model.version),
                s.stage,
                s.model.samples_seen,
                s.model.metrics,
            )
            for s in self.lifecycle.served
        ]
        state = {
            "models": models,
            # Drift detectors hold closures (not picklable); they restart after a restore.
            "recent": {s.model.spec.name: s.recent for s in self.lifecycle.served},
            "history": list(self.lifecycle.history),
            "join": self.join.to_bytes(),
            "said": self._said,
            "watermark": self.watermark_ms,
            "seen": self._seen,
            "positions": dict(self.positions),
        }
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def saved_positions(data: bytes) -> dict[str, int]:
        """The ``topic:partition`` -> next offset that :meth:`state_bytes` saved."""
        # Our own checkpoint, checksummed by streams.checkpoint.
        return dict(pickle.loads(data)["positions"])

    def restore(self, data: bytes) -> list[Alert]:
        """Restore :meth:`state_bytes` and each model's version from the registry.

        A version whose artifact fails verification is refused; the model falls back to
        its newest earlier version that verifies, else to a fresh model. Each fallback is
        returned as an alert (and logged by the caller).
        """
        registry = self.lifecycle.registry
        if registry is None:
            raise LifecycleError("restoring models needs a registry (RIVERLINE_HOME/registry).")
        # Our own checkpoint, checksummed by streams.checkpoint; estimators are not in it.
        state = pickle.loads(data)
        alerts: list[Alert] = []
        order: list[Served] = []
        for name, version, stage, samples, metrics in state["models"]:
            served = next((s for s in self.lifecycle.served if s.model.spec.name == name), None)
            if served is None:
                continue  # no longer in the spec
            model = served.model
            loaded, problems = self._load_verified(registry, name, version, self.spec.hash)
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
                    model.samples_seen, model.metrics = samples, metrics
                    served.recent = state["recent"][name]
                fallback = f"the previous verified version {manifest.label}"
            if problems:
                alerts.append(
                    Alert(
                        self.spec.name,
                        "integrity",
                        f"{name}@{version}",
                        f"{' '.join(problems)} Serving {fallback} instead; it does not "
                        "reflect the events since that version.",
                    )
                )
            served.stage = stage
            order.append(served)
        rest = [s for s in self.lifecycle.served if s not in order]
        self.lifecycle.served[:] = order + rest
        self.lifecycle.history = list(state["history"])
        self.join = LabelJoin.from_bytes(state["join"])
        self._said = state["said"]
        self.watermark_ms = state["watermark"]
        self._seen = state["seen"]
        self.positions = dict(state["positions"])
        return alerts

    @staticmethod
    def _load_verified(
        registry: ModelRegistry, name: str, version: int, spec_hash: str
    ) -> tuple[tuple[Any, Manifest] | None, list[str]]:
        """The newest version <= ``version`` that verifies and was made by this spec.

        A version of another spec is never continued: a changed spec starts fresh rather
        than mixing the old model into the new one.
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

    # -- features -------------------------------------------------------------------

    def _features(self, msg: InMessage, result: StageResult) -> None:
        try:
            _, vector = decode_single_object(self.catalog, msg.value or b"", self.vector_schema)
        except DecodeError as exc:
            self._dead(msg, result, exc.reason, str(exc))
            return
        lineage = Lineage.from_headers(msg.headers)
        self._predict(msg, vector, lineage, result)

    def _dead(
        self,
        msg: InMessage,
        result: StageResult,
        reason: str,
        message: str,
        lineage: Lineage | None = None,
    ) -> None:
        dead = DeadLetter(self.stage, reason, message, self.vector_schema.label)
        result.sends.append(dead.to_message(msg, self.dlq_topic, lineage))
        result.dead[reason] += 1

    def _predict(
        self,
        msg: InMessage,
        vector: dict[str, Any],
        lineage: Lineage,
        result: StageResult,
        *,
        repeats: bool = True,
    ) -> None:
        """``repeats``: the input can repeat an event (``P.features`` after a crash of the
        features stage), so recent event ids are kept to skip it; one-pass vectors come
        once per raw offset, and keeping 200,000 ids made every checkpoint 3 MB."""
        inputs = self.spec.model.inputs
        try:
            values = vector["values"]
            # A feature with no value yet (a key's first event for since_last, zscore)
            # is left out: River's models treat a missing key as "no information".
            x: dict[str, Any] = {name: values[name] for name in inputs if values[name] is not None}
        except KeyError as exc:
            self._dead(msg, result, "missing_feature", str(exc), lineage)
            return
        event_id = lineage.event_id or str(vector["event_id"])
        if self.tracking and repeats:
            if event_id in self._seen:
                self.duplicates += 1
                return
            self._seen[event_id] = None
            while len(self._seen) > _SEEN_IDS:
                self._seen.popitem(last=False)
        event_ts = int(vector["event_ts"])
        self.watermark_ms = max(self.watermark_ms, event_ts)
        said = self.lifecycle.predict(x)
        label = vector["label"]
        predict_ts = now_ms()
        for served, prediction in said:
            champion = served is said[0][0]
            out = lineage.with_model(served.label)
            record = {
                "event_id": out.event_id,
                "pipeline": self.spec.name,
                "model": served.label,
                "schema": out.schema,
                "source": out.source,
                "features": out.features,
                "spec": out.pipeline,
                "event_ts": out.event_ts,
                "ingest_ts": out.ingest_ts,
                "predict_ts": predict_ts,
                "prediction": prediction.prediction,
                "proba": prediction.proba,
                "score": prediction.score,
                "label": label,
            }
            result.sends.append(
                OutMessage(
                    self.predictions_topic if champion else self.shadow_topic,
                    out.event_id.encode(),
                    encode_single_object(self.prediction_schema, record),
                    out.to_headers(),
                )
            )
        if label is not None or self.labels_topic is None or self.spec.model.task == "anomaly":
            self._learn(x, label, said)
        else:
            self._said[event_id] = (event_ts, [(s.model.spec.name, p) for s, p in said])
            champion_said = said[0][1]
            early = self.join.add_prediction(
                Pending(event_id, x, champion_said, said[0][0].label, event_ts)
            )
            if early is not None:
                self._joined(early[0], early[1])
        if lineage.raw_ts:
            self.latencies.append(max(0.0, (predict_ts - lineage.raw_ts) / 1000.0))
        result.ok += 1

    def _learn(self, x: dict[str, Any], y: Any, said: list[tuple[Served, Prediction]]) -> None:
        alerts, audits = self.lifecycle.learn(x, y, said)
        self.alerts += alerts
        self.audits += audits

    # -- delayed labels -------------------------------------------------------------

    def _label(self, msg: InMessage, result: StageResult) -> None:
        try:
            event_id, label = self._read_label(msg)
        except (DecodeError, ValueError, KeyError, TypeError) as exc:
            reason = exc.reason if isinstance(exc, DecodeError) else "bad_label"
            dead = DeadLetter(self.stage, reason, str(exc), self.label_schema.label)
            result.sends.append(dead.to_message(msg, self.dlq_topic))
            result.dead[reason] += 1
            return
        self.labels_read += 1
        for pending in self.join.add_label(event_id, label, now_ms=self.watermark_ms):
            self._joined(pending, label)

    def _read_label(self, msg: InMessage) -> tuple[str, Any]:
        value = msg.value or b""
        if value[:2] == _SINGLE_OBJECT:
            _, record = decode_single_object(self.catalog, value, self.label_schema)
        else:
            record = json.loads(value)
            if not isinstance(record, dict) or "label" not in record:
                raise ValueError('a JSON label is an object {"event_id": ..., "label": ...}')
        event_id = record.get("event_id") or (msg.key or b"").decode()
        if not event_id:
            raise ValueError("a label needs an event_id (field or message key)")
        return str(event_id), record["label"]

    def _joined(self, pending: Pending, label: Any) -> None:
        entry = self._said.pop(pending.event_id, None)
        names = entry[1] if entry is not None else [(self.model.spec.name, pending.said)]
        said: list[tuple[Served, Prediction]] = []
        for name, prediction in names:
            served = next((s for s in self.lifecycle.served if s.model.spec.name == name), None)
            if served is not None:
                said.append((served, prediction))
        self._learn(pending.x, label, said)

    def _forget_expired(self) -> None:
        horizon = self.watermark_ms - self.join.ttl_ms
        while self._said:
            _, (ts, _) = next(iter(self._said.items()))
            if ts >= horizon:
                break
            self._said.popitem(last=False)

    # -- alerts and audit -----------------------------------------------------------

    def _send_events(self, result: StageResult) -> None:
        if self.alerts_topic is not None:
            for alert in self.alerts:
                result.sends.append(self.alert_message(alert))
        if self.audit_topic is not None:
            for entry in self.audits:
                result.sends.append(self.audit_message(entry, actor=f"worker:{entry.who}"))

    def alert_message(self, alert: Alert, details: dict[str, str] | None = None) -> OutMessage:
        """An alert as the ``alert.avsc`` record on ``riverline.alerts``."""
        record = {
            "alert_id": uuid.uuid4().hex,
            "kind": alert.kind,
            "severity": "WARNING",
            "pipeline": alert.pipeline,
            "model": alert.model or None,
            "message": alert.message,
            "details": dict(details or {}),
            "event_id": None,
            "ts": int(alert.ts * 1000),
        }
        topic = self.alerts_topic or "riverline.alerts"
        value = encode_single_object(self.alert_schema, record)
        return OutMessage(topic, alert.pipeline.encode(), value, [])

    def audit_message(self, entry: AuditEntry, actor: str | None = None) -> OutMessage:
        """An audit entry as the ``audit.avsc`` record on ``riverline.audit``."""
        record = {
            "audit_id": uuid.uuid4().hex,
            "action": entry.action,
            "actor": actor or entry.who,
            "pipeline": entry.pipeline,
            "target": entry.after,
            "previous": entry.before,
            "reason": entry.why,
            "details": {"model": entry.model},
            "ts": int(entry.ts * 1000),
        }
        topic = self.audit_topic or "riverline.audit"
        value = encode_single_object(self.audit_schema, record)
        return OutMessage(topic, entry.pipeline.encode(), value, [])
