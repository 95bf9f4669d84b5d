"""The learner of a decoupled pipeline: the learning log, learned in its one order.

Serving workers append to ``P.learn`` (one partition) what their models predicted
(``VECTOR``, with the model inputs and the label if the event had one) and the delayed
labels they received (``LABEL``); operators' promotions, rollbacks and resets come the same
way (``CONTROL``). The one active learner reads it in offset order and learns exactly as a
single worker would: each event is predicted by the learner's own models before they learn
from it (prequential, so its metrics and drift detection see what it would have said),
labels are joined by event id, and the promotion policy and drift actions apply. The
order is the log's, so replaying the log from its start reproduces the models bit for bit.

Serving workers are at-least-once: after one of them crashes, or after a raw partition
moves between them, some events are appended again. Each record names where it came from
(the raw or labels ``topic:partition:offset``), and a serving worker reads each partition
in order, so a record whose source offset is not above the last one learned from that
partition is such a repeat, and is skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.errors import DecodeError
from streams.messages import InMessage
from streams.models.learning import DEFAULT_LABEL_TTL_MS, Learning, read_state, state_bytes
from streams.models.lifecycle import AuditEntry, LifecycleError, ModelLifecycle
from streams.models.records import LearningRecord, RecordWriter
from streams.pipeline.stage import DeadLetter, StageResult
from streams.serialization.catalog import SchemaCatalog
from streams.spec import PipelineSpec
from streams.state.checkpoint import CheckpointError
from streams.trust.records import RecordSigner

__all__ = ["CONTROL_ACTIONS", "LEARNER_FORMAT", "Learner"]

#: Names the JSON document of :meth:`Learner.state_bytes`; bump the version on change.
LEARNER_FORMAT = ("riverline.learner_state", 1)
#: What a ``CONTROL`` record may ask for.
CONTROL_ACTIONS = ("promote", "rollback", "reset")


class Learner:
    """Learns a decoupled pipeline's learning log (``P.learn``), in its offset order."""

    stage = "learn"

    def __init__(
        self,
        spec: PipelineSpec,
        catalog: SchemaCatalog,
        *,
        learning_topic: str,
        dlq_topic: str,
        lifecycle: ModelLifecycle | None = None,
        alerts_topic: str = "riverline.alerts",
        audit_topic: str = "riverline.audit",
        predictions_topic: str = "",
        signer: RecordSigner | None = None,
        label_ttl_ms: int = DEFAULT_LABEL_TTL_MS,
        label_max_pending: int = 100_000,
        label_max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.spec = spec
        self.catalog = catalog
        self.learning_topic = learning_topic
        self.dlq_topic = dlq_topic
        #: With a signer, only records whose ``rl.mac`` verifies are learned: nobody but
        #: the serving workers (and operators through them) may teach the learner.
        self.signer = signer
        self.learning = Learning(
            spec,
            lifecycle,
            delayed_labels=True,
            label_ttl_ms=label_ttl_ms,
            label_max_pending=label_max_pending,
            label_max_bytes=label_max_bytes,
        )
        self.records = RecordWriter(
            catalog,
            spec.name,
            predictions_topic=predictions_topic,
            shadow_topic=f"{predictions_topic}.shadow",
            alerts_topic=alerts_topic,
            audit_topic=audit_topic,
            learning_topic=learning_topic,
        )
        #: The next offset of ``P.learn`` (partition 0) to learn.
        self.position = 0
        #: ``topic:partition`` a record came from -> the last offset learned from it.
        self.learned_from: dict[str, int] = {}
        #: Records learned, and records skipped as a serving worker's repeats (all time).
        self.learned = 0
        self.repeats = 0

    @property
    def lifecycle(self) -> ModelLifecycle:
        return self.learning.lifecycle

    # -- batches ----------------------------------------------------------------------

    def process(self, batch: list[InMessage]) -> StageResult:
        """Learn a batch of ``P.learn`` messages (their MACs checked), in offset order."""
        result = StageResult()
        self.learning.start_batch()
        for msg in batch:
            if msg.offset < self.position:
                continue  # already learned: the consumer went back to the checkpoint
            # Offsets may skip (transaction markers); the log is read in order.
            self.position = msg.offset + 1
            try:
                if self.signer is not None and not self.signer.verify(
                    msg.topic, msg.key, msg.value, msg.headers
                ):
                    raise DecodeError(
                        "integrity", "the record has no valid rl.mac: Riverline did not write it"
                    )
                self.take(LearningRecord.read(self.catalog, msg))
                # Per record, not per batch: what expires never depends on batch bounds,
                # so a replay in other batches learns the same.
                self.learning.expire()
                result.ok += 1
            except Exception as exc:  # this record's alone: a dead letter, the log goes on
                reason = exc.reason if isinstance(exc, DecodeError) else "stage_error"
                dead = (
                    DeadLetter(self.stage, reason, str(exc))
                    if isinstance(exc, DecodeError)
                    else DeadLetter.of(self.stage, exc)
                )
                result.sends.append(dead.to_message(msg, self.dlq_topic))
                result.dead[reason] += 1
        result.sends += [self.records.alert(a) for a in self.learning.alerts]
        result.sends += [self.records.audit(e, f"learner:{e.who}") for e in self.learning.audits]
        return result

    def take(self, record: LearningRecord) -> None:
        """Learn one record of the log (a repeat of one already learned is skipped)."""
        if not self._first_time(record.source) and record.kind != "CONTROL":
            self.repeats += 1
            return
        if record.kind == "VECTOR":
            said = self.learning.predict(record.x)
            self.learning.observe(record.event_id, record.x, record.event_ts, record.label, said)
        elif record.kind == "LABEL":
            self.learning.label(record.event_id, record.label)
        else:
            self.learning.audits.append(self._control(record))
        self.learned += 1

    def _first_time(self, source: str) -> bool:
        where, _, offset = source.rpartition(":")
        if not where or not offset.isdigit():
            return True
        last = self.learned_from.get(where, -1)
        if int(offset) <= last:
            return False
        self.learned_from[where] = int(offset)
        return True

    def _control(self, record: LearningRecord) -> AuditEntry:
        """An operator's action, in the log's order (so a replay makes it again)."""
        action = record.control.get("action", "")
        who, why = record.source or "operator", record.control.get("why", "")
        if action == "promote":
            return self.learning.promote(record.control.get("model", ""), who, why)
        if action == "rollback":
            return self.lifecycle.rollback(who, why)
        if action == "reset":
            return self.lifecycle.reset(who, why)
        raise LifecycleError(
            f"unknown action {action!r} in the learning log; known: {', '.join(CONTROL_ACTIONS)}."
        )

    # -- checkpoints ------------------------------------------------------------------

    def state_bytes(self, versions: Mapping[str, int] | None = None) -> bytes:
        """The models' state, the log position and the repeat marks, as checkpoint JSON."""
        document: dict[str, Any] = {
            **self.learning.state_data(versions),
            "position": self.position,
            "learned_from": dict(self.learned_from),
            "learned": self.learned,
            "repeats": self.repeats,
        }
        return state_bytes(LEARNER_FORMAT, document)

    def restore(self, data: bytes) -> list[Any]:
        """Restore :meth:`state_bytes` (the models from the registry); fallbacks as alerts.

        Raises
        ------
        CheckpointError
            If ``data`` is not a learner state this version writes; nothing is changed.
        """
        state = read_state(LEARNER_FORMAT, data)
        try:
            position = int(state["position"])
            learned_from = {str(k): int(v) for k, v in state["learned_from"].items()}
            learned, repeats = int(state["learned"]), int(state["repeats"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"the learner state is malformed: {exc!r}.") from exc
        alerts = self.learning.restore_data(state)
        self.position, self.learned_from = position, learned_from
        self.learned, self.repeats = learned, repeats
        return alerts

    def reset(self) -> None:
        """Fresh models at the start of the log (before a restore)."""
        self.learning.reset()
        self.position = 0
        self.learned_from = {}
        self.learned = 0
        self.repeats = 0
