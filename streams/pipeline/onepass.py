"""One pass: raw events and delayed labels -> events, features and predictions, per batch.

One agent per pipeline reads ``P.raw`` and ``P.labels`` and chains the three stages over
each micro-batch in memory: ingestion validates a raw message, the features stage
computes its vector from the validated record (no decode), the predict stage predicts and
then learns from that vector (no decode). All three outputs are written: ``P.events``
and ``P.features`` for the offline store, replay and users; ``P.predictions`` for
consumers.

State follows the raw offsets: each raw partition's feature state is held at the next raw
offset it has not seen, and the predict stage's ``positions`` carry the same raw offsets
(and ``P.labels`` offsets for labels). The worker checkpoints both, models first, and
commits the raw offsets after both are written (:mod:`streams.state.pipeline`). Features
need the raw topic keyed by the spec's ``key_field`` when it has more than one partition,
as ``riverline produce`` does: a key's events must share a partition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

from streams.features.stage import Featurization, Vector
from streams.ingestion.stage import Ingestion
from streams.messages import InMessage, OutMessage
from streams.models.stage import Predictor
from streams.pipeline.lineage import Lineage, untrusted_headers
from streams.pipeline.stage import DeadLetter, StageResult, dead_letter_reason, now_ms

__all__ = ["OUTPUT_TOO_LARGE", "OnePass", "StageCounts"]

#: The dead-letter reason of a raw message one of whose outputs would be too large.
OUTPUT_TOO_LARGE = "output_too_large"
#: Bytes of a Kafka record beyond key, value and header contents, and its ``rl.mac``.
_RECORD_OVERHEAD = 256


@dataclass
class StageCounts:
    """What one stage did with the last batch: events out, dead letters by reason."""

    ok: int = 0
    dead: Counter[str] = field(default_factory=Counter)

    def add(self, result: StageResult) -> None:
        self.ok += result.ok
        if result.dead:
            self.dead.update(result.dead)


@dataclass
class _Fate:
    """What one raw message of a batch comes to: its outputs, or one dead letter."""

    msg: InMessage
    outs: list[OutMessage] = field(default_factory=list)
    dead: OutMessage | None = None


class OnePass:
    """Ingest, features and predict over one batch of ``P.raw`` and ``P.labels``.

    Each raw message ends in all of its outputs (``P.events``, ``P.features``,
    ``P.predictions``) or in exactly one dead letter, whichever stage it failed in: a
    message's outputs are held until it has passed every stage, and a failure with one
    message never costs another.
    """

    stage = "pipeline"

    def __init__(
        self,
        ingestion: Ingestion,
        featurization: Featurization,
        predictor: Predictor,
        *,
        raw_topic: str,
        max_output_bytes: int = 1 << 20,
    ) -> None:
        self.ingestion = ingestion
        self.featurization = featurization
        self.predictor = predictor
        self.raw_topic = raw_topic
        #: Largest message (key, value and headers) an output may be; a raw message whose
        #: output would be larger is a dead letter (``output_too_large``), not a failed send.
        self.max_output_bytes = max_output_bytes
        #: Per stage (ingest, features, predict), what the last batch did: for metrics.
        self.counts: dict[str, StageCounts] = {}

    def raw_key(self, partition: int) -> str:
        """The predict stage's ``positions`` key of a raw partition."""
        return f"{self.raw_topic}:{partition}"

    def process(self, batch: Sequence[InMessage]) -> StageResult:
        """Every output of the batch, in input order per stage; ``counts`` per stage."""
        stages = (self.ingestion.stage, self.featurization.stage, self.predictor.stage)
        self.counts = {name: StageCounts() for name in stages}
        predictor = self.predictor
        predictor.start_batch()
        fates: list[_Fate] = []
        labels = StageResult()
        batch = [_trusted(msg) for msg in batch]
        # Runs of raw messages keep their order with the labels around them.
        run: list[InMessage] = []
        for msg in batch:
            if msg.topic == self.raw_topic:
                run.append(msg)
                continue
            if run:
                fates += self._raw(run)
                run = []
            if predictor.in_order(msg):
                predictor.take_label(msg, labels)
        if run:
            fates += self._raw(run)
        self.counts[predictor.stage].add(labels)
        result = StageResult()
        for fate in fates:
            self._settle(fate, result)
        result.sends += labels.sends
        predictor.finish_batch(result)
        for counts in self.counts.values():
            if counts.dead:
                result.dead.update(counts.dead)
        return result

    def _settle(self, fate: _Fate, result: StageResult) -> None:
        """A raw message's outputs, or its one dead letter, into ``result``."""
        if fate.dead is None:
            big = next((o for o in fate.outs if _size(o) > self.max_output_bytes), None)
            if big is None:
                result.sends += fate.outs
                return
            dead = DeadLetter(
                self.stage,
                OUTPUT_TOO_LARGE,
                f"its message for {big.topic} would be {_size(big):,} bytes, over the "
                f"{self.max_output_bytes:,} Riverline's topics take "
                "(RIVERLINE_MAX_MESSAGE_BYTES and the broker's message.max.bytes).",
            )
            fate.dead = dead.to_message(fate.msg, self.predictor.dlq_topic)
            self.counts[self.predictor.stage].dead[OUTPUT_TOO_LARGE] += 1
        result.sends.append(self._fitting(fate.dead))

    def _fitting(self, dead: OutMessage) -> OutMessage:
        """A dead letter that fits the dead-letter topic. Only a raw topic made elsewhere,
        with a larger limit than Riverline's, can hold a message too large for it: then
        its key and value are left out, and their sizes said."""
        if _size(dead) <= self.max_output_bytes:
            return dead
        headers = [
            *dead.headers,
            ("rl.error.key_dropped", str(len(dead.key or b"")).encode()),
            ("rl.error.value_dropped", str(len(dead.value)).encode()),
        ]
        return OutMessage(dead.topic, None, b"", headers)

    def _raw(self, run: list[InMessage]) -> list[_Fate]:
        """Ingest, featurize and predict the raw messages that continue their partition's
        state; each one's fate, in order."""
        features = self.featurization
        selection = features.select(run)  # the held offsets move past the batch
        fates = {(m.partition, m.offset): _Fate(m) for m in selection.events}
        by_partition = self._ingest(selection.events, fates)
        positions = self.predictor.positions
        vectors: list[Vector] = []
        counts = self.counts[features.stage]
        for partition, good in by_partition.items():
            # The predict stage may be ahead of the features (its snapshot is written
            # first): events it has learned are featurized again but not predicted again.
            learned = positions.get(self.raw_key(partition), 0)
            done, dead = features.featurize(partition, good)
            for msg, out in dead:
                fates[(msg.partition, msg.offset)].dead = out
                counts.dead[dead_letter_reason(out)] += 1
            for vector in done:
                fates[(vector.msg.partition, vector.msg.offset)].outs.append(vector.out)
                counts.ok += 1
            vectors += [v for v in done if v.msg.offset >= learned]
        for partition, offset in selection.positions.items():
            key = self.raw_key(partition)
            positions[key] = max(positions.get(key, 0), offset)
        self._predict(vectors, fates)
        return list(fates.values())

    def _ingest(
        self, events: list[InMessage], fates: dict[tuple[int, int], _Fate]
    ) -> dict[int, list[tuple[InMessage, dict[str, Any], Lineage]]]:
        ingestion = self.ingestion
        counts = self.counts[ingestion.stage]
        ingest_ts = now_ms()
        by_partition: dict[int, list[tuple[InMessage, dict[str, Any], Lineage]]] = {}
        for msg in events:
            fate = fates[(msg.partition, msg.offset)]
            try:
                done = ingestion.ingest_one(msg, ingest_ts)
            except Exception as exc:  # this message's alone: a dead letter
                dead = StageResult()
                counts.dead[ingestion.dead(msg, exc, dead)] += 1
                fate.dead = dead.sends[0]
                continue
            fate.outs.append(done.out)
            counts.ok += 1
            by_partition.setdefault(msg.partition, []).append((msg, done.record, done.lineage))
        return by_partition

    def _predict(self, vectors: list[Vector], fates: dict[tuple[int, int], _Fate]) -> None:
        predictor = self.predictor
        counts = self.counts[predictor.stage]
        for vector in vectors:
            fate = fates[(vector.msg.partition, vector.msg.offset)]
            try:
                fate.outs += predictor.predict_one(vector)
                counts.ok += 1
            except Exception as exc:  # this event's alone: a dead letter
                dead = StageResult()
                predictor.dead(vector.msg, exc, dead, vector.lineage)
                fate.dead = dead.sends[0]
                counts.dead.update(dead.dead)


def _trusted(msg: InMessage) -> InMessage:
    """``msg`` with the ``rl.*`` headers its producer sent renamed ``untrusted.rl.*``:
    only Riverline writes lineage and error headers."""
    for name, _ in msg.headers:
        if name[:3].lower() == "rl.":
            return replace(msg, headers=untrusted_headers(msg.headers))
    return msg


def _size(out: OutMessage) -> int:
    """Bytes of a message as the broker counts it, near enough: key, value, headers (their
    names' characters and values' bytes), and room for the record's own fields and its
    ``rl.mac``."""
    headers = sum(map(len, chain.from_iterable(out.headers)))
    return len(out.key or b"") + len(out.value) + headers + _RECORD_OVERHEAD
