"""Prediction: feature vectors -> a prediction per event, then learning from its label.

Prequential: each event is predicted before the model learns from it, so the prediction
a consumer sees is the one the metrics score. The models are a
:class:`~streams.models.lifecycle.ModelLifecycle`: the champion's prediction goes to
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
import uuid
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.errors import DecodeError
from streams.features.stage import Vector
from streams.messages import InMessage, OutMessage
from streams.models.labels import LabelJoin, Pending, read_label
from streams.models.lifecycle import Alert, AuditEntry, LifecycleError, ModelLifecycle, Served
from streams.models.metric_state import MetricStateError, metric_from_data, metric_to_data
from streams.models.model import OnlineModel, Prediction
from streams.models.registry import Manifest, ModelRegistry, PendingVersion, RegistryError
from streams.pipeline.lineage import Lineage
from streams.pipeline.stage import DeadLetter, StageResult, now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object, encode_single_object
from streams.spec import PipelineSpec
from streams.state.checkpoint import CheckpointError

__all__ = ["DEFAULT_LABEL_TTL_MS", "STATE_FORMAT", "Predictor"]

#: A day of event time: labels later than that are counted as expired.
DEFAULT_LABEL_TTL_MS = 24 * 3600 * 1000

_SINGLE_OBJECT = b"\xc3\x01"
#: Event ids remembered to drop the features stage's repeats after a crash.
_SEEN_IDS = 200_000
#: Names the JSON document of :meth:`Predictor.state_bytes`; bump the version on change.
STATE_FORMAT = ("riverline.predict_state", 1)


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
        label_max_pending: int = 100_000,
        label_max_bytes: int = 32 * 1024 * 1024,
        max_id_bytes: int = 1024,
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
        #: Longest event id a delayed label may name (``RIVERLINE_MAX_ID_BYTES``).
        self.max_id_bytes = max_id_bytes
        self.join = LabelJoin(label_ttl_ms, label_max_pending, label_max_bytes)
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
        #: Highest offset handed to this stage per partition, and after a rewind
        #: (:meth:`rewound`) the offsets above which messages are stale until the rewind's
        #: first message arrives.
        self._handed: dict[str, int] = {}
        self._stale_above: dict[str, int] = {}

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
            parent=model.version,
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

        A :class:`~streams.features.stage.Vector` (one-pass, :mod:`streams.pipeline.onepass`) is
        predicted as it is: its offset was checked by the caller, which also keeps
        ``positions`` of its source topic. Any failure with one message makes it a dead
        letter; the batch goes on.
        """
        result = StageResult()
        self.start_batch()
        for msg in batch:
            if isinstance(msg, Vector):  # computed in this pass, selected in order already
                try:
                    result.sends += self.predict_one(msg)
                    result.ok += 1
                except Exception as exc:
                    self.dead(msg.msg, exc, result, msg.lineage)
                continue
            if not self.in_order(msg):
                continue
            if self.labels_topic is not None and msg.topic == self.labels_topic:
                self.take_label(msg, result)
            else:
                self._features(msg, result)
        self.finish_batch(result)
        return result

    def start_batch(self) -> None:
        """Forget the last batch's latencies, alerts and audit entries."""
        self.latencies = []
        self.alerts = []
        self.audits = []

    def finish_batch(self, result: StageResult) -> None:
        """Expire what waited too long for a label; add the batch's alerts and audits."""
        self.join.expire(self.watermark_ms)
        self._send_events(result)

    def dead(
        self,
        msg: InMessage,
        exc: BaseException,
        result: StageResult,
        lineage: Lineage | None = None,
    ) -> None:
        """Add the dead letter of ``msg`` for ``exc`` (a reason, or an unexpected error)."""
        schema = self.label_schema if msg.topic == self.labels_topic else self.vector_schema
        if isinstance(exc, DecodeError):
            dead = DeadLetter(self.stage, exc.reason, str(exc), schema.label)
        else:
            dead = DeadLetter.of(self.stage, exc, schema.label)
        result.sends.append(dead.to_message(msg, self.dlq_topic, lineage))
        result.dead[dead.reason] += 1

    def in_order(self, msg: InMessage) -> bool:
        """Whether to take ``msg``: with ``tracking``, only if it is its partition's next
        offset (then its position moves past it; see :mod:`streams.state.checkpoint`)."""
        if not self.tracking:
            return True
        key = f"{msg.topic}:{msg.partition}"
        at = self.positions.get(key)
        stale = self._stale_above.get(key)
        if stale is not None:
            if msg.offset > stale:  # queued before a rewind; the rewind delivers it again
                self.skipped += 1
                return False
            del self._stale_above[key]
        if at is not None and msg.offset >= self._handed.get(key, -1):
            self._handed[key] = msg.offset
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

    def handed(self) -> dict[str, int]:
        """The highest offset taken so far per partition (for :meth:`rewound`)."""
        return dict(self._handed)

    def rewound(self, handed: Mapping[str, int]) -> None:
        """The consumer was sought back to ``positions`` after a failed batch.

        Messages queued before the seek are still delivered first: for a partition whose
        handed offset (before the rewind) is at or past its position, messages above it
        are skipped until the seek's first one (at or below it) arrives.
        """
        self._handed = {}
        for key, offset in handed.items():
            at = self.positions.get(key)
            if at is not None and offset >= at:
                self._stale_above[key] = offset

    def reset(self) -> None:
        """Fresh models and empty state, as at construction (before a restore)."""
        self.lifecycle = ModelLifecycle(self.spec, self.lifecycle.registry)
        self.join = LabelJoin(self.join.ttl_ms, self.join.max_pending, self.join.max_bytes)
        self.watermark_ms = 0
        self.positions = {}
        self._seen.clear()
        self.gaps.clear()
        self._handed = {}
        self._stale_above = {}

    # -- checkpoints ------------------------------------------------------------------

    def state_bytes(self, versions: Mapping[str, int] | None = None) -> bytes:
        """Everything but the estimators (those are registry versions), as JSON data.

        ``versions`` (model name -> version) overrides the models' own: the versions a
        snapshot is writing, which they carry only once written. Drift detectors are not
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
        state = {
            "format": STATE_FORMAT[0],
            "version": STATE_FORMAT[1],
            "models": models,
            "history": [[name, version] for name, version in self.lifecycle.history],
            "join": self.join.to_data(),
            "watermark": self.watermark_ms,
            "seen": list(self._seen),
            "positions": dict(self.positions),
        }
        return json.dumps(state, separators=(",", ":")).encode()

    @staticmethod
    def _read_state(data: bytes) -> dict[str, Any]:
        """The JSON document of :meth:`state_bytes`, checked for its format."""
        try:
            state = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CheckpointError(f"the predict state is not JSON: {exc}.") from exc
        if not isinstance(state, dict) or [state.get("format"), state.get("version")] != list(
            STATE_FORMAT
        ):
            raise CheckpointError(
                f"the predict state is not a {STATE_FORMAT[0]} document of version "
                f"{STATE_FORMAT[1]}; it was written by another Riverline version."
            )
        return state

    @classmethod
    def saved_positions(cls, data: bytes) -> dict[str, int]:
        """The ``topic:partition`` -> next offset that :meth:`state_bytes` saved.

        Raises
        ------
        CheckpointError
            If ``data`` is not a predict state this version writes.
        """
        try:
            return {str(k): int(v) for k, v in cls._read_state(data)["positions"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"the predict state's positions are malformed: {exc!r}.") from exc

    def restore(self, data: bytes) -> list[Alert]:
        """Restore :meth:`state_bytes` and each model's version from the registry.

        A version whose artifact fails verification is refused; the model falls back to
        its newest earlier version that verifies, else to a fresh model. Each fallback is
        returned as an alert (and logged by the caller).

        Raises
        ------
        CheckpointError
            If ``data`` is not a predict state this version writes; nothing is changed.
        """
        registry = self.lifecycle.registry
        if registry is None:
            raise LifecycleError("restoring models needs a registry (RIVERLINE_HOME/registry).")
        state = self._read_state(data)
        try:
            models = [_SavedModel.of(entry) for entry in state["models"]]
            history = [(str(name), int(version)) for name, version in state["history"]]
            join = LabelJoin.from_data(state["join"], self.join.max_pending, self.join.max_bytes)
            watermark = int(state["watermark"])
            seen = OrderedDict((str(eid), None) for eid in state["seen"])
            positions = {str(k): int(v) for k, v in state["positions"].items()}
        except (KeyError, TypeError, ValueError, AttributeError, MetricStateError) as exc:
            raise CheckpointError(f"the predict state is malformed: {exc!r}.") from exc
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
        self._seen = seen
        self.positions = positions
        return alerts

    def _restore_model(
        self, registry: ModelRegistry, served: Served, saved: _SavedModel
    ) -> Alert | None:
        """Load the saved version of one model (or its fallback); an alert if it fell back."""
        name, version = saved.name, saved.version
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
            lineage = Lineage.from_headers(msg.headers)
            result.sends += self._predict(vector, lineage)
            result.ok += 1
        except Exception as exc:
            self.dead(msg, exc, result)

    def predict_one(self, vector: Vector) -> list[OutMessage]:
        """Predict one vector (and learn, when its label is in it); its messages.

        Raises
        ------
        DecodeError
            ``missing_feature``: the vector lacks an input the model reads.
        Exception
            Anything else is a fault in handling this one event; the caller makes it a
            dead letter (:meth:`dead`) and goes on with the batch.
        """
        return self._predict(vector.vector, vector.lineage, repeats=False)

    def _predict(
        self, vector: dict[str, Any], lineage: Lineage, *, repeats: bool = True
    ) -> list[OutMessage]:
        """``repeats``: the input can repeat an event (``P.features`` after a crash of the
        features stage), so recent event ids are kept to skip it; one-pass vectors come
        once per raw offset, and keeping 200,000 ids made every checkpoint 3 MB."""
        inputs = self.spec.model.inputs
        values = vector["values"]
        missing = [name for name in inputs if name not in values]
        if missing:
            raise DecodeError(
                "missing_feature",
                f"the feature vector has no {', '.join(map(repr, missing))}: the model "
                f"reads {', '.join(inputs)}.",
            )
        # A feature with no value yet (a key's first event for since_last, zscore) is left
        # out: River's models treat a missing key as "no information".
        x: dict[str, Any] = {name: values[name] for name in inputs if values[name] is not None}
        event_id = lineage.event_id or str(vector["event_id"])
        if self.tracking and repeats:
            if event_id in self._seen:
                self.duplicates += 1
                return []
            self._seen[event_id] = None
            while len(self._seen) > _SEEN_IDS:
                self._seen.popitem(last=False)
        event_ts = int(vector["event_ts"])
        said = self.lifecycle.predict(x)
        label = vector["label"]
        predict_ts = now_ms()
        sends = [
            self._prediction_message(
                served, prediction, served is said[0][0], lineage, label, predict_ts
            )
            for served, prediction in said
        ]
        if label is not None or self.labels_topic is None or self.spec.model.task == "anomaly":
            self._learn(x, label, said)
        else:
            early = self.join.add_prediction(
                Pending(event_id, x, tuple((s.model.spec.name, p) for s, p in said), event_ts)
            )
            if early is not None:
                self._joined(early[0], early[1])
        # Only now: an event that failed above moves no clock.
        self.watermark_ms = max(self.watermark_ms, event_ts)
        if lineage.raw_ts:
            self.latencies.append(max(0.0, (predict_ts - lineage.raw_ts) / 1000.0))
        return sends

    def _prediction_message(
        self,
        served: Served,
        prediction: Prediction,
        champion: bool,
        lineage: Lineage,
        label: Any,
        predict_ts: int,
    ) -> OutMessage:
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
        return OutMessage(
            self.predictions_topic if champion else self.shadow_topic,
            out.event_id.encode(),
            encode_single_object(self.prediction_schema, record),
            out.to_headers(),
        )

    def _learn(self, x: dict[str, Any], y: Any, said: list[tuple[Served, Prediction]]) -> None:
        alerts, audits = self.lifecycle.learn(x, y, said)
        self.alerts += alerts
        self.audits += audits

    # -- delayed labels -------------------------------------------------------------

    def take_label(self, msg: InMessage, result: StageResult) -> None:
        """Join a delayed label from ``P.labels`` (and learn); a bad one is a dead letter
        (its reason from :func:`streams.models.labels.read_label`)."""
        try:
            event_id, label = read_label(
                msg.value,
                msg.key,
                catalog=self.catalog,
                label_schema=self.label_schema,
                task=self.spec.model.task,
                max_id_bytes=self.max_id_bytes,
            )
            self.labels_read += 1
            for pending in self.join.add_label(event_id, label, now_ms=self.watermark_ms):
                self._joined(pending, label)
        except Exception as exc:  # this label's alone: a dead letter, the batch goes on
            self.dead(msg, exc, result)

    def _joined(self, pending: Pending, label: Any) -> None:
        said: list[tuple[Served, Prediction]] = []
        for name, prediction in pending.said:
            served = next((s for s in self.lifecycle.served if s.model.spec.name == name), None)
            if served is not None:
                said.append((served, prediction))
        self._learn(pending.x, label, said)

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


@dataclass(frozen=True)
class _SavedModel:
    """One served model's entry in the predict state (:meth:`Predictor.state_bytes`)."""

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
