"""Coercion of a parsed JSON object into an Avro schema, under Avro's own bounds.

:class:`JsonCompiler` turns a parsed (fastavro) schema into a coercer ``(value, path) ->
value`` that checks a JSON value against the type and returns what Avro would hold:
timestamps from epoch integers or ISO-8601 text, integral floats as ints, floats rounded
to 32 bits, bytes from code points 0-255, defaults for missing fields, Avro's
``{"type": value}`` form of unions. :class:`streams.serialization.codec.EventDecoder`
documents what it accepts.
"""

from __future__ import annotations

import copy
import json
import struct
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from streams.errors import ConfigError, DecodeError
from streams.serialization.avro_walk import MAX_RECURSION, PRIMITIVES, PlanCompiler, field_error

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "Coercer",
    "JsonCompiler",
    "check_text",
    "describe_value",
]

#: Values allowed inside arrays and maps of one Avro message (a record item counts once
#: per field it holds). At ~200 bytes per Python object this keeps one message's decoded
#: form well under 64 MiB while admitting a 1 MiB array of doubles.
DEFAULT_MAX_ITEMS: Final = 1 << 17

Coercer = Callable[[Any, str], Any]
_MISSING: Final = object()
_INT_RANGE = (-(2**31), 2**31 - 1)
_LONG_RANGE = (-(2**63), 2**63 - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)
_TS_UNITS = {
    "timestamp-millis": timedelta(milliseconds=1),
    "timestamp-micros": timedelta(microseconds=1),
    "local-timestamp-millis": timedelta(milliseconds=1),
    "local-timestamp-micros": timedelta(microseconds=1),
}
_FLOAT32 = struct.Struct("<f")


def describe_value(value: Any) -> str:
    """A value as a JSON reader would name it, shortened."""
    if value is None:
        return "null"
    if value is True or value is False:
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        text = repr(value)
        return f"number {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 40 else value[:37] + "...")
        return f"string {text}"
    if isinstance(value, list):
        return f"array of {len(value)} items"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_text(value: str, path: str, what: str = "string") -> None:
    """Refuse a string UTF-8 cannot encode: a lone UTF-16 surrogate from a JSON escape."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise field_error(
            "bad_string",
            path,
            f"{what} holds a lone UTF-16 surrogate (U+{ord(value[exc.start]):04X} at "
            f"character {exc.start}), which UTF-8 cannot encode; send the text as UTF-8, or "
            f"escape a character beyond U+FFFF as a surrogate pair (\\ud83d\\ude00)",
        ) from exc


def _wrong(path: str, expected: str, value: Any) -> DecodeError:
    return field_error("wrong_type", path, f"expected {expected}, got {describe_value(value)}")


# ---------------------------------------------------------------------------------------
# Coercers of primitive and logical types


def _integral(value: Any, path: str, lo: int, hi: int, name: str) -> int:
    kind = type(value)
    if kind is float:
        if value - value != 0.0:
            raise field_error(
                "non_finite", path, f"{value} is not allowed (must be a finite number)"
            )
        if not value.is_integer():
            raise _wrong(path, f"{name} (a whole number)", value)
        value = int(value)
    elif kind is not int:
        raise _wrong(path, name, value)
    if not lo <= value <= hi:
        raise field_error("wrong_type", path, f"{value} is out of range for {name}")
    return int(value)


def _coerce_null(value: Any, path: str) -> Any:
    if value is not None:
        raise _wrong(path, "null", value)
    return None


def _coerce_boolean(value: Any, path: str) -> Any:
    if value is not True and value is not False:
        raise _wrong(path, "boolean", value)
    return value


def _coerce_int(value: Any, path: str) -> Any:
    if type(value) is int and -(2**31) <= value < 2**31:
        return value
    return _integral(value, path, *_INT_RANGE, "int")


def _coerce_long(value: Any, path: str) -> Any:
    if type(value) is int and -(2**63) <= value < 2**63:
        return value
    return _integral(value, path, *_LONG_RANGE, "long")


def _coerce_real(value: Any, path: str) -> Any:
    kind = type(value)
    if kind is float:
        if value - value != 0.0:
            raise field_error(
                "non_finite", path, f"{value} is not allowed (must be a finite number)"
            )
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError as exc:
            raise field_error("wrong_type", path, "integer too large for a double") from exc
    raise _wrong(path, "number", value)


def _coerce_float(value: Any, path: str) -> Any:
    # Rounded to 32 bits here, so the record is what the next stage reads back from Avro.
    real = _coerce_real(value, path)
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(real))[0]
    except OverflowError as exc:
        raise field_error(
            "wrong_type", path, f"{real} is out of range for float (32 bits)"
        ) from exc


def _coerce_string(value: Any, path: str) -> Any:
    if type(value) is not str:
        raise _wrong(path, "string", value)
    if not value.isascii():
        check_text(value, path)
    return value


def _coerce_bytes(value: Any, path: str) -> Any:
    # Avro's JSON encoding maps bytes to code points 0-255 of a string.
    if type(value) is not str:
        raise _wrong(path, "bytes (as a string)", value)
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise field_error("wrong_type", path, "bytes must be code points 0-255") from exc


_PRIMITIVE_COERCERS: Final[dict[str, Coercer]] = {
    "null": _coerce_null,
    "boolean": _coerce_boolean,
    "int": _coerce_int,
    "long": _coerce_long,
    "float": _coerce_float,
    "double": _coerce_real,
    "string": _coerce_string,
    "bytes": _coerce_bytes,
}


def _timestamp(logical: str) -> Coercer:
    unit = _TS_UNITS[logical]
    expected = f"{logical} (epoch {'milli' if 'millis' in logical else 'micro'}seconds or ISO-8601)"

    def coerce(value: Any, path: str) -> Any:
        if type(value) is str:
            return _parse_timestamp(value, path, unit, expected)
        if value is True or value is False or type(value) not in (int, float):
            raise _wrong(path, expected, value)
        return _integral(value, path, *_LONG_RANGE, expected)

    return coerce


def _parse_timestamp(value: str, path: str, unit: timedelta, expected: str) -> int:
    """ISO-8601 text as a count of ``unit`` since the epoch (naive times are UTC)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise field_error(
            "bad_timestamp",
            path,
            f"{describe_value(value)} is not an ISO-8601 timestamp "
            f"(e.g. 2024-05-01T12:00:00Z) nor epoch {expected.split('epoch ')[1]}",
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are taken as UTC
    try:
        return (moment - _EPOCH) // unit
    except OverflowError as exc:  # e.g. 0001-01-01T00:00+05:00 is before year 1
        raise field_error(
            "bad_timestamp", path, f"{describe_value(value)} is out of range"
        ) from exc


def _coerce_date(value: Any, path: str) -> Any:
    if type(value) is str:
        try:
            return (date.fromisoformat(value) - _EPOCH_DATE).days
        except ValueError as exc:
            raise field_error(
                "bad_timestamp", path, f"{describe_value(value)} is not an ISO-8601 date"
            ) from exc
    return _integral(value, path, *_INT_RANGE, "date (days since epoch or ISO-8601 date)")


# ---------------------------------------------------------------------------------------
# Compiling a schema


class JsonCompiler:
    """Turns a parsed (fastavro) schema into JSON coercers.

    JSON has no bounds of its own, so the coercers apply Avro's: arrays and maps spend
    ``budget[0]`` (reset to ``max_items`` before each message) at the weights the Avro
    walk uses, and a recursive type is entered at most :data:`MAX_RECURSION` levels deep
    (``depth[0]``). What they accept is therefore what the next stage can read back.
    """

    def __init__(self, named: dict[str, Any], max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self.named = named
        self.records: dict[str, Coercer] = {}
        self.compiling: list[str] = []
        self.max_items = max_items
        self.budget = [max_items]
        self.depth = [0]

    def describe(self, schema: Any) -> str:
        """A type as an error message names it."""
        if isinstance(schema, list):
            return " or ".join(self.describe(b) for b in schema)
        if isinstance(schema, str):
            return schema.rsplit(".", 1)[-1] if schema not in PRIMITIVES else schema
        if "logicalType" in schema:
            return str(schema["logicalType"])
        kind = schema["type"]
        if kind in ("record", "error", "enum", "fixed"):
            return f"{kind} {schema['name'].rsplit('.', 1)[-1]}"
        return str(kind) if isinstance(kind, str) else self.describe(kind)

    def compile(self, schema: Any) -> Coercer:
        """The coercer of one type."""
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            return self._name(schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical in _TS_UNITS and kind == "long":
            return _timestamp(logical)
        if logical == "date" and kind == "int":
            return _coerce_date
        if kind in PRIMITIVES:
            return _PRIMITIVE_COERCERS[kind]
        complex_type = self._COMPLEX.get(kind) if isinstance(kind, str) else None
        if complex_type is not None:
            return complex_type(self, schema)
        return self.compile(kind)

    def _name(self, name: str) -> Coercer:
        if name in PRIMITIVES:
            return _PRIMITIVE_COERCERS[name]
        if name in self.compiling:
            return self._nested(name, self.records[name])
        if name in self.records:
            return self.records[name]
        return self.compile(self.named[name])

    def _array(self, schema: dict[str, Any]) -> Coercer:
        item = self.compile(schema["items"])
        spend = self._spender(schema["items"], 0)

        def array(value: Any, path: str) -> Any:
            if type(value) is not list:
                raise _wrong(path, "array", value)
            spend(len(value), path)
            return [item(x, f"{path}[{i}]") for i, x in enumerate(value)]

        return array

    def _map(self, schema: dict[str, Any]) -> Coercer:
        item = self.compile(schema["values"])
        spend = self._spender(schema["values"], 1)

        def map_(value: Any, path: str) -> Any:
            if type(value) is not dict:
                raise _wrong(path, "map (a JSON object)", value)
            spend(len(value), path)
            for k in value:
                if not k.isascii():
                    check_text(k, f"{path}[{k!r}]", "map key")
            return {k: item(x, f"{path}[{k!r}]") for k, x in value.items()}

        return map_

    def _spender(self, item: Any, extra: int) -> Callable[[int, str], None]:
        """Charge ``n`` items of ``item`` against the message's budget, as the Avro walk does.

        The weight is the walk's for the item type compiled on its own, never less than
        the walk's inside the whole schema (a recursive reference weighs one there).
        """
        _, _, weight = PlanCompiler(self.named, require_finite=False).compile(item, "")
        weight = max(weight + extra, 1)
        budget = self.budget
        limit = self.max_items

        def spend(n: int, path: str) -> None:
            budget[0] -= n * weight
            if budget[0] < 0:
                raise field_error(
                    "oversized_collection",
                    path,
                    f"{n} more items exceed the limit of {limit} values in the arrays and maps "
                    f"of one message",
                )

        return spend

    def _nested(self, name: str, record: Coercer) -> Coercer:
        """``record`` entered from inside itself: at most MAX_RECURSION levels, as in Avro."""
        depth = self.depth
        short = name.rsplit(".", 1)[-1]

        def nested(value: Any, path: str) -> Any:
            if depth[0] >= MAX_RECURSION:
                raise field_error(
                    "wrong_type", path, f"{short} nested deeper than {MAX_RECURSION} levels"
                )
            depth[0] += 1
            try:
                return record(value, path)
            finally:
                depth[0] -= 1

        return nested

    def _enum(self, schema: dict[str, Any]) -> Coercer:
        symbols = frozenset(schema["symbols"])
        listing = ", ".join(schema["symbols"][:20]) + (", ..." if len(symbols) > 20 else "")
        name = schema["name"].rsplit(".", 1)[-1]

        def enum(value: Any, path: str) -> Any:
            if type(value) is not str:
                raise _wrong(path, f"enum {name} symbol (a string)", value)
            if value not in symbols:
                raise field_error(
                    "bad_enum", path, f"{describe_value(value)} is not one of {name}: {listing}"
                )
            return value

        return enum

    def _fixed(self, schema: dict[str, Any]) -> Coercer:
        size = int(schema["size"])

        def fixed(value: Any, path: str) -> Any:
            raw = _coerce_bytes(value, path)
            if len(raw) != size:
                raise field_error("wrong_type", path, f"expected {size} bytes, got {len(raw)}")
            return raw

        return fixed

    def _record(self, schema: dict[str, Any]) -> Coercer:
        name = schema["name"]
        fields: list[tuple[str, Coercer | None, Callable[[], Any] | None]] = []

        def record(value: Any, path: str) -> Any:
            if type(value) is not dict:
                raise _wrong(path, f"record {name.rsplit('.', 1)[-1]} (a JSON object)", value)
            out = {}
            for fname, coerce, default in fields:
                child = f"{path}.{fname}" if path else fname
                item = value.get(fname, _MISSING)
                if item is _MISSING:
                    if default is None:
                        raise field_error("missing_field", child, "required field is missing")
                    out[fname] = default()
                else:
                    assert coerce is not None
                    out[fname] = coerce(item, child)
            return out

        self.records[name] = record  # before the fields: recursive types refer to it
        self.compiling.append(name)
        for f in schema["fields"]:
            coerce = self.compile(f["type"])
            fields.append((f["name"], coerce, self._default(f, coerce, name)))
        self.compiling.pop()
        return record

    _COMPLEX: Final[dict[str, Callable[[JsonCompiler, dict[str, Any]], Coercer]]] = {
        "record": _record,
        "error": _record,
        "enum": _enum,
        "fixed": _fixed,
        "array": _array,
        "map": _map,
    }

    def _default(self, f: dict[str, Any], coerce: Coercer, record: str) -> Callable[[], Any] | None:
        if "default" not in f:
            return None
        raw = f["default"]
        ftype = f["type"]
        if isinstance(ftype, list) and ftype:
            coerce = self.compile(ftype[0])  # a union's default belongs to its first branch
        try:
            value = coerce(raw, f["name"])
        except DecodeError as exc:
            raise ConfigError(
                f"record {record}: default of field {f['name']!r} does not match its type "
                f"({exc}); fix the schema"
            ) from exc
        if isinstance(value, list | dict):
            return lambda: copy.deepcopy(value)
        return lambda: value

    def _union(self, branches: list[Any]) -> Coercer:
        by_type, tagged = self._branches(branches)
        expected = " or ".join(self.describe(b) for b in branches)
        budget = self.budget

        def union(value: Any, path: str) -> Any:
            first: DecodeError | None = None
            left = budget[0]
            for fn in by_type.get(type(value), ()):
                try:
                    return fn(value, path)
                except DecodeError as exc:
                    budget[0] = left  # a branch that failed spends nothing
                    first = first or exc
            if type(value) is dict and len(value) == 1:
                # Avro's own JSON encoding of unions: {"double": 1.5}
                ((tag, inner),) = value.items()
                if tag in tagged:
                    return tagged[tag](inner, path)
            if first is not None:
                raise first
            raise _wrong(path, expected, value)

        return union

    def _branches(
        self, branches: list[Any]
    ) -> tuple[dict[type, list[Coercer]], dict[str, Coercer]]:
        """The coercers to try for each Python type of a JSON value, in order, and the
        coercer of each branch by its tag (Avro's ``{"type": value}``)."""
        groups: dict[str, list[Coercer]] = {
            g: [] for g in ("null", "bool", "str", "list", "dict", "integral", "double", "float")
        }
        tagged: dict[str, Coercer] = {}
        for b in branches:
            fn = self.compile(b)
            tag, short, base = self._kind(b)
            tagged[tag] = fn
            tagged[short] = fn
            for group in _groups_of(base, tag):
                groups[group].append(fn)
        real = groups["double"] + groups["float"]  # a float goes to a double branch first
        by_type: dict[type, list[Coercer]] = {
            type(None): groups["null"],
            bool: groups["bool"],
            int: groups["integral"] + real,
            float: real + groups["integral"],
            str: groups["str"],
            list: groups["list"],
            dict: groups["dict"],
        }
        return by_type, tagged

    def _kind(self, schema: Any) -> tuple[str, str, str]:
        """(tag, short tag, base kind) of a union branch."""
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return schema, schema, schema
            target = self.named.get(schema, {})
            return schema, schema.rsplit(".", 1)[-1], str(target.get("type", "record"))
        kind = schema["type"]
        if isinstance(kind, str) and kind in PRIMITIVES:
            logical = schema.get("logicalType")
            return (logical or kind), kind, kind
        if kind in ("record", "error", "enum", "fixed"):
            return schema["name"], schema["name"].rsplit(".", 1)[-1], kind
        return kind, kind, kind


#: The groups of union branches by base kind (a record or map otherwise: "dict").
_GROUPS: Final = {
    "null": ("null",),
    "boolean": ("bool",),
    "int": ("integral",),
    "long": ("integral",),
    "double": ("double",),
    "float": ("float",),
    "string": ("str",),
    "bytes": ("str",),
    "enum": ("str",),
    "fixed": ("str",),
    "array": ("list",),
}


def _groups_of(base: str, tag: str) -> tuple[str, ...]:
    """The groups a union branch of ``base`` kind belongs to; a timestamp or date also
    takes strings (ISO-8601)."""
    groups = _GROUPS.get(base, ("dict",))
    if groups == ("integral",) and (tag in _TS_UNITS or tag == "date"):
        return ("integral", "str")
    return groups
