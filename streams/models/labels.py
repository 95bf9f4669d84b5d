"""Delayed labels: what a model saw at prediction time, kept until the label arrives.

When labels come later on ``P.labels`` (keyed by event id), the predictor stores the
features and the prediction it made; the label is joined with exactly those, so the
metric scores the prediction made before the label (prequential) and the model learns
from the features it actually saw. Entries expire after a TTL in event time; expired
entries and labels that match nothing are counted, never silently dropped.

:func:`read_label` reads one ``P.labels`` message, refusing what the join or the model
cannot use with a reason from :data:`LABEL_REASONS`.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from streams.errors import ConfigError, DecodeError
from streams.models.model import Prediction
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.codec import (
    DEFAULT_MAX_ID_BYTES,
    SINGLE_OBJECT_MAGIC,
    decode_single_object,
)
from streams.serialization.json_coercion import describe_value

__all__ = [
    "LABEL_REASONS",
    "LabelJoin",
    "Pending",
    "prediction_from_data",
    "prediction_to_data",
    "read_label",
]

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


#: Every DecodeError reason :func:`read_label` raises (dead-letter reasons, metric labels).
LABEL_REASONS: Final = (
    "bad_label",
    "missing_event_id",
    "bad_event_id",
    "id_too_long",
    "bad_string",
    "label_type",
    "non_finite",
)

_LONG_RANGE = (-(2**63), 2**63 - 1)
_JSON_FORM = '{"event_id": "...", "label": ...}'
#: What a label must be, by task, as dead-letter messages say it.
_EXPECTED = {
    "binary": "a binary model takes a boolean (or 0 or 1)",
    "multiclass": "a multiclass model takes a string, an integer or a boolean",
    "regression": "a regression model takes a finite number",
    "anomaly": "an anomaly model learns without labels: send it none",
}


def read_label(
    value: bytes | None,
    key: bytes | None,
    *,
    catalog: SchemaCatalog,
    label_schema: SchemaVersion,
    task: str,
    max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
) -> tuple[str, Any]:
    """The (event id, label) of one ``P.labels`` message, checked against the model's task.

    The message is an Avro single-object ``label.avsc`` record or a JSON object
    ``{"event_id": ..., "label": ...}`` (other keys are ignored). The event id is the
    ``event_id`` field, or the message key (UTF-8) when that field is null, absent or
    empty; it must be a string of at most ``max_id_bytes`` bytes of UTF-8.

    The label must fit ``task``:

    * ``binary``: a boolean; the integers 0 and 1 are read as false and true (River's
      binary classifiers predict booleans, and the metrics compare with them).
    * ``multiclass``: a string (at most ``max_id_bytes`` of UTF-8), an integer in Avro's
      ``long`` range, or a boolean.
    * ``regression``: a finite number (not a boolean), returned as a float.
    * ``anomaly``: refused. Anomaly models learn from every event without labels, so a
      label would only wait in the join until it expires.

    A null label is refused as well: joining it would use up the prediction without
    learning, and a real label arriving later would find nothing.

    Raises
    ------
    DecodeError
        With a reason from :data:`LABEL_REASONS`: ``bad_label`` (empty, not UTF-8 JSON,
        nested too deeply to parse, not an object, no ``label`` key, or unreadable Avro:
        the codec's reason is in the message), ``missing_event_id``, ``bad_event_id`` (not a
        string, or a key that is not UTF-8), ``id_too_long``, ``bad_string`` (a lone UTF-16
        surrogate in the id or a class name), ``label_type`` (null, an array or object, a
        type the task does not take, or any label for ``anomaly``), ``non_finite`` (NaN,
        an infinity, or a number beyond a double's range).
    ConfigError
        ``task`` is not a task Riverline knows (a bug in the caller).

    Examples
    --------
    >>> from streams.serialization.catalog import SchemaCatalog
    >>> from streams.settings import REPO_ROOT
    >>> catalog = SchemaCatalog.load(REPO_ROOT / "schemas")
    >>> label = catalog.record("label")
    >>> read_label(b'{"event_id": "e1", "label": 1}', None, catalog=catalog,
    ...            label_schema=label, task="binary")
    ('e1', True)
    >>> read_label(b'{"label": 2.5}', b"e2", catalog=catalog, label_schema=label,
    ...            task="regression")
    ('e2', 2.5)
    """
    if task not in _EXPECTED:
        raise ConfigError(f"task {task!r} is not one of {', '.join(_EXPECTED)}")
    record = _label_record(value, catalog, label_schema)
    event_id = _label_event_id(record.get("event_id"), key, max_id_bytes)
    return event_id, _checked_label(record["label"], task, max_id_bytes)


def _label_record(
    value: bytes | None, catalog: SchemaCatalog, label_schema: SchemaVersion
) -> dict[str, Any]:
    """The label message as a record: Avro (single-object or Confluent-framed) or JSON."""
    if not value:
        raise DecodeError("bad_label", "the label message has no value (empty or null)")
    if value[:2] != SINGLE_OBJECT_MAGIC and value[0] != 0:
        return _json_label(value)
    try:
        _, record = decode_single_object(catalog, bytes(value), label_schema)
    except DecodeError as exc:
        raise DecodeError(
            "bad_label", f"not a readable {label_schema.label} message ({exc.reason}: {exc})"
        ) from exc
    return dict(record)


def _json_label(value: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DecodeError(
            "bad_label", f"the label is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    except RecursionError as exc:
        raise DecodeError(
            "bad_label", "the label is not valid JSON: nested too deeply to parse"
        ) from exc
    except ValueError as exc:  # syntax, or an integer of more digits than Python reads
        raise DecodeError("bad_label", f"the label is not valid JSON: {exc}") from exc
    if type(obj) is not dict:
        raise DecodeError(
            "bad_label", f"a JSON label is an object {_JSON_FORM}, got {describe_value(obj)}"
        )
    if "label" not in obj:
        raise DecodeError("bad_label", f'the JSON object has no "label": send {_JSON_FORM}')
    return obj


def _label_event_id(field: Any, key: bytes | None, max_id_bytes: int) -> str:
    if field is None or field == "":
        if not key:
            raise DecodeError(
                "missing_event_id",
                'the label has no event id: set its "event_id" field or send the event id '
                "as the message key",
            )
        try:
            event_id = bytes(key).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                "bad_event_id",
                f"the message key (the label's event id) is not UTF-8 text ({exc.reason} at "
                f"byte {exc.start})",
            ) from exc
        where = "the message key"
    elif type(field) is str:
        event_id, where = field, "field 'event_id'"
    else:
        raise DecodeError(
            "bad_event_id",
            f"field 'event_id': expected the event id as a string, got {describe_value(field)}",
        )
    _check_text(event_id, where)
    size = len(event_id) if event_id.isascii() else len(event_id.encode("utf-8"))
    if size > max_id_bytes:
        raise DecodeError(
            "id_too_long",
            f"{where}: the event id is {size} bytes of UTF-8, over the limit of {max_id_bytes} "
            f"(RIVERLINE_MAX_ID_BYTES); no event can have it",
        )
    return event_id


def _checked_label(label: Any, task: str, max_id_bytes: int) -> Any:
    kind = type(label)
    if label is None or kind is list or kind is dict:
        raise DecodeError(
            "label_type", f"field 'label': {_EXPECTED[task]}; got {describe_value(label)}"
        )
    if kind is float and not math.isfinite(label):
        raise DecodeError(
            "non_finite", f"field 'label': {label} is not allowed (must be a finite number)"
        )
    checked = _TASK_LABELS.get(task, _refused)(label, kind, max_id_bytes)
    if checked is _REFUSED:
        raise DecodeError(
            "label_type", f"field 'label': {_EXPECTED[task]}; got {describe_value(label)}"
        )
    return checked


#: What a task's label check returns for a label of a type the task does not take.
_REFUSED = object()


def _refused(label: Any, kind: type, max_id_bytes: int) -> Any:
    return _REFUSED


def _binary(label: Any, kind: type, max_id_bytes: int) -> Any:
    if kind is bool:
        return label
    if kind is int and label in (0, 1):
        return label == 1
    return _REFUSED


def _multiclass(label: Any, kind: type, max_id_bytes: int) -> Any:
    if kind is bool or (kind is int and _LONG_RANGE[0] <= label <= _LONG_RANGE[1]):
        return label
    if kind is not str:
        return _REFUSED
    _check_text(label, "field 'label'")
    size = len(label) if label.isascii() else len(label.encode("utf-8"))
    if size > max_id_bytes:
        raise DecodeError(
            "label_type",
            f"field 'label': a class name of {size} bytes of UTF-8 is over the limit of "
            f"{max_id_bytes} (RIVERLINE_MAX_ID_BYTES)",
        )
    return label


def _regression(label: Any, kind: type, max_id_bytes: int) -> Any:
    if kind is float:
        return label
    if kind is not int:
        return _REFUSED
    try:
        return float(label)
    except OverflowError as exc:
        raise DecodeError(
            "non_finite", "field 'label': the integer is beyond a double's range"
        ) from exc


_TASK_LABELS = {"binary": _binary, "multiclass": _multiclass, "regression": _regression}


def _check_text(text: str, where: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DecodeError(
            "bad_string",
            f"{where}: holds a lone UTF-16 surrogate (U+{ord(text[exc.start]):04X} at "
            f"character {exc.start}), which UTF-8 cannot encode",
        ) from exc
