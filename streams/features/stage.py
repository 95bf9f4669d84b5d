"""Featurization: canonical events -> feature vectors (raw fields + derived features).

Per-key state lives in one ``FeatureState`` per partition of ``P.events`` it holds, with
the partition's next offset, so each partition can be checkpointed on its own
(:mod:`streams.state.checkpoint`). A micro-batch is decoded, turned into columns and each Numba
kernel is called once per partition in the batch.

Events already reflected in a partition's state (a replay after a restart) and events of
partitions not held are skipped: see :func:`streams.state.checkpoint.select_unseen`.

Late events: with ``late_policy = "dead_letter"`` in ``[features]``, an event more than
``allowed_lateness`` seconds older than its key's latest event time goes to the dead-letter
topic with reason ``late`` (its original bytes, stage ``features``) and changes no state.

Bounded state: with ``key_ttl`` or ``max_keys`` in ``[features]`` each partition's state
evicts keys (:mod:`streams.features.engine`); :meth:`Featurization.eviction_totals` and
:meth:`Featurization.state_bytes` are what a worker exports as metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from streams.errors import DecodeError, FeatureError
from streams.features.engine import FeatureSet, FeatureState
from streams.ingestion.stage import epoch_ms
from streams.messages import InMessage, OutMessage
from streams.pipeline.lineage import Lineage
from streams.pipeline.stage import DeadLetter, now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import encode_framed
from streams.spec import PipelineSpec
from streams.state.checkpoint import Checkpoint, CheckpointError, Selection, select_unseen

__all__ = ["BAD_FEATURE_INPUT", "LATE", "Featurization", "HeldPartition", "Vector"]

LATE = "late"
#: The dead-letter reason of an event whose values the feature engine refuses.
BAD_FEATURE_INPUT = "bad_feature_input"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return epoch_ms(value)
    return value


@dataclass(frozen=True, slots=True)
class Vector:
    """A feature vector computed in this process, for the predict stage (one-pass)."""

    msg: InMessage
    """The message it was computed from (in one-pass, the raw message)."""
    vector: dict[str, Any]
    """The ``feature_vector.avsc`` record, as encoded on ``P.features``."""
    lineage: Lineage
    """Its lineage, with the feature set."""
    out: OutMessage
    """Its ``P.features`` message."""


@dataclass
class HeldPartition:
    """A raw partition's feature state and the next offset it has not seen."""

    state: FeatureState
    offset: int


class Featurization:
    """Compute a pipeline's feature set over micro-batches of events.

    With ``hold_new_partitions`` (the default) a partition is held, with empty state, from
    the first event seen of it. A worker with checkpoints passes False and calls
    :meth:`restore` / :meth:`start` on assignment and :meth:`release` on revocation.
    """

    stage = "features"

    def __init__(
        self,
        spec: PipelineSpec,
        catalog: SchemaCatalog,
        *,
        features_topic: str,
        dlq_topic: str,
        hold_new_partitions: bool = True,
    ) -> None:
        self.spec = spec
        self.catalog = catalog
        self.reader = catalog.latest(spec.subject)
        self.vector_schema = catalog.record("feature_vector")
        self.feature_set = FeatureSet.from_spec(spec.features)
        self.features_topic = features_topic
        self._vector_header = catalog.output_header(features_topic, self.vector_schema)
        self.dlq_topic = dlq_topic
        self.hold_new_partitions = hold_new_partitions
        self.held: dict[int, HeldPartition] = {}
        #: Events skipped (totals since start): the state already reflects them, one
        #: before them is missing, their partition is not held (streams.state.checkpoint).
        self.replayed = 0
        self.ahead = 0
        self.unowned = 0
        #: Events ingest wrote twice (same raw source), skipped.
        self._skip = {spec.id_field, spec.time_field, spec.model.target}

    # -- partitions and checkpoints ------------------------------------------------------

    def start(self, partition: int, offset: int = 0) -> None:
        """Hold ``partition`` with empty state, from ``offset``."""
        self.held[partition] = HeldPartition(self.feature_set.new_state(), offset)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Hold the checkpoint's partition with its state and offset.

        Raises
        ------
        CheckpointError
            If the checkpoint belongs to another pipeline or feature set, or its state
            cannot be read; the caller decides whether to :meth:`start` afresh.
        """
        fs = self.feature_set
        if checkpoint.pipeline != self.spec.name:
            raise CheckpointError(
                f"checkpoint {checkpoint.key} belongs to pipeline {checkpoint.pipeline!r}, "
                f"not {self.spec.name!r}."
            )
        if checkpoint.feature_set != fs.label:
            raise CheckpointError(
                f"checkpoint {checkpoint.key} holds state of feature set "
                f"{checkpoint.feature_set}, not {fs.label}: the [features] table changed."
            )
        try:
            state = FeatureState.from_bytes(checkpoint.state)
        except FeatureError as exc:
            raise CheckpointError(f"checkpoint {checkpoint.key}: {exc}") from exc
        if state.label != fs.label:
            raise CheckpointError(
                f"checkpoint {checkpoint.key} holds a state labelled {state.label}, not {fs.label}."
            )
        self.held[checkpoint.partition] = HeldPartition(state, checkpoint.offset)

    def release(self, partition: int) -> None:
        """Forget a partition (revoked): its events are skipped until it is held again."""
        self.held.pop(partition, None)

    def eviction_totals(self) -> Mapping[str, int]:
        """Keys evicted from this stage's states since start, by cause (ttl, cap)."""
        return self.feature_set.evictions

    def state_bytes(self) -> int:
        """Bytes of the feature state held, over every partition (``FeatureState.nbytes``)."""
        return sum(held.state.nbytes() for held in self.held.values())

    def positions(self) -> dict[int, int]:
        """Next offset per held partition."""
        return {p: h.offset for p, h in self.held.items()}

    def checkpoint(self, partition: int) -> Checkpoint:
        """The held partition's state and next offset, ready to save."""
        return self.checkpoint_later(partition)()

    def checkpoint_later(self, partition: int) -> Callable[[], Checkpoint]:
        """:meth:`checkpoint` as the state is now, serialized when called (any thread)."""
        held = self.held[partition]
        state = held.state.frozen()
        offset, written_ms = held.offset, now_ms()
        pipeline, spec_hash, label = self.spec.name, self.spec.hash, self.feature_set.label

        def build() -> Checkpoint:
            return Checkpoint(
                pipeline=pipeline,
                partition=partition,
                offset=offset,
                spec_hash=spec_hash,
                feature_set=label,
                state=state(),
                written_ms=written_ms,
            )

        return build

    # -- events --------------------------------------------------------------------------

    def select(self, batch: Sequence[InMessage]) -> Selection:
        """The events that continue each held partition's state, in order; the held
        offsets move past them (see :func:`streams.state.checkpoint.select_unseen`)."""
        if self.hold_new_partitions:
            for msg in batch:
                if msg.partition not in self.held:
                    self.start(msg.partition, msg.offset)
        selection = select_unseen(batch, self.positions())
        self.replayed += selection.replayed
        self.ahead += selection.ahead
        self.unowned += selection.unowned
        for partition, offset in selection.positions.items():
            self.held[partition].offset = offset
        return selection

    def featurize(
        self, partition: int, good: list[tuple[InMessage, dict[str, Any], Lineage]]
    ) -> tuple[list[Vector], list[tuple[InMessage, OutMessage]]]:
        """Features of events already selected in order (one-pass: :mod:`streams.pipeline.onepass`).

        The caller keeps ``held[partition].offset``. Returns the vectors (each with its
        ``P.features`` message) and the dead letters of the events that got none, each
        beside the message it is of; a failure with one event never costs another.
        """
        return self._featurize(self.held[partition].state, good)

    def _featurize(
        self, state: FeatureState, good: list[tuple[InMessage, dict[str, Any], Lineage]]
    ) -> tuple[list[Vector], list[tuple[InMessage, OutMessage]]]:
        dead: list[tuple[InMessage, OutMessage]] = []
        good = self._drop_refused(good, dead)
        good = self._drop_late(state, good, dead)
        derived = self._compute_columns(state, good) if good else []
        vectors: list[Vector] = []
        for (msg, record, lineage), columns in zip(good, derived, strict=True):
            try:
                vectors.append(self._vector(msg, record, lineage, columns))
            except Exception as exc:  # this event's alone: a dead letter, the batch goes on
                dead.append((msg, self._dead_letter(msg, exc, lineage)))
        return vectors, dead

    def _drop_refused(
        self,
        good: list[tuple[InMessage, dict[str, Any], Lineage]],
        dead: list[tuple[InMessage, OutMessage]],
    ) -> list[tuple[InMessage, dict[str, Any], Lineage]]:
        """The events whose values the feature engine takes; the others are dead letters
        (``bad_feature_input``), refused before any state changes."""
        kept = []
        check = self.feature_set.check_inputs
        for event in good:
            try:
                check(event[1])
            except FeatureError as exc:
                dead.append((event[0], self._dead_letter(event[0], exc, event[2])))
                continue
            kept.append(event)
        return kept

    def _drop_late(
        self,
        state: FeatureState,
        good: list[tuple[InMessage, dict[str, Any], Lineage]],
        dead: list[tuple[InMessage, OutMessage]],
    ) -> list[tuple[InMessage, dict[str, Any], Lineage]]:
        """The events that are not late; late ones (``late_policy = "dead_letter"``) are
        dead letters and change no state."""
        fs = self.feature_set
        if not fs.drops_late or not good:
            return good
        keys = [self._key(r) for _, r, _ in good]
        times = np.array([lin.event_ts / 1000.0 for _, _, lin in good], dtype=np.float64)
        late = fs.late(state, keys, times)
        if not late.any():
            return good
        limit = fs.allowed_lateness
        for i in np.flatnonzero(late):
            msg, _, lineage = good[i]
            message = (
                f"event {lineage.event_id!r} of key {keys[i]!r} at event time "
                f"{lineage.event_ts} ms is more than allowed_lateness = {limit} s before the "
                'key\'s latest event time ([features] late_policy = "dead_letter").'
            )
            dead.append((msg, self._dead_letter(msg, DecodeError(LATE, message), lineage)))
        return [g for g, is_late in zip(good, late, strict=True) if not is_late]

    def _compute_columns(
        self, state: FeatureState, good: list[tuple[InMessage, dict[str, Any], Lineage]]
    ) -> list[dict[str, float]]:
        fs = self.feature_set
        keys = [self._key(r) for _, r, _ in good]
        times = np.array([lin.event_ts / 1000.0 for _, _, lin in good], dtype=np.float64)
        columns = {name: [r.get(name) for _, r, _ in good] for name in fs.inputs}
        # As Python floats once per batch: indexing numpy per event and value was slower.
        derived = [
            (name, out.tolist()) for name, out in fs.compute(state, keys, times, columns).items()
        ]
        return [{name: column[j] for name, column in derived} for j in range(len(good))]

    def _key(self, record: dict[str, Any]) -> str:
        key_field = self.spec.key_field
        return str(record[key_field]) if key_field else ""

    def _vector(
        self, msg: InMessage, record: dict[str, Any], lineage: Lineage, derived: dict[str, float]
    ) -> Vector:
        key = self._key(record)
        target = self.spec.model.target
        values: dict[str, Any] = {k: _plain(v) for k, v in record.items() if k not in self._skip}
        for name, v in derived.items():
            values[name] = v if math.isfinite(v) else None
        vector = {
            "event_id": lineage.event_id,
            "event_ts": lineage.event_ts,
            "entity_key": key,
            "label": record.get(target) if target else None,
            "values": values,
        }
        out = lineage.with_features(self.feature_set.label)
        message = OutMessage(
            self.features_topic,
            (key or lineage.event_id).encode(),
            encode_framed(self._vector_header, self.vector_schema, vector),
            out.to_headers(),
        )
        return Vector(msg, vector, out, message)

    def _dead_letter(
        self, msg: InMessage, exc: BaseException, lineage: Lineage | None = None
    ) -> OutMessage:
        if isinstance(exc, DecodeError):
            dead = DeadLetter(self.stage, exc.reason, str(exc), self.reader.label)
        elif isinstance(exc, FeatureError):
            dead = DeadLetter(self.stage, BAD_FEATURE_INPUT, str(exc), self.reader.label)
        else:
            dead = DeadLetter.of(self.stage, exc, self.reader.label)
        return dead.to_message(msg, self.dlq_topic, lineage)
