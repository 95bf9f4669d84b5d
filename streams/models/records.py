"""The records the models' side writes: predictions, alerts, audit entries, learning-log entries.

Each builder returns the :class:`~streams.messages.OutMessage` of one record, in Avro
single-object encoding with Riverline's own schemas (``schemas/riverline/``), so every
writer of a kind of record writes it the same way. Predictions on ``P.predictions``
follow the catalog's output framing (Confluent framing with
``RIVERLINE_OUTPUT_FORMAT=confluent``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from streams.messages import InMessage, OutMessage
from streams.models.lifecycle import Alert, AuditEntry, Served
from streams.models.model import Prediction
from streams.pipeline.lineage import Lineage
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import (
    SINGLE_OBJECT_MAGIC,
    decode_single_object,
    encode_framed,
    encode_single_object,
)

__all__ = ["LearningRecord", "RecordWriter"]


@dataclass(frozen=True)
class LearningRecord:
    """One entry of a decoupled pipeline's learning log (``learning_record.avsc``)."""

    kind: str  # VECTOR, LABEL or CONTROL
    event_id: str
    event_ts: int = 0
    source: str = ""
    x: dict[str, Any] = field(default_factory=dict)
    label: Any = None
    served_model: str = ""
    control: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, catalog: SchemaCatalog, msg: InMessage) -> LearningRecord:
        """Decode one message of the learning log (its MAC already checked).

        Raises
        ------
        DecodeError
            If it is not a ``learning_record``.
        """
        _, record = decode_single_object(
            catalog, msg.value or b"", catalog.record("learning_record")
        )
        return cls(**record)

    def as_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "event_id": self.event_id,
            "event_ts": self.event_ts,
            "source": self.source,
            "x": self.x,
            "label": self.label,
            "served_model": self.served_model,
            "control": self.control,
        }


class RecordWriter:
    """Encodes one pipeline's records for their topics."""

    def __init__(
        self,
        catalog: SchemaCatalog,
        pipeline: str,
        *,
        predictions_topic: str,
        shadow_topic: str,
        alerts_topic: str,
        audit_topic: str,
        learning_topic: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.predictions_topic = predictions_topic
        self.shadow_topic = shadow_topic
        self.alerts_topic = alerts_topic
        self.audit_topic = audit_topic
        self.learning_topic = learning_topic
        self._prediction = catalog.record("prediction")
        # Only the champion's topic follows RIVERLINE_OUTPUT_FORMAT: shadows stay internal.
        self._headers = {
            True: catalog.output_header(predictions_topic, self._prediction),
            False: SINGLE_OBJECT_MAGIC + self._prediction.fingerprint,
        }
        self._alert = catalog.record("alert")
        self._audit = catalog.record("audit")
        self._learning = catalog.record("learning_record")

    def prediction(
        self,
        served: Served,
        prediction: Prediction,
        champion: bool,
        lineage: Lineage,
        label: Any,
        predict_ts: int,
    ) -> OutMessage:
        """A ``prediction.avsc`` record, on ``P.predictions`` (champion) or the shadow topic."""
        out = lineage.with_model(served.label)
        record = {
            "event_id": out.event_id,
            "pipeline": self.pipeline,
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
            encode_framed(self._headers[champion], self._prediction, record),
            out.to_headers(),
        )

    def alert(self, alert: Alert, details: dict[str, str] | None = None) -> OutMessage:
        """An ``alert.avsc`` record on ``riverline.alerts``."""
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
        value = encode_single_object(self._alert, record)
        return OutMessage(self.alerts_topic, alert.pipeline.encode(), value, [])

    def audit(self, entry: AuditEntry, actor: str | None = None) -> OutMessage:
        """An ``audit.avsc`` record on ``riverline.audit``."""
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
        value = encode_single_object(self._audit, record)
        return OutMessage(self.audit_topic, entry.pipeline.encode(), value, [])

    def learning(self, entry: LearningRecord, headers: list[tuple[str, bytes]]) -> OutMessage:
        """A ``learning_record.avsc`` record on the learning log (one partition)."""
        if self.learning_topic is None:
            raise ValueError("this pipeline has no learning log (it is not decoupled)")
        value = encode_single_object(self._learning, entry.as_record())
        return OutMessage(self.learning_topic, entry.event_id.encode(), value, headers)
