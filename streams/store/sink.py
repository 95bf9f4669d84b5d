"""The offline sink: what flowed through a pipeline's topics, written to the offline store.

Rows are grouped in fixed blocks of offsets per topic partition (``block_size``), and a
block's file is named by the block's offset range. A block is rewritten in full every
flush until it is complete; after a restart the sink loads a partial block back from its
file and drops re-read offsets it already has. So a crash and a re-run replace files and
never duplicate rows, whatever the batch boundaries were.

The sink keeps nothing on the machine it runs on: its progress is the consumer group's
committed offsets (in Kafka) and the files (in the store, which may be shared). Sinks on
several machines share a pipeline's partitions through one consumer group, so they write
disjoint files; when a partition moves mid-block, its new owner loads the partial block
from the shared store. A sink that lost its partitions without noticing (paused past its
session) may still flush once: a write first merges in the rows of a file changed by
another sink since this one last saw it, so no rewrite drops rows another sink stored.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.errors import DecodeError
from streams.messages import InMessage
from streams.pipeline.lineage import Lineage, lineage_headers
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.spec import PipelineSpec
from streams.store.offline import FileVersion, OfflineStore

__all__ = ["OfflineSink", "sink_topics"]


@dataclass
class _Block:
    start: int
    rows: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    dirty: bool = False
    #: The block's file in the store and its version, as this sink last read or wrote it.
    path: str | None = None
    version: FileVersion | None = None

    def load(self, store: OfflineStore, path: str) -> None:
        """Add the rows of the block's file in the store that this block does not hold."""
        version = store.version(path)
        for r in store.read_file(path).to_pylist():
            off, ts = r.pop("_offset"), r.pop("_timestamp_ms")
            r.pop("pipeline", None)
            r.pop("date", None)
            self.rows.setdefault(off, (ts, r))
        self.path, self.version = path, version


class OfflineSink:
    """Decode and buffer messages of one pipeline's topics; write Parquet blocks."""

    stage = "sink"

    def __init__(
        self,
        spec: PipelineSpec,
        catalog: SchemaCatalog,
        store: OfflineStore,
        *,
        kinds: dict[str, str],
        block_size: int = 10_000,
        dead_letter_sources: Collection[str] | None = None,
        verified: Collection[str] = (),
    ) -> None:
        """``kinds`` maps topic name to store kind (events, features, predictions, ...).

        The dead-letter topic is shared by every pipeline: with ``dead_letter_sources``
        only dead letters whose ``rl.error.topic`` is one of these topics are kept.
        ``verified``: the topics whose records the caller passes only once their
        ``rl.mac`` verified; their values are read without the bounds walk hostile
        bytes need (:func:`~streams.serialization.codec.decode_single_object`).
        """
        self.dead_letter_sources = (
            frozenset(dead_letter_sources) if dead_letter_sources is not None else None
        )
        self.spec = spec
        self.catalog = catalog
        self.store = store
        self.kinds = kinds
        self.verified = frozenset(verified)
        self.block_size = block_size
        self._blocks: dict[tuple[str, int], _Block] = {}
        self._finished: list[tuple[str, int, _Block]] = []  # complete, not written yet
        self._schemas = {
            "features": catalog.record("feature_vector"),
            "predictions": catalog.record("prediction"),
            "labels": catalog.record("label"),
        }

    def _row(self, kind: str, msg: InMessage) -> dict[str, Any]:
        if kind == "dead_letters":
            headers = lineage_headers(msg.headers)
            return {
                "reason": headers.get("rl.error.class", ""),
                "stage": headers.get("rl.error.stage", ""),
                "message": headers.get("rl.error.message", ""),
                "source": f"{headers.get('rl.error.topic', '')}:"
                f"{headers.get('rl.error.partition', '')}:{headers.get('rl.error.offset', '')}",
                "schema": headers.get("rl.error.schema", ""),
                "key": msg.key,
                "value": msg.value,
            }
        lineage = Lineage.from_headers(msg.headers)
        row: dict[str, Any] = {
            "event_id": lineage.event_id,
            "rl_schema": lineage.schema,
            "rl_source": lineage.source,
            "rl_features": lineage.features,
            "rl_model": lineage.model,
            "rl_pipeline": lineage.pipeline,
        }
        signed = msg.topic in self.verified
        try:
            if kind == "events":
                _, record = decode_single_object(self.catalog, msg.value or b"", signed=signed)
            else:
                _, record = decode_single_object(
                    self.catalog, msg.value or b"", self._schemas[kind], signed=signed
                )
        except DecodeError as exc:
            row["decode_error"] = str(exc)
            return row
        if kind == "features":
            values = record.pop("values")
            row.update(record)
            row.update({f"value.{k}": v for k, v in values.items()})
        elif kind == "predictions":
            proba = record.pop("proba")
            row.update(record)
            row.update({f"proba.{k}": v for k, v in proba.items()})
        else:
            row.update(record)
        return row

    def _mine(self, kind: str, msg: InMessage) -> bool:
        if kind != "dead_letters" or self.dead_letter_sources is None:
            return True
        source = lineage_headers(msg.headers).get("rl.error.topic")
        return source is not None and source in self.dead_letter_sources

    def _block(self, topic: str, partition: int, offset: int) -> _Block:
        start = offset - offset % self.block_size
        block = self._blocks.get((topic, partition))
        if block is not None and block.start == start:
            return block
        if block is not None and block.dirty:
            # Written by the next flush (in the agent's thread), not here on the event loop.
            self._finished.append((topic, partition, block))
        block = _Block(start)
        existing = self.store.file_for(
            self.kinds[topic], topic, partition, start, start + self.block_size - 1, self.spec.name
        )
        if existing is not None:
            # Resume a partial block written before a restart, or by the partition's
            # previous owner (another sink, on any machine).
            block.load(self.store, existing)
        self._blocks[(topic, partition)] = block
        return block

    def add(self, batch: Sequence[InMessage]) -> int:
        """Buffer a batch; returns how many new rows it added (re-reads add none)."""
        added = 0
        for msg in batch:
            kind = self.kinds.get(msg.topic)
            if kind is None or not self._mine(kind, msg):
                continue
            block = self._block(msg.topic, msg.partition, msg.offset)
            if msg.offset in block.rows:
                continue
            block.rows[msg.offset] = (msg.timestamp_ms, self._row(kind, msg))
            block.dirty = True
            added += 1
        return added

    def _write(self, topic: str, partition: int, block: _Block) -> str:
        kind = self.kinds[topic]
        span = (block.start, block.start + self.block_size - 1)
        first_ts = block.rows[min(block.rows)][0]
        target = self.store.path_for(kind, self.spec.name, topic, partition, first_ts, span)
        seen = block.version if target == block.path else None
        current = self.store.version(target)
        if current is not None and current != seen:
            # Another sink wrote this block since this one last saw it: keep its rows too.
            block.load(self.store, target)
        offsets = sorted(block.rows)
        path = self.store.write(
            kind,
            self.spec.name,
            topic,
            partition,
            offsets,
            [block.rows[o][0] for o in offsets],
            [block.rows[o][1] for o in offsets],
            offset_range=span,
        )
        block.path, block.version = path, self.store.version(path)
        block.dirty = False
        return path

    def flush(self) -> list[str]:
        """Write the blocks completed and rewrite every block changed since the last flush.

        Returns the files written (paths on the store's filesystem).
        """
        written = [
            self._write(topic, partition, block) for topic, partition, block in self._finished
        ]
        self._finished.clear()
        for (topic, partition), block in self._blocks.items():
            if block.dirty:
                written.append(self._write(topic, partition, block))
        return written


def sink_topics(spec: PipelineSpec, namespace: str, dlq_topic: str) -> dict[str, str]:
    """Topic -> store kind for what a pipeline's sink reads.

    Examples
    --------
    >>> from streams.spec import load_spec
    >>> from streams.settings import REPO_ROOT
    >>> spec = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
    >>> sink_topics(spec, "t.", "t.riverline.dlq")["t.phishing.features"]
    'features'
    """
    topics = spec.topics(namespace)
    return {
        topics.events: "events",
        topics.features: "features",
        topics.predictions: "predictions",
        topics.labels: "labels",
        dlq_topic: "dead_letters",
    }
