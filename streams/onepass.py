"""One pass: raw events and delayed labels -> events, features and predictions, per batch.

The default topology (``topology = "one-pass"``). One agent reads ``P.raw`` and
``P.labels`` and chains the three stages over each micro-batch in memory: ingestion
validates a raw message, the features stage computes its vector from the validated record
(no decode), the predict stage predicts and learns from that vector (no decode). All
three outputs are still written, with the same bytes and lineage as the staged topology:
``P.events`` and ``P.features`` for the offline store, replay and users; ``P.predictions``
for consumers. What one pass saves is two consume hops per event, the largest cost of
the staged topology (see ``riverline bench``).

State follows the raw offsets: each raw partition's feature state is held at the next raw
offset it has not seen, and the predict stage's ``positions`` carry the same raw offsets
(and ``P.labels`` offsets for labels). The worker checkpoints both, models first, and
commits the raw offsets after both are written (agents.onepass). Features need the raw
topic keyed by the spec's ``key_field`` when it has more than one partition, as
``riverline produce`` does: a key's events must share a partition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.featurization import Featurization, Vector
from streams.ingestion import Ingestion
from streams.lineage import Lineage
from streams.messages import InMessage
from streams.prediction import Predictor
from streams.stage import StageResult, now_ms

__all__ = ["OnePass", "StageCounts"]


@dataclass
class StageCounts:
    """What one stage did with the last batch: events out, dead letters by reason."""

    ok: int = 0
    dead: Counter[str] = field(default_factory=Counter)

    def add(self, result: StageResult) -> None:
        self.ok += result.ok
        if result.dead:
            self.dead.update(result.dead)


class OnePass:
    """Ingest, features and predict over one batch of ``P.raw`` and ``P.labels``."""

    stage = "pipeline"

    def __init__(
        self,
        ingestion: Ingestion,
        featurization: Featurization,
        predictor: Predictor,
        *,
        raw_topic: str,
    ) -> None:
        self.ingestion = ingestion
        self.featurization = featurization
        self.predictor = predictor
        self.raw_topic = raw_topic
        #: Per stage (ingest, features, predict), what the last batch did: for metrics.
        self.counts: dict[str, StageCounts] = {}

    def raw_key(self, partition: int) -> str:
        """The predict stage's ``positions`` key of a raw partition."""
        return f"{self.raw_topic}:{partition}"

    def process(self, batch: Sequence[InMessage]) -> StageResult:
        """Every output of the batch, in input order per stage; ``counts`` per stage."""
        stages = (self.ingestion.stage, self.featurization.stage, self.predictor.stage)
        self.counts = {name: StageCounts() for name in stages}
        sends = StageResult()
        items: list[InMessage | Vector] = []
        # Runs of raw messages keep their order with the labels around them.
        run: list[InMessage] = []
        for msg in batch:
            if msg.topic == self.raw_topic:
                run.append(msg)
                continue
            if run:
                items += self._raw(run, sends)
                run = []
            items.append(msg)
        if run:
            items += self._raw(run, sends)
        predicted = self.predictor.process(items)
        self.counts[self.predictor.stage].add(predicted)
        sends.sends += predicted.sends
        sends.ok = predicted.ok
        for counts in self.counts.values():
            if counts.dead:
                sends.dead.update(counts.dead)
        return sends

    def _raw(self, run: list[InMessage], sends: StageResult) -> list[Vector]:
        """Ingest and featurize the raw messages that continue their partition's state.

        A later stage's dead letter is of the raw message, with the event's lineage added
        (:meth:`streams.stage.DeadLetter.to_message`).
        """
        features = self.featurization
        selection = features.select(run)  # the held offsets move past the batch
        ingested = StageResult()
        ingest_ts = now_ms()
        by_partition: dict[int, list[tuple[InMessage, dict[str, Any], Lineage]]] = {}
        for msg in selection.events:
            event = self.ingestion.ingest(msg, ingest_ts, ingested)
            if event is not None:
                by_partition.setdefault(msg.partition, []).append((msg, *event))
        self.counts[self.ingestion.stage].add(ingested)
        sends.sends += ingested.sends
        featurized = StageResult()
        positions = self.predictor.positions
        vectors: list[Vector] = []
        for partition, good in by_partition.items():
            # The predict stage may be ahead of the features (its snapshot is written
            # first): events it has learned are featurized again but not predicted again.
            learned = positions.get(self.raw_key(partition), 0)
            done = features.featurize(partition, good, featurized)
            vectors += [v for v in done if v.msg.offset >= learned]
        for partition, offset in selection.positions.items():
            key = self.raw_key(partition)
            positions[key] = max(positions.get(key, 0), offset)
        self.counts[features.stage].add(featurized)
        sends.sends += featurized.sends
        return vectors
