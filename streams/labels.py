"""Delayed labels: what a model saw at prediction time, kept until the label arrives.

When labels come later on ``P.labels`` (keyed by event id), the predictor stores the
features and the prediction it made; the label is joined with exactly those, so the
metric scores the prediction made before the label (prequential) and the model learns
from the features it actually saw. Entries expire after a TTL in event time; expired
entries and labels that match nothing are counted, never silently dropped.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from streams.model import Prediction

__all__ = ["LabelJoin", "Pending"]


@dataclass(frozen=True, slots=True)
class Pending:
    """A prediction waiting for its label."""

    event_id: str
    x: dict[str, Any]
    said: Prediction
    model: str
    event_ts: int


class LabelJoin:
    """Pending predictions by event id, oldest first, with a TTL and a size bound.

    Labels that arrive before their prediction wait too (same TTL), so the join does not
    depend on which topic Kafka delivers first.

    Examples
    --------
    >>> join = LabelJoin(ttl_ms=1000)
    >>> join.add_prediction(Pending("e1", {"a": 1.0}, Prediction(True, {}, None), "m@1", 0))
    >>> join.add_label("e1", False, now_ms=10)[0].event_id
    'e1'
    >>> join.add_label("e2", True, now_ms=10)   # early label: waits for its prediction
    []
    >>> join.expire(now_ms=5000), join.expired
    (1, 1)
    """

    def __init__(self, ttl_ms: int, max_pending: int = 1_000_000) -> None:
        self.ttl_ms = ttl_ms
        self.max_pending = max_pending
        self._pending: OrderedDict[str, tuple[Pending, int]] = OrderedDict()
        self._early: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.expired = 0
        self.joined = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add_prediction(self, pending: Pending) -> tuple[Pending, Any] | None:
        """Store a prediction; returns (pending, label) at once if its label came first."""
        early = self._early.pop(pending.event_id, None)
        if early is not None:
            self.joined += 1
            return pending, early[0]
        self._pending[pending.event_id] = (pending, pending.event_ts)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.expired += 1
        return None

    def add_label(self, event_id: str, label: Any, now_ms: int) -> list[Pending]:
        """Join a label; returns the matched prediction (empty list if it must wait)."""
        found = self._pending.pop(event_id, None)
        if found is None:
            self._early[event_id] = (label, now_ms)
            while len(self._early) > self.max_pending:
                self._early.popitem(last=False)
                self.expired += 1
            return []
        self.joined += 1
        return [found[0]]

    def expire(self, now_ms: int) -> int:
        """Drop entries older than the TTL; returns how many expired now."""
        n = 0
        horizon = now_ms - self.ttl_ms
        for table in (self._pending, self._early):
            while table:
                _, (_, ts) = next(iter(table.items()))
                if ts >= horizon:
                    break
                table.popitem(last=False)
                n += 1
        self.expired += n
        return n

    def to_bytes(self) -> bytes:
        """Everything, for a checkpoint."""
        state = (self.ttl_ms, self.max_pending, self._pending, self._early, self.expired)
        return pickle.dumps((*state, self.joined), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> LabelJoin:
        """Restore from :meth:`to_bytes` (trusted: our own checkpoint, checksummed)."""
        ttl, max_pending, pending, early, expired, joined = pickle.loads(data)
        join = cls(ttl, max_pending)
        join._pending, join._early, join.expired, join.joined = pending, early, expired, joined
        return join
