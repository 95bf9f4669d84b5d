"""Delayed labels: what a model saw at prediction time, kept until the label arrives.

When labels come later on ``P.labels`` (keyed by event id), the predictor stores the
features and the prediction it made; the label is joined with exactly those, so the
metric scores the prediction made before the label (prequential) and the model learns
from the features it actually saw. Entries expire after a TTL in event time; expired
entries and labels that match nothing are counted, never silently dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streams.model import Prediction

__all__ = ["LabelJoin", "Pending", "prediction_from_data", "prediction_to_data"]

#: Bytes counted per entry besides its strings and values: a rough size of the Python
#: objects behind it, so ``max_bytes`` bounds memory and the checkpoint's JSON alike.
_ENTRY_OVERHEAD = 200
_VALUE_BYTES = 24


@dataclass(frozen=True, slots=True)
class Pending:
    """A prediction waiting for its label: what every served model said, champion first."""

    event_id: str
    x: dict[str, Any]
    said: tuple[tuple[str, Prediction], ...]
    event_ts: int

    def size(self) -> int:
        """Approximate bytes this entry holds (its strings, values and predictions)."""
        n = _ENTRY_OVERHEAD + len(self.event_id)
        for name, value in self.x.items():
            n += len(name) + (len(value) if isinstance(value, str) else _VALUE_BYTES)
        for name, prediction in self.said:
            n += len(name) + _VALUE_BYTES * (2 + len(prediction.proba))
        return n


def prediction_to_data(prediction: Prediction) -> list[Any]:
    """A prediction as JSON-ready data (see :func:`prediction_from_data`)."""
    return [prediction.prediction, prediction.proba, prediction.score]


def prediction_from_data(data: Sequence[Any]) -> Prediction:
    """Read :func:`prediction_to_data`."""
    value, proba, score = data
    return Prediction(value, {str(k): float(v) for k, v in proba.items()}, score)


class LabelJoin:
    """Pending predictions by event id, oldest first, bounded by a TTL, a count and bytes.

    Labels that arrive before their prediction wait too (same TTL and bounds), so the join
    does not depend on which topic Kafka delivers first. When a bound is reached the
    oldest entries go first; every entry that leaves without a join is counted in
    ``expired``.

    Examples
    --------
    >>> said = (("m", Prediction(True, {}, None)),)
    >>> join = LabelJoin(ttl_ms=1000)
    >>> join.add_prediction(Pending("e1", {"a": 1.0}, said, 0))
    >>> join.add_label("e1", False, now_ms=10)[0].event_id
    'e1'
    >>> join.add_label("e2", True, now_ms=10)   # early label: waits for its prediction
    []
    >>> join.expire(now_ms=5000), join.expired
    (1, 1)
    """

    def __init__(
        self, ttl_ms: int, max_pending: int = 100_000, max_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self.ttl_ms = ttl_ms
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self._pending: OrderedDict[str, tuple[Pending, int]] = OrderedDict()
        #: Early labels: event id -> (label, arrival time, size).
        self._early: OrderedDict[str, tuple[Any, int, int]] = OrderedDict()
        self._bytes = 0
        self.expired = 0
        self.joined = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def nbytes(self) -> int:
        """Approximate bytes held by pending predictions and early labels."""
        return self._bytes

    @property
    def early(self) -> int:
        """Labels waiting for their prediction."""
        return len(self._early)

    def add_prediction(self, pending: Pending) -> tuple[Pending, Any] | None:
        """Store a prediction; returns (pending, label) at once if its label came first."""
        early = self._early.pop(pending.event_id, None)
        if early is not None:
            self._bytes -= early[2]
            self.joined += 1
            return pending, early[0]
        old = self._pending.pop(pending.event_id, None)
        if old is not None:
            self._bytes -= old[0].size()
        self._pending[pending.event_id] = (pending, pending.event_ts)
        self._bytes += pending.size()
        self._bound()
        return None

    def add_label(self, event_id: str, label: Any, now_ms: int) -> list[Pending]:
        """Join a label; returns the matched prediction (empty list if it must wait)."""
        found = self._pending.pop(event_id, None)
        if found is None:
            old = self._early.pop(event_id, None)
            if old is not None:
                self._bytes -= old[2]
            size = _ENTRY_OVERHEAD + len(event_id) + _label_size(label)
            self._early[event_id] = (label, now_ms, size)
            self._bytes += size
            self._bound()
            return []
        self._bytes -= found[0].size()
        self.joined += 1
        return [found[0]]

    def _bound(self) -> None:
        """Drop the oldest entries while a table is over ``max_pending`` or both together
        are over ``max_bytes``; each one counts as expired."""
        while len(self._pending) > self.max_pending:
            self._drop_pending()
        while len(self._early) > self.max_pending:
            self._drop_early()
        while self._bytes > self.max_bytes and (self._pending or self._early):
            if not self._early:
                self._drop_pending()
            elif (
                not self._pending
                or next(iter(self._early.values()))[1] < next(iter(self._pending.values()))[1]
            ):
                self._drop_early()
            else:
                self._drop_pending()

    def _drop_pending(self) -> None:
        _, (pending, _) = self._pending.popitem(last=False)
        self._bytes -= pending.size()
        self.expired += 1

    def _drop_early(self) -> None:
        _, (_, _, size) = self._early.popitem(last=False)
        self._bytes -= size
        self.expired += 1

    def expire(self, now_ms: int) -> int:
        """Drop entries older than the TTL; returns how many expired now."""
        n = 0
        horizon = now_ms - self.ttl_ms
        while self._pending:
            pending, ts = next(iter(self._pending.values()))
            if ts >= horizon:
                break
            self._pending.popitem(last=False)
            self._bytes -= pending.size()
            n += 1
        while self._early:
            _, ts, size = next(iter(self._early.values()))
            if ts >= horizon:
                break
            self._early.popitem(last=False)
            self._bytes -= size
            n += 1
        self.expired += n
        return n

    def to_data(self) -> dict[str, Any]:
        """Everything, as JSON-ready data, for a checkpoint (:meth:`from_data`)."""
        return {
            "ttl_ms": self.ttl_ms,
            "pending": [
                [
                    p.event_id,
                    p.x,
                    [[name, prediction_to_data(said)] for name, said in p.said],
                    p.event_ts,
                ]
                for p, _ in self._pending.values()
            ],
            "early": [[eid, label, ts] for eid, (label, ts, _) in self._early.items()],
            "expired": self.expired,
            "joined": self.joined,
        }

    @classmethod
    def from_data(
        cls, data: dict[str, Any], max_pending: int = 100_000, max_bytes: int = 32 * 1024 * 1024
    ) -> LabelJoin:
        """Read :meth:`to_data`; the bounds are today's settings, applied at once.

        Raises
        ------
        KeyError, TypeError, ValueError
            If ``data`` is not what :meth:`to_data` writes.
        """
        join = cls(int(data["ttl_ms"]), max_pending, max_bytes)
        for event_id, x, said, event_ts in data["pending"]:
            if not isinstance(x, dict):
                raise TypeError("a pending entry's features are not an object")
            pending = Pending(
                str(event_id),
                x,
                tuple((str(name), prediction_from_data(p)) for name, p in said),
                int(event_ts),
            )
            join._pending[pending.event_id] = (pending, pending.event_ts)
            join._bytes += pending.size()
        for event_id, label, ts in data["early"]:
            size = _ENTRY_OVERHEAD + len(str(event_id)) + _label_size(label)
            join._early[str(event_id)] = (label, int(ts), size)
            join._bytes += size
        join.expired, join.joined = int(data["expired"]), int(data["joined"])
        join._bound()
        return join


def _label_size(label: Any) -> int:
    return len(label) if isinstance(label, str) else _VALUE_BYTES
