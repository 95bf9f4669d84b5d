"""The predict stage: feature vectors -> a prediction per event; delayed labels joined.

Prequential: each event is predicted before any model learns from it, so the prediction a
consumer sees is the one the metrics score. The champion's prediction goes to
``P.predictions`` and carries its ``name@version`` (``rl.model`` and the ``model``
field); each shadow's goes to ``P.predictions.shadow``.

Labels come either in the event (the vector's ``label``) or later on ``P.labels``, keyed
by event id, as Avro single-object ``label.avsc`` or JSON ``{"event_id": ..., "label":
...}`` (checked by :func:`streams.models.labels.read_label`).

Two modes:

* **single** (a pipeline's one worker): the stage learns too, through its
  :class:`~streams.models.learning.Learning`: an event with its label at once, a delayed
  label joined with what the models saw and said.
* **serve** (a decoupled pipeline's serving workers): the models are read-only replicas of
  the versions the learner publishes; each predicted event and each delayed label goes to
  the learning log ``P.learn`` instead (:class:`~streams.models.records.LearningRecord`),
  for the one learner to learn in one order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streams.errors import DecodeError
from streams.features.stage import Vector
from streams.messages import InMessage, OutMessage
from streams.models.labels import LabelJoin, read_label
from streams.models.learning import DEFAULT_LABEL_TTL_MS, Learning, read_state, state_bytes
from streams.models.lifecycle import Alert, AuditEntry, ModelLifecycle, Served
from streams.models.model import OnlineModel
from streams.models.records import LearningRecord, RecordWriter
from streams.models.registry import Manifest, PendingVersion
from streams.pipeline.lineage import Lineage
from streams.pipeline.stage import DeadLetter, StageResult, now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.spec import PipelineSpec
from streams.state.checkpoint import CheckpointError

__all__ = ["DEFAULT_LABEL_TTL_MS", "STATE_FORMAT", "Predictor"]

#: Names the JSON document of :meth:`Predictor.state_bytes`; bump the version on change.
STATE_FORMAT = ("riverline.predict_state", 2)


class Predictor:
    """Predict and publish for one pipeline's champion and shadows; learn, or log to learn."""

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
        learning_topic: str | None = None,
        label_ttl_ms: int = DEFAULT_LABEL_TTL_MS,
        label_max_pending: int = 100_000,
        label_max_bytes: int = 32 * 1024 * 1024,
        max_id_bytes: int = 1024,
        worker_id: str = "worker",
    ) -> None:
        """``learning_topic`` set: the serve mode (a decoupled pipeline's serving worker)."""
        self.spec = spec
        self.catalog = catalog
        self.vector_schema = catalog.record("feature_vector")
        self.label_schema = catalog.record("label")
        self.learning = Learning(
            spec,
            lifecycle,
            delayed_labels=labels_topic is not None,
            label_ttl_ms=label_ttl_ms,
            label_max_pending=label_max_pending,
            label_max_bytes=label_max_bytes,
        )
        if model is not None:
            self.lifecycle.champion.model = model
        self.labels_topic = labels_topic
        self.dlq_topic = dlq_topic
        self.alerts_topic = alerts_topic
        self.audit_topic = audit_topic
        self.learning_topic = learning_topic
        self.records = RecordWriter(
            catalog,
            spec.name,
            predictions_topic=predictions_topic,
            shadow_topic=shadow_topic or f"{predictions_topic}.shadow",
            alerts_topic=alerts_topic or "riverline.alerts",
            audit_topic=audit_topic or "riverline.audit",
            learning_topic=learning_topic,
        )
        self.worker_id = worker_id
        #: Longest event id a delayed label may name (``RIVERLINE_MAX_ID_BYTES``).
        self.max_id_bytes = max_id_bytes
        self._init_positions()

    def _init_positions(self) -> None:
        """Where this stage is in its inputs: nowhere yet."""
        #: End-to-end latencies (seconds) of the last batch, for the worker's histogram.
        self.latencies: list[float] = []
        #: ``topic:partition`` -> next input offset, when the worker owns the commits;
        #: empty means every message is processed as it comes.
        self.positions: dict[str, int] = {}
        self.tracking = False
        self.skipped = 0
        #: Highest offset handed to this stage per partition, and after a rewind
        #: (:meth:`rewound`) the offsets above which messages are stale until the rewind's
        #: first message arrives.
        self._handed: dict[str, int] = {}
        self._stale_above: dict[str, int] = {}

    @property
    def serving(self) -> bool:
        """The serve mode: predictions from replicas, learning inputs to the learning log."""
        return self.learning_topic is not None

    @property
    def lifecycle(self) -> ModelLifecycle:
        return self.learning.lifecycle

    @property
    def join(self) -> LabelJoin:
        return self.learning.join

    @property
    def model(self) -> OnlineModel:
        """The champion (whose predictions consumers see)."""
        return self.learning.model

    @property
    def alerts(self) -> list[Alert]:
        """Alerts of the last batch (also sent), for the worker's metrics."""
        return self.learning.alerts

    @property
    def audits(self) -> list[AuditEntry]:
        """Audit entries of the last batch (also sent), for the worker's metrics."""
        return self.learning.audits

    @property
    def labels_read(self) -> int:
        return self.learning.labels_read

    def register_fresh(self) -> list[str]:
        return self.learning.register_fresh()

    def save(self, served: Served, note: str, offsets: dict[str, int] | None = None) -> Manifest:
        return self.learning.save(served, note, offsets)

    def prepare(
        self, served: Served, note: str, offsets: dict[str, int] | None = None
    ) -> PendingVersion:
        return self.learning.prepare(served, note, offsets)

    def promote(self, name: str, who: str, why: str) -> AuditEntry:
        return self.learning.promote(name, who, why)

    # -- batches ----------------------------------------------------------------------

    def process(self, batch: Sequence[InMessage | Vector]) -> StageResult:
        """Predict (and learn) a micro-batch of feature vectors and labels, in order.

        Each vector was computed and selected in order by the caller, which keeps
        ``positions`` of its source topic; labels go through :meth:`in_order`. Any
        failure with one message makes it a dead letter; the batch goes on.
        """
        result = StageResult()
        self.start_batch()
        for msg in batch:
            if isinstance(msg, Vector):
                try:
                    result.sends += self.predict_one(msg)
                    result.ok += 1
                except Exception as exc:
                    self.dead(msg.msg, exc, result, msg.lineage)
            elif self.in_order(msg):
                self.take_label(msg, result)
        self.finish_batch(result)
        return result

    def start_batch(self) -> None:
        """Forget the last batch's latencies, alerts and audit entries."""
        self.latencies = []
        self.learning.start_batch()

    def finish_batch(self, result: StageResult) -> None:
        """Expire what waited too long for a label; add the batch's alerts and audits."""
        self.learning.expire()
        if self.alerts_topic is not None:
            result.sends += [self.records.alert(a) for a in self.alerts]
        if self.audit_topic is not None:
            result.sends += [self.records.audit(e, actor=f"worker:{e.who}") for e in self.audits]

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

    def predict_one(self, vector: Vector) -> list[OutMessage]:
        """Predict one vector (single mode: and learn, when its label is in it); its messages.

        Raises
        ------
        DecodeError
            ``missing_feature``: the vector lacks an input the model reads.
        Exception
            Anything else is a fault in handling this one event; the caller makes it a
            dead letter (:meth:`dead`) and goes on with the batch.
        """
        values, lineage = vector.vector["values"], vector.lineage
        inputs = self.spec.model.inputs
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
        event_id = lineage.event_id or str(vector.vector["event_id"])
        event_ts = int(vector.vector["event_ts"])
        label = vector.vector["label"]
        said = self.learning.predict(x)
        predict_ts = now_ms()
        champion = said[0][0]
        sends = [
            self.records.prediction(s, p, s is champion, lineage, label, predict_ts)
            for s, p in said
        ]
        if self.serving:
            entry = LearningRecord(
                "VECTOR", event_id, event_ts, lineage.source, x, label, champion.label
            )
            sends.append(
                self.records.learning(entry, lineage.with_model(champion.label).to_headers())
            )
        else:
            self.learning.observe(event_id, x, event_ts, label, said)
        if lineage.raw_ts:
            self.latencies.append(max(0.0, (predict_ts - lineage.raw_ts) / 1000.0))
        return sends

    def take_label(self, msg: InMessage, result: StageResult) -> None:
        """A delayed label from ``P.labels``: learned (single mode) or logged for the
        learner (serve mode); a bad one is a dead letter (its reason from
        :func:`streams.models.labels.read_label`)."""
        try:
            event_id, label = read_label(
                msg.value,
                msg.key,
                catalog=self.catalog,
                label_schema=self.label_schema,
                task=self.spec.model.task,
                max_id_bytes=self.max_id_bytes,
            )
            if self.serving:
                entry = LearningRecord("LABEL", event_id, 0, msg.source, {}, label)
                result.sends.append(self.records.learning(entry, []))
            else:
                self.learning.label(event_id, label)
        except Exception as exc:  # this label's alone: a dead letter, the batch goes on
            self.dead(msg, exc, result)

    def alert_message(self, alert: Alert, details: dict[str, str] | None = None) -> OutMessage:
        """An alert as the ``alert.avsc`` record on ``riverline.alerts``."""
        return self.records.alert(alert, details)

    def audit_message(self, entry: AuditEntry, actor: str | None = None) -> OutMessage:
        """An audit entry as the ``audit.avsc`` record on ``riverline.audit``."""
        return self.records.audit(entry, actor)

    # -- positions --------------------------------------------------------------------

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
        if at is None or msg.offset != at:  # not held, or already in the state
            self.skipped += 1
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

    def reset(self, *, models: bool = True) -> None:
        """Empty positions (and, with ``models``, fresh models and an empty join), as at
        construction: before a restore."""
        if models:
            self.learning.reset()
        self.positions = {}
        self._handed = {}
        self._stale_above = {}

    # -- checkpoints ------------------------------------------------------------------

    def state_bytes(self, versions: Mapping[str, int] | None = None) -> bytes:
        """The models' state and the input positions, as the JSON of a checkpoint.

        ``versions`` (model name -> version) overrides the models' own: the versions a
        checkpoint is writing, which they carry only once written.
        """
        document = {**self.learning.state_data(versions), "positions": dict(self.positions)}
        return state_bytes(STATE_FORMAT, document)

    @classmethod
    def saved_positions(cls, data: bytes) -> dict[str, int]:
        """The ``topic:partition`` -> next offset that :meth:`state_bytes` saved.

        Raises
        ------
        CheckpointError
            If ``data`` is not a predict state this version writes.
        """
        try:
            positions = read_state(STATE_FORMAT, data)["positions"]
            return {str(k): int(v) for k, v in positions.items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"the predict state's positions are malformed: {exc!r}.") from exc

    def restore(self, data: bytes) -> list[Alert]:
        """Restore :meth:`state_bytes`: the models from the registry, their state, the
        positions. Fallbacks to an earlier verified version come back as alerts.

        Raises
        ------
        CheckpointError
            If ``data`` is not a predict state this version writes; nothing is changed.
        """
        state = read_state(STATE_FORMAT, data)
        positions = self.saved_positions(data)
        alerts = self.learning.restore_data(state)
        self.positions = positions
        return alerts
