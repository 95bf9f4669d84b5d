"""Checkpoints: a partition's feature state saved together with the input offset it reflects.

Riverline keeps one :class:`~streams.features.engine.FeatureState` per partition of
``P.raw`` (producers key events by the spec's ``key_field``, so a key lives in exactly one
partition). A :class:`Checkpoint` holds that state and the *next* raw offset the state has
not seen; it is written to the compacted topic ``riverline.checkpoints`` under the key
``<pipeline>/features/<partition>``, so the topic keeps the latest checkpoint per
partition. The predict state (models, label join, positions) is the record
``<pipeline>/predict`` (:func:`predict_key`).

Why the consumer's position cannot be left to Faust
---------------------------------------------------
Verified in faust-streaming 0.15.3:

* Faust acks an event when the agent asks for the next one, and the consumer commits the
  highest contiguous acked offset on a timer, every ``broker_commit_every`` acks, on
  rebalance and at shutdown (``transport/consumer.py``: ``_commit_handler``,
  ``_drain_messages``, ``wait_empty``). Those commits know nothing of our checkpoints: a
  commit can run ahead of the last checkpoint, and after a crash the restored state would
  miss the events in between.
* On every assignment the Recovery service seeks every assigned partition to its
  committed offset (``tables/recovery.py`` ``_resume_streams`` -> ``perform_seek``) and
  resumes the flow. It runs as its own task, woken by ``tables.on_rebalance`` just before
  ``App._on_partitions_assigned`` sends the ``on_partitions_assigned`` signal, so it does
  not wait for the signal's handlers. aiokafka's ``seek_to_committed`` leaves a partition
  *without* a committed offset where its fetcher already was.
* After a rebalance, events fetched under the old generation are skipped (not delivered,
  but acked) and re-read from the committed offset; events already taken into a batch are
  still delivered. Events can therefore arrive twice, or from a partition this worker no
  longer owns.

So Riverline owns the commits of ``P.raw`` and ``P.labels`` (``agents.coordinator``):

1. The pipeline agent subscribes with ``acks=False``: Faust never tracks, acks or
   commits those topics (``Conductor.acks_enabled_for``).
2. A checkpoint is written (and acknowledged by the broker) every ``checkpoint_every``
   events or ``checkpoint_interval`` seconds, on revocation and at clean shutdown; only
   then are its offsets committed. The committed offset is therefore never ahead of the
   latest checkpoint.
3. From the start of a rebalance (the revocation handler, or the worker's start) until
   the assignment handler has restored every assigned partition, batches wait at a gate
   (:class:`agents.io.AssignmentGate`), so no event meets a partition that is assigned but
   not restored. The handler then commits the checkpoint's offsets. Recovery's
   ``perform_seek`` lands on them or on an older commit (both at or before the restored
   state), so Riverline does not seek in the normal case. Only when the state starts
   *before* the committed offset (no usable checkpoint: the partition is rebuilt from its
   start) does it seek back, with a watchdog (:class:`agents.io.StallWatch`) repeating the
   seek if Faust drops the sought messages (it drops offsets below the read offset that
   an in-flight fetch already moved).
4. The stage processes an event only if its partition is held and its offset is exactly
   the partition's next offset (:func:`select_unseen`). Replayed events are skipped, so
   state is exactly as if no crash happened; an event ahead of a gap is skipped too (it
   can only follow a dropped fetch) and delivered again by the watchdog's seek. Outputs
   of events processed after the last checkpoint are sent again after a crash
   (duplicates by ``rl.event_id``, with equal values), never lost.

Seeking alone (without owning commits) would not do: ``perform_seek`` moves the consumer
to Faust's own committed offset, which can be newer than the checkpoint.

Wire format (:meth:`Checkpoint.to_bytes`): ``b"RLCP"``, a format version byte, a 4-byte
big-endian header length, a JSON header (pipeline, partition, offset, spec hash, feature
set label, written time), then the state bytes: data only (npy arrays in a
zip, JSON), never a pickle. The record on ``riverline.checkpoints`` carries a keyed MAC
(:mod:`streams.trust.records`) over its key, value and headers;
:meth:`streams.state.store.CheckpointStore.load` checks it before it reads a byte of the
value, and a record that fails is reported as a :class:`CheckpointIntegrityError`, to be
used as no checkpoint at all.

Examples
--------
>>> cp = Checkpoint("cards", 1, 42, "abc123", "card_features@0f0f", b"state")
>>> cp.key
'cards/features/1'
>>> Checkpoint.from_bytes(cp.to_bytes()) == cp
True
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.errors import RiverlineError
from streams.messages import InMessage

__all__ = [
    "FORMAT_VERSION",
    "LEARNER",
    "PREDICT",
    "Checkpoint",
    "CheckpointError",
    "CheckpointIntegrityError",
    "CheckpointSchedule",
    "Selection",
    "checkpoint_key",
    "predict_key",
    "select_unseen",
]

MAGIC = b"RLCP"
#: Bump when the layout of :meth:`Checkpoint.to_bytes` changes. Version 1 ended in an
#: unkeyed SHA-256 and its predict state was a pickle: it is never read.
FORMAT_VERSION = 2
_PREFIX = struct.Struct(">4sBI")


class CheckpointError(RiverlineError):
    """A checkpoint that cannot be read, written or used."""


class CheckpointIntegrityError(CheckpointError):
    """A checkpoint record without a valid MAC: forged, damaged or signed with another key."""


#: The ``feature_set`` of a pipeline's predict-state checkpoint (one per pipeline).
PREDICT = "predict"
#: The ``feature_set`` of a decoupled pipeline's learner checkpoint (one per pipeline).
LEARNER = "learner"


def checkpoint_key(pipeline: str, partition: int) -> str:
    """The compacted topic's key for a pipeline's feature state of one raw partition."""
    return f"{pipeline}/features/{partition}"


def predict_key(pipeline: str) -> str:
    """The compacted topic's key for a pipeline's predict state (models, label join)."""
    return f"{pipeline}/{PREDICT}"


@dataclass(frozen=True)
class Checkpoint:
    """Feature state of one ``P.events`` partition and the next offset it has not seen."""

    pipeline: str
    partition: int
    offset: int
    spec_hash: str
    feature_set: str
    state: bytes
    written_ms: int = 0

    @property
    def key(self) -> str:
        if self.feature_set in (PREDICT, LEARNER):
            return f"{self.pipeline}/{self.feature_set}"
        return checkpoint_key(self.pipeline, self.partition)

    def to_bytes(self) -> bytes:
        """Versioned bytes (see the module docstring); the record's MAC protects them."""
        header = json.dumps(
            {
                "pipeline": self.pipeline,
                "partition": self.partition,
                "offset": self.offset,
                "spec_hash": self.spec_hash,
                "feature_set": self.feature_set,
                "written_ms": self.written_ms,
            },
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + self.state

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Read :meth:`to_bytes` of a record whose MAC was checked.

        Raises
        ------
        CheckpointError
            If the bytes are truncated, malformed or of another format version.
        """
        if len(data) < _PREFIX.size:
            raise CheckpointError(f"checkpoint of {len(data)} bytes is truncated.")
        body = data
        magic, version, header_len = _PREFIX.unpack_from(body)
        if magic != MAGIC:
            raise CheckpointError(f"not a Riverline checkpoint (starts with {magic!r}).")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format version {version} is not {FORMAT_VERSION}; it was written "
                "by another Riverline version."
            )
        end = _PREFIX.size + header_len
        if end > len(body):
            raise CheckpointError(f"checkpoint of {len(data)} bytes is truncated.")
        try:
            header: dict[str, Any] = json.loads(body[_PREFIX.size : end])
            return cls(
                pipeline=str(header["pipeline"]),
                partition=int(header["partition"]),
                offset=int(header["offset"]),
                spec_hash=str(header["spec_hash"]),
                feature_set=str(header["feature_set"]),
                state=bytes(body[end:]),
                written_ms=int(header.get("written_ms", 0)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint header is invalid: {exc}.") from exc

    def __repr__(self) -> str:
        return (
            f"Checkpoint({self.key!r}, offset={self.offset}, {self.feature_set}, "
            f"{len(self.state)} state bytes)"
        )


@dataclass(frozen=True)
class Selection:
    """What :func:`select_unseen` kept of a batch, and the partitions' next offsets after it."""

    events: list[InMessage]
    positions: dict[int, int]
    replayed: int
    ahead: int
    unowned: int


def select_unseen(batch: Iterable[InMessage], positions: Mapping[int, int]) -> Selection:
    """Keep the events that continue each partition's state exactly, in order.

    ``positions`` maps each partition held to its next offset. An event is kept if its
    partition is held and its offset *is* the partition's next offset (which then moves
    past it). Otherwise it is ``replayed`` (below: the state already reflects it),
    ``ahead`` (above: an event before it has not been seen, e.g. it was dropped while its
    partition was not held yet; the consumer has been sought back and will deliver it
    again) or ``unowned`` (its partition is not held).

    ``P.events`` is written without transactions, so its offsets have no gaps; a gap
    before the first retained offset is closed when a checkpoint is restored.

    Examples
    --------
    >>> def m(p, o):
    ...     return InMessage("t", p, o, None, b"", 0)
    >>> batch = [m(0, 4), m(0, 5), m(1, 11), m(0, 5), m(0, 6), m(2, 0), m(1, 9)]
    >>> s = select_unseen(batch, {0: 5, 1: 9})
    >>> [(e.partition, e.offset) for e in s.events], s.positions
    ([(0, 5), (0, 6), (1, 9)], {0: 7, 1: 10})
    >>> s.replayed, s.ahead, s.unowned
    (2, 1, 1)
    """
    nxt = dict(positions)
    kept: list[InMessage] = []
    replayed = ahead = unowned = 0
    for msg in batch:
        at = nxt.get(msg.partition)
        if at is None:
            unowned += 1
        elif msg.offset < at:
            replayed += 1
        elif msg.offset > at:
            ahead += 1
        else:
            kept.append(msg)
            nxt[msg.partition] = at + 1
    return Selection(kept, nxt, replayed, ahead, unowned)


class CheckpointSchedule:
    """When to write the next checkpoint: after ``every`` events or ``interval`` seconds.

    Examples
    --------
    >>> now = [0.0]
    >>> s = CheckpointSchedule(every=3, interval=10.0, clock=lambda: now[0])
    >>> s.record(2); s.due()
    False
    >>> s.record(1); s.due()
    True
    >>> s.done(); s.record(1); now[0] = 10.5; s.due()
    True
    >>> s.done(); now[0] = 30.0; s.due()  # nothing new, nothing to save
    False
    """

    def __init__(
        self, every: int, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = max(1, int(every))
        self.interval = float(interval)
        self._clock = clock
        self._pending = 0
        self._since = clock()

    @property
    def pending(self) -> int:
        """Events processed since the last checkpoint."""
        return self._pending

    def record(self, n: int) -> None:
        self._pending += n

    def due(self) -> bool:
        if self._pending <= 0:
            return False
        return self._pending >= self.every or self._clock() - self._since >= self.interval

    def done(self) -> None:
        self._pending = 0
        self._since = self._clock()
