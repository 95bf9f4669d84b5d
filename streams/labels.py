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
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

from streams.catalog import SchemaCatalog, SchemaVersion
from streams.codec import DEFAULT_MAX_ID_BYTES, SINGLE_OBJECT_MAGIC, decode_single_object
from streams.errors import ConfigError, DecodeError
from streams.model import Prediction

__all__ = ["LABEL_REASONS", "LabelJoin", "Pending", "read_label"]


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
    >>> from streams.catalog import SchemaCatalog
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
    if not value:
        raise DecodeError("bad_label", "the label message has no value (empty or null)")
    if value[:2] == SINGLE_OBJECT_MAGIC:
        try:
            _, record = decode_single_object(catalog, bytes(value), label_schema)
        except DecodeError as exc:
            raise DecodeError(
                "bad_label", f"not a readable {label_schema.label} message ({exc.reason}: {exc})"
            ) from exc
    else:
        record = _json_label(value)
    event_id = _label_event_id(record.get("event_id"), key, max_id_bytes)
    return event_id, _checked_label(record["label"], task, max_id_bytes)


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
        raise DecodeError("bad_label", f"a JSON label is an object {_JSON_FORM}, got {_kind(obj)}")
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
            f"field 'event_id': expected the event id as a string, got {_kind(field)}",
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
        raise DecodeError("label_type", f"field 'label': {_EXPECTED[task]}; got {_kind(label)}")
    if kind is float and not math.isfinite(label):
        raise DecodeError(
            "non_finite", f"field 'label': {label} is not allowed (must be a finite number)"
        )
    if task == "binary":
        if kind is bool:
            return label
        if kind is int and label in (0, 1):
            return label == 1
    elif task == "multiclass":
        if kind is bool:
            return label
        if kind is int and _LONG_RANGE[0] <= label <= _LONG_RANGE[1]:
            return label
        if kind is str:
            _check_text(label, "field 'label'")
            size = len(label) if label.isascii() else len(label.encode("utf-8"))
            if size <= max_id_bytes:
                return label
            raise DecodeError(
                "label_type",
                f"field 'label': a class name of {size} bytes of UTF-8 is over the limit of "
                f"{max_id_bytes} (RIVERLINE_MAX_ID_BYTES)",
            )
    elif task == "regression":
        if kind is float:
            return label
        if kind is int:
            try:
                return float(label)
            except OverflowError as exc:
                raise DecodeError(
                    "non_finite", "field 'label': the integer is beyond a double's range"
                ) from exc
    raise DecodeError("label_type", f"field 'label': {_EXPECTED[task]}; got {_kind(label)}")


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


def _kind(value: Any) -> str:
    """A JSON value's type as a producer would name it, with short scalars shown."""
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        text = repr(value)
        return f"number {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, str):
        return f"string {json.dumps(value if len(value) <= 40 else value[:37] + '...')}"
    if isinstance(value, list):
        return f"array of {len(value)} items"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
