"""Decoding raw events (JSON, Avro single-object, Confluent) and encoding Riverline's own.

Wire formats on ``P.raw`` are detected per message:

* ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint + body: Avro single-object.
* ``00`` + 4-byte big-endian Confluent schema id + body: Confluent framing; ids map to
  catalog versions through ``schemas/confluent-ids.toml``.
* anything else: a UTF-8 JSON object.

A value that starts with either Avro magic but is too short to hold its header is
``truncated`` (no JSON text starts with those bytes).

Every decoded record conforms to the subject's latest (reader) schema, fields in schema
order. **Logical types are returned as their underlying values**: ``timestamp-millis``
is an ``int`` of epoch milliseconds (UTC), ``timestamp-micros`` epoch microseconds,
``date`` days since the epoch, ``uuid`` a string, ``decimal`` raw bytes. Writers accept
those ints (and ``datetime`` objects, which fastavro converts).

Avro is untrusted input. Before fastavro reads a body, a validating walk over the bytes
(compiled once per writer schema) checks everything fastavro lets through: union and
enum indices in range, varints no longer than their type allows, booleans 0 or 1,
string/bytes/collection lengths within the remaining bytes, at most ``max_items``
values inside arrays and maps per message (so a few bytes cannot claim a billion
nulls), bounded nesting of recursive types, finite floats and doubles (on raw events;
optional for Riverline's own records), and that the body is consumed exactly. A
hostile message of ``max_bytes`` therefore costs bounded time and memory.

JSON is validated and coerced against the latest schema: see :class:`EventDecoder`.
Whatever JSON admits but Avro or UTF-8 cannot hold is refused there: a string with a lone
UTF-16 surrogate (``"\\ud800"``), more array and map values than ``max_items``, recursive
types nested deeper than Avro reading allows. A decoded record therefore re-encodes, and
reads back equal, under the same bounds.

A decoder that knows the pipeline's id, key and time fields also refuses an event id or
partitioning key longer than ``max_id_bytes`` of UTF-8 (they travel in headers and keys
of every output), and an event time before 1970 or further ahead of the ingest time than
``max_event_time_ahead`` (one such event would move every watermark into the future).

Decode failures raise :class:`~streams.errors.DecodeError` with a stable ``reason``:
``empty``, ``too_large``, ``bad_key``, ``not_json``, ``not_object``, ``missing_field``,
``wrong_type``, ``non_finite``, ``bad_enum``, ``bad_timestamp``, ``unknown_fingerprint``,
``unknown_confluent_id``, ``truncated``, ``trailing_bytes``, ``bad_union_index``,
``bad_enum_index``, ``oversized_collection``, ``invalid_avro``, ``bad_string``,
``id_too_long``, ``bad_event_time``.
"""

from __future__ import annotations

import copy
import json
import math
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from io import BytesIO
from typing import Any, Final

import fastavro
from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError
from fastavro.validation import validate as _validate_record

from streams.errors import ConfigError, DecodeError, RiverlineError
from streams.serialization.avro_writer import AvroWriter, Unsupported, compile_writer
from streams.serialization.catalog import SchemaCatalog, SchemaVersion

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENT_TIME_AHEAD",
    "DEFAULT_MAX_ID_BYTES",
    "DEFAULT_MAX_ITEMS",
    "REASONS",
    "SINGLE_OBJECT_MAGIC",
    "DecodedEvent",
    "EncodeError",
    "EventDecoder",
    "decode_single_object",
    "encode_confluent",
    "encode_single_object",
]

#: Every DecodeError reason this module raises (stable: dead-letter reasons, metric labels).
REASONS: Final = (
    "empty",
    "too_large",
    "bad_key",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "non_finite",
    "bad_enum",
    "bad_timestamp",
    "unknown_fingerprint",
    "unknown_confluent_id",
    "truncated",
    "trailing_bytes",
    "bad_union_index",
    "bad_enum_index",
    "oversized_collection",
    "invalid_avro",
    "bad_string",
    "id_too_long",
    "bad_event_time",
)

SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
DEFAULT_MAX_BYTES: Final = 1 << 20
#: Values allowed inside arrays and maps of one Avro message (a record item counts once
#: per field it holds). At ~200 bytes per Python object this keeps one message's decoded
#: form well under 64 MiB while admitting a 1 MiB array of doubles.
DEFAULT_MAX_ITEMS: Final = 1 << 17
#: Nesting allowed through recursive named types (fastavro's reader recurses in C).
MAX_RECURSION: Final = 64
#: UTF-8 bytes allowed in an event id or partitioning key (``Settings.max_id_bytes``).
DEFAULT_MAX_ID_BYTES: Final = 1024
#: Seconds an event time may be ahead of the ingest time (``Settings.max_event_time_ahead``).
DEFAULT_MAX_EVENT_TIME_AHEAD: Final = 86_400.0

_SINGLE_OBJECT_HEADER = 10
_CONFLUENT_HEADER = 5


class EncodeError(RiverlineError):
    """A record could not be encoded with the given schema (a bug in the caller's data)."""


@dataclass(frozen=True)
class DecodedEvent:
    """A raw event after validation.

    ``record`` conforms to the subject's latest schema (fields in schema order, logical
    types as plain ints); ``writer`` is the version the producer wrote with (the latest
    for JSON); ``ignored`` names top-level JSON keys the schema does not know (dropped,
    listed so the caller can count them; always empty for Avro); ``event_ms`` is the
    checked event time in epoch milliseconds when the decoder knows the time field
    (``timestamp-micros`` converted), else None.
    """

    record: dict[str, Any]
    writer: SchemaVersion
    wire_format: str
    ignored: tuple[str, ...] = ()
    event_ms: int | None = None


def _where(path: str) -> str:
    return f"field '{path}': " if path else ""


def _fail(reason: str, path: str, message: str) -> DecodeError:
    return DecodeError(reason, f"{_where(path)}{message}")


# ---------------------------------------------------------------------------------------
# Avro: a validating walk over the bytes, compiled per writer schema.
#
# A plan is a tuple of ops ``(kind, arg, path)``; a record's fields are flattened into its
# parent's plan and adjacent fixed-width fields are merged, so the phishing schema is six
# ops. Walking never builds values; fastavro does that afterwards on validated bytes.

_K_LONG = 0  # zig-zag varint, at most 10 bytes / 64 bits
_K_REAL = 1  # run of floats/doubles, arg = (struct.Struct, paths); checked finite
_K_STR = 2  # string or bytes: length + data
_K_INT = 3  # zig-zag varint, at most 5 bytes / 32 bits
_K_SKIP = 4  # fixed-width bytes without checks, arg = width
_K_BOOL = 5
_K_UNION = 6  # arg = tuple of branch plans
_K_ENUM = 7  # arg = number of symbols
_K_ARRAY = 8  # arg = _Collection
_K_MAP = 9  # arg = _Collection (items are key + value)
_K_REF = 10  # arg = _Ref, a recursive named type
_K_UTF8 = 11  # string checked for UTF-8: only in the plan that locates a bad string

_Op = tuple[int, Any, Any]
_Plan = tuple[_Op, ...]

_BULK_NONE = 0
_BULK_SKIP = 1
_BULK_REAL = 2
_BULK_BOOL = 3


@dataclass(frozen=True)
class _Collection:
    item: _Plan
    min_size: int  # bytes one item takes at least
    weight: int  # values one item produces
    bulk: int
    bulk_arg: Any  # width for _BULK_SKIP, struct format char for _BULK_REAL


class _Ref:
    """A recursive named type: its plan is filled in once the type is compiled."""

    __slots__ = ("plan",)

    def __init__(self) -> None:
        self.plan: _Plan = ()


def _read_long(data: bytes, pos: int, path: str) -> tuple[int, int]:
    """Zig-zag varint at ``pos`` (at most 10 bytes); returns (value, next position)."""
    shift = 0
    acc = 0
    start = pos
    while True:
        b = data[pos]
        pos += 1
        acc |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if pos - start >= 10:
            raise _fail("invalid_avro", path, "varint longer than 10 bytes")
    if acc >= 1 << 64:
        raise _fail("invalid_avro", path, "varint does not fit in 64 bits")
    return (acc >> 1) ^ -(acc & 1), pos


def _skip_varint(data: bytes, pos: int, path: str, max_len: int, last_max: int) -> int:
    start = pos
    while True:
        b = data[pos]
        pos += 1
        if b < 0x80:
            break
        if pos - start >= max_len:
            raise _fail("invalid_avro", path, f"varint longer than {max_len} bytes")
    if pos - start == max_len and b > last_max:
        kind = "int (32 bits)" if max_len == 5 else "long (64 bits)"
        raise _fail("invalid_avro", path, f"value does not fit in an Avro {kind}")
    return pos


def _check_finite(values: tuple[float, ...], paths: tuple[str, ...]) -> None:
    # Called only when a fast sum check flagged the run; a finite overflow ends here too.
    for value, path in zip(values, paths, strict=False):
        if not math.isfinite(value):
            raise _fail("non_finite", path, f"{value} is not allowed (must be a finite number)")


def _walk(plan: _Plan, data: bytes, pos: int, end: int, limits: list[int] | None) -> int:
    """Validate ``data[pos:]`` against ``plan``; return the position after it.

    ``end`` must be ``len(data)``: reading past it raises IndexError, reported as
    ``truncated`` for the op being walked.
    """
    path: Any = ""
    try:
        for kind, arg, path in plan:
            if kind == _K_LONG:
                if data[pos] < 0x80:
                    pos += 1
                else:
                    pos = _skip_varint(data, pos, path, 10, 0x01)
            elif kind == _K_REAL:
                nxt = pos + arg[0].size
                if nxt > end:
                    raise IndexError
                values = arg[0].unpack_from(data, pos)
                total = sum(values)
                if total - total != 0.0:  # NaN or infinity somewhere (or a finite overflow)
                    _check_finite(values, arg[1])
                pos = nxt
            elif kind == _K_STR:
                n = data[pos]
                if n < 0x80:
                    pos += 1
                    n = (n >> 1) ^ -(n & 1)
                else:
                    n, pos = _read_long(data, pos, path)
                if n < 0:
                    raise _fail("invalid_avro", path, f"negative length {n}")
                if n > end - pos:
                    raise _fail(
                        "oversized_collection",
                        path,
                        f"length {n} exceeds the {end - pos} bytes left in the message",
                    )
                pos += n
            elif kind == _K_INT:
                if data[pos] < 0x80:
                    pos += 1
                else:
                    pos = _skip_varint(data, pos, path, 5, 0x0F)
            elif kind == _K_UNION:
                i = data[pos]
                if i < 0x80:
                    pos += 1
                    i = (i >> 1) ^ -(i & 1)
                else:
                    i, pos = _read_long(data, pos, path)
                if not 0 <= i < len(arg):
                    raise _fail(
                        "bad_union_index",
                        path,
                        f"union index {i} out of range (the union has {len(arg)} branches)",
                    )
                if arg[i]:
                    pos = _walk(arg[i], data, pos, end, limits)
            elif kind == _K_SKIP:
                pos += arg
                if pos > end:
                    raise IndexError
            elif kind == _K_BOOL:
                if data[pos] > 1:
                    raise _fail(
                        "invalid_avro", path, f"boolean byte {data[pos]:#04x} is not 0 or 1"
                    )
                pos += 1
            elif kind == _K_ENUM:
                i, pos = _read_long(data, pos, path)
                if not 0 <= i < arg:
                    raise _fail(
                        "bad_enum_index",
                        path,
                        f"enum index {i} out of range (the enum has {arg} symbols)",
                    )
            elif kind in (_K_ARRAY, _K_MAP):
                pos = _walk_collection(arg, data, pos, end, limits, path)
            elif kind == _K_UTF8:
                n, pos = _read_long(data, pos, path)
                if not 0 <= n <= end - pos:
                    raise _fail("invalid_avro", path, f"bad string length {n}")
                try:
                    data[pos : pos + n].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _fail(
                        "invalid_avro",
                        path,
                        f"string is not valid UTF-8 ({exc.reason} at byte {exc.start})",
                    ) from exc
                pos += n
            else:  # _K_REF
                assert limits is not None
                limits[1] -= 1
                if limits[1] < 0:
                    raise _fail("invalid_avro", path, f"nested deeper than {MAX_RECURSION} levels")
                pos = _walk(arg.plan, data, pos, end, limits)
                limits[1] += 1
    except IndexError as exc:
        raise _fail("truncated", path, "message ends in the middle of this value") from exc
    return pos


def _walk_collection(
    coll: _Collection, data: bytes, pos: int, end: int, limits: list[int] | None, path: str
) -> int:
    assert limits is not None
    while True:
        count, pos = _read_long(data, pos, path)
        if count == 0:
            return pos
        block_end = -1
        if count < 0:
            count = -count
            size, pos = _read_long(data, pos, path)
            if not 0 <= size <= end - pos:
                raise _fail(
                    "oversized_collection",
                    path,
                    f"block of {size} bytes exceeds the {end - pos} bytes left in the message",
                )
            block_end = pos + size
        if count * coll.min_size > end - pos:
            raise _fail(
                "oversized_collection",
                path,
                f"{count} items need at least {count * coll.min_size} bytes but only "
                f"{end - pos} are left",
            )
        limits[0] -= count * coll.weight
        if limits[0] < 0:
            raise _fail(
                "oversized_collection",
                path,
                f"{count} more items exceed the limit of values per message",
            )
        if coll.bulk == _BULK_SKIP:
            pos += count * coll.bulk_arg
        elif coll.bulk == _BULK_REAL:
            fmt = struct.Struct(f"<{count}{coll.bulk_arg}")
            values = fmt.unpack_from(data, pos)
            total = sum(values)
            if total - total != 0.0:
                _check_finite(values, (f"{path}[]",) * count)
            pos += fmt.size
        elif coll.bulk == _BULK_BOOL:
            if data[pos : pos + count].translate(None, b"\x00\x01"):
                raise _fail("invalid_avro", f"{path}[]", "boolean byte is not 0 or 1")
            pos += count
        elif coll.item:
            item = coll.item
            for _ in range(count):
                pos = _walk(item, data, pos, end, limits)
        if block_end >= 0 and pos != block_end:
            raise _fail("invalid_avro", path, f"block size says {block_end} but items end at {pos}")


_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))


class _PlanCompiler:
    """Turns a parsed (fastavro) schema into a walk plan."""

    def __init__(self, named: dict[str, Any], require_finite: bool, utf8: bool = False) -> None:
        self.named = named
        self.require_finite = require_finite
        self.string = _K_UTF8 if utf8 else _K_STR
        self.stack: list[str] = []
        self.refs: dict[str, _Ref] = {}
        self.needs_limits = False

    def compile(self, schema: Any, path: str) -> tuple[list[_Op], int, int]:
        """(ops, minimum encoded size, values produced) for one type at ``path``."""
        if isinstance(schema, list):
            branches = [self.compile(b, path) for b in schema]
            plans = tuple(_merge(ops) for ops, _, _ in branches)
            min_size = 1 + min((m for _, m, _ in branches), default=0)
            weight = max((w for _, _, w in branches), default=1)
            return [(_K_UNION, plans, path)], min_size, weight
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return self._primitive(schema, path)
            if schema in self.stack:
                self.needs_limits = True
                ref = self.refs.setdefault(schema, _Ref())
                return [(_K_REF, ref, path)], 0, 1
            return self.compile(self.named[schema], path)
        kind = schema["type"]
        if kind in ("record", "error"):
            name = schema["name"]
            if name in self.stack:
                self.needs_limits = True
                ref = self.refs.setdefault(name, _Ref())
                return [(_K_REF, ref, path)], 0, 1
            self.stack.append(name)
            ops: list[_Op] = []
            min_size = 0
            weight = 1
            for f in schema["fields"]:
                child = f"{path}.{f['name']}" if path else f["name"]
                f_ops, f_min, f_weight = self.compile(f["type"], child)
                ops.extend(f_ops)
                min_size += f_min
                weight += f_weight
            self.stack.pop()
            if name in self.refs:
                self.refs[name].plan = _merge(ops)
            return ops, min_size, weight
        if kind == "enum":
            return [(_K_ENUM, len(schema["symbols"]), path)], 1, 1
        if kind == "fixed":
            size = int(schema["size"])
            return ([(_K_SKIP, size, path)] if size else []), size, 1
        if kind in ("array", "map"):
            self.needs_limits = True
            is_map = kind == "map"
            child = f"{path}{{}}" if is_map else f"{path}[]"
            item_ops, item_min, item_weight = self.compile(
                schema["values" if is_map else "items"], child
            )
            if is_map:
                item_ops = [(self.string, None, f"{path} (map key)"), *item_ops]
                item_min += 1
                item_weight += 1
            item = _merge(item_ops)
            bulk, bulk_arg = _BULK_NONE, None
            if not is_map and len(item) == 1:
                op_kind, op_arg, _ = item[0]
                if op_kind == _K_SKIP:
                    bulk, bulk_arg = _BULK_SKIP, op_arg
                elif op_kind == _K_BOOL:
                    bulk = _BULK_BOOL
                elif op_kind == _K_REAL and len(op_arg[1]) == 1:
                    bulk, bulk_arg = _BULK_REAL, op_arg[0].format[-1]
            coll = _Collection(item, item_min, max(item_weight, 1), bulk, bulk_arg)
            return [(_K_ARRAY if not is_map else _K_MAP, coll, path)], 1, 1
        if kind in _PRIMITIVES:  # {"type": "long", "logicalType": ...}
            return self._primitive(kind, path)
        return self.compile(kind, path)  # {"type": "some.Named"}

    def _primitive(self, kind: str, path: str) -> tuple[list[_Op], int, int]:
        if kind == "null":
            return [], 0, 1
        if kind == "boolean":
            return [(_K_BOOL, None, path)], 1, 1
        if kind == "int":
            return [(_K_INT, None, path)], 1, 1
        if kind == "long":
            return [(_K_LONG, None, path)], 1, 1
        if kind == "string":
            return [(self.string, None, path)], 1, 1
        if kind == "bytes":
            return [(_K_STR, None, path)], 1, 1
        width = 4 if kind == "float" else 8
        if not self.require_finite:
            return [(_K_SKIP, width, path)], width, 1
        return [(_K_REAL, ("f" if kind == "float" else "d", (path,)), path)], width, 1


def _merge(ops: list[_Op]) -> _Plan:
    """Merge adjacent fixed-width ops into one; build the structs of float runs."""
    merged: list[_Op] = []
    for op in ops:
        if merged:
            kind, arg, path = merged[-1]
            if op[0] == _K_SKIP and kind == _K_SKIP:
                merged[-1] = (_K_SKIP, arg + op[1], path)
                continue
            if op[0] == _K_REAL and kind == _K_REAL and not isinstance(arg[0], struct.Struct):
                merged[-1] = (_K_REAL, (arg[0] + op[1][0], arg[1] + op[1][1]), path)
                continue
        merged.append(op)
    out: list[_Op] = []
    for kind, arg, path in merged:
        if kind == _K_REAL and not isinstance(arg[0], struct.Struct):
            arg = (struct.Struct("<" + arg[0]), arg[1])
        out.append((kind, arg, path))
    return tuple(out)


def _strip_logical(schema: Any) -> Any:
    """A copy of a raw schema without logicalType, so fastavro returns plain ints."""
    if isinstance(schema, list):
        return [_strip_logical(b) for b in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    kind = out.get("type")
    if kind in ("record", "error"):
        out["fields"] = [{**f, "type": _strip_logical(f["type"])} for f in out["fields"]]
    elif kind == "array":
        out["items"] = _strip_logical(out["items"])
    elif kind == "map":
        out["values"] = _strip_logical(out["values"])
    elif isinstance(kind, dict | list):
        out["type"] = _strip_logical(kind)
    else:
        out.pop("logicalType", None)
    return out


def _reorderer(schema: Any, named: dict[str, Any]) -> Callable[[Any], Any] | None:
    """A function putting records back in reader field order (fastavro appends defaults)."""
    built: dict[str, Callable[[Any], Any]] = {}

    def build(s: Any) -> Callable[[Any], Any] | None:
        if isinstance(s, str):
            if s in _PRIMITIVES:
                return None
            if s in built:
                return built[s]
            s = named.get(s, s)
            if isinstance(s, str):
                return None
        if isinstance(s, list):
            branches = [(b, build(b)) for b in s]
            records = [
                (frozenset(f["name"] for f in _resolve_named(b, named)["fields"]), fn)
                for b, fn in branches
                if fn is not None and _resolve_named(b, named).get("type") in ("record", "error")
            ]
            if not records:
                return None

            def union(v: Any) -> Any:
                if isinstance(v, dict):
                    keys = v.keys()
                    for names, fn in records:
                        if keys == names:
                            return fn(v)
                return v

            return union
        kind = s.get("type")
        if kind in ("record", "error"):
            if s["name"] in built:
                return built[s["name"]]
            fields: list[tuple[str, Callable[[Any], Any] | None]] = []

            def record(v: Any) -> Any:
                return {n: (fn(v[n]) if fn is not None else v[n]) for n, fn in fields}

            built[s["name"]] = record  # before the fields: recursive types refer to it
            fields.extend((f["name"], build(f["type"])) for f in s["fields"])
            return record
        if kind == "array":
            item = build(s["items"])
            return None if item is None else (lambda v: [item(x) for x in v])
        if kind == "map":
            value = build(s["values"])
            return None if value is None else (lambda v: {k: value(x) for k, x in v.items()})
        if isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in _PRIMITIVES):
            return build(kind) if kind not in ("enum", "fixed") else None
        return None

    return build(schema)


def _resolve_named(schema: Any, named: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema, str):
        if schema not in named:
            return {}
        schema = named[schema]
    return schema if isinstance(schema, dict) else {}


class _AvroReader:
    """Bounded decoding of one writer version into one reader version."""

    __slots__ = (
        "max_items",
        "needs_limits",
        "plan",
        "r_parsed",
        "reader",
        "reorder",
        "w_parsed",
        "writer",
    )

    def __init__(
        self,
        writer: SchemaVersion,
        reader: SchemaVersion,
        *,
        require_finite: bool,
        max_items: int,
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.max_items = max_items
        compiler = _PlanCompiler(writer.parsed.get("__named_schemas", {}), require_finite)
        ops, _, _ = compiler.compile(writer.parsed, "")
        self.plan = _merge(ops)
        self.needs_limits = compiler.needs_limits
        self.w_parsed = fastavro.parse_schema(_strip_logical(writer.schema))
        self.r_parsed: Any = None
        self.reorder: Callable[[Any], Any] | None = None
        if writer.canonical != reader.canonical or writer.schema != reader.schema:
            self.r_parsed = fastavro.parse_schema(_strip_logical(reader.schema))
            self.reorder = _reorderer(reader.parsed, reader.parsed.get("__named_schemas", {}))

    def read(self, data: bytes, offset: int) -> dict[str, Any]:
        end = len(data)
        limits = [self.max_items, MAX_RECURSION] if self.needs_limits else None
        pos = _walk(self.plan, data, offset, end, limits)
        if pos != end:
            raise DecodeError(
                "trailing_bytes",
                f"{end - pos} bytes follow the end of the {self.writer.label} record",
            )
        fo = BytesIO(data)
        fo.seek(offset)
        try:
            record = schemaless_reader(fo, self.w_parsed, self.r_parsed)
        except UnicodeDecodeError as exc:
            self._locate_bad_string(data, offset)
            raise DecodeError("invalid_avro", f"a string is not valid UTF-8: {exc}") from exc
        except Exception as exc:  # resolution errors and anything the walk did not foresee
            raise DecodeError(
                "invalid_avro",
                f"cannot read {self.writer.label} as {self.reader.label}: "
                f"{type(exc).__name__}: {exc}",
            ) from exc
        if fo.tell() != end:
            raise DecodeError(
                "trailing_bytes", f"{end - fo.tell()} bytes follow the end of the record"
            )
        if self.reorder is not None:
            record = self.reorder(record)
        if not isinstance(record, dict):
            raise DecodeError("invalid_avro", f"{self.writer.label} did not decode to a record")
        return record

    def _locate_bad_string(self, data: bytes, offset: int) -> None:
        """Raise the DecodeError naming the field of the first string that is not UTF-8."""
        compiler = _PlanCompiler(
            self.writer.parsed.get("__named_schemas", {}), require_finite=False, utf8=True
        )
        ops, _, _ = compiler.compile(self.writer.parsed, "")
        limits = [self.max_items, MAX_RECURSION]
        _walk(_merge(ops), data, offset, len(data), limits)


# ---------------------------------------------------------------------------------------
# JSON: coercion of a parsed JSON object into the latest schema.

_Coercer = Callable[[Any, str], Any]
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


#: The last millisecond of 9999-12-31, the latest time a datetime holds.
_MAX_EVENT_MS: Final = 253_402_300_799_999
_MICROS = frozenset(("timestamp-micros", "local-timestamp-micros"))


def _is_number(schema: Any) -> bool:
    """Whether a field type (or a branch of its union) holds numbers."""
    if isinstance(schema, list):
        return any(_is_number(b) for b in schema)
    if isinstance(schema, dict):
        schema = schema.get("type")
    return schema in ("int", "long", "float", "double")


def _is_micros(schema: Any) -> bool:
    """Whether a field type (or a branch of its union) counts microseconds."""
    if isinstance(schema, list):
        return any(_is_micros(b) for b in schema)
    return isinstance(schema, dict) and schema.get("logicalType") in _MICROS


def _iso(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC where a datetime can hold them."""
    if 0 <= ms <= _MAX_EVENT_MS:
        return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
    return f"{ms} ms"


def _describe(value: Any) -> str:
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


def _wrong(path: str, expected: str, value: Any) -> DecodeError:
    return _fail("wrong_type", path, f"expected {expected}, got {_describe(value)}")


def _integral(value: Any, path: str, lo: int, hi: int, name: str) -> int:
    kind = type(value)
    if kind is float:
        if value - value != 0.0:
            raise _fail("non_finite", path, f"{value} is not allowed (must be a finite number)")
        if not value.is_integer():
            raise _wrong(path, f"{name} (a whole number)", value)
        value = int(value)
    elif kind is not int:
        raise _wrong(path, name, value)
    if not lo <= value <= hi:
        raise _fail("wrong_type", path, f"{value} is out of range for {name}")
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
            raise _fail("non_finite", path, f"{value} is not allowed (must be a finite number)")
        return value
    if kind is int:
        try:
            return float(value)
        except OverflowError as exc:
            raise _fail("wrong_type", path, "integer too large for a double") from exc
    raise _wrong(path, "number", value)


_FLOAT32 = struct.Struct("<f")


def _coerce_float(value: Any, path: str) -> Any:
    # Rounded to 32 bits here, so the record is what the next stage reads back from Avro.
    real = _coerce_real(value, path)
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(real))[0]
    except OverflowError as exc:
        raise _fail("wrong_type", path, f"{real} is out of range for float (32 bits)") from exc


def _check_text(value: str, path: str, what: str = "string") -> None:
    """Refuse a string UTF-8 cannot encode: a lone UTF-16 surrogate from a JSON escape."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(
            "bad_string",
            path,
            f"{what} holds a lone UTF-16 surrogate (U+{ord(value[exc.start]):04X} at "
            f"character {exc.start}), which UTF-8 cannot encode; send the text as UTF-8, or "
            f"escape a character beyond U+FFFF as a surrogate pair (\\ud83d\\ude00)",
        ) from exc


def _coerce_string(value: Any, path: str) -> Any:
    if type(value) is not str:
        raise _wrong(path, "string", value)
    if not value.isascii():
        _check_text(value, path)
    return value


def _coerce_bytes(value: Any, path: str) -> Any:
    # Avro's JSON encoding maps bytes to code points 0-255 of a string.
    if type(value) is not str:
        raise _wrong(path, "bytes (as a string)", value)
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise _fail("wrong_type", path, "bytes must be code points 0-255") from exc


def _timestamp(logical: str) -> _Coercer:
    unit = _TS_UNITS[logical]
    expected = f"{logical} (epoch {'milli' if 'millis' in logical else 'micro'}seconds or ISO-8601)"

    def coerce(value: Any, path: str) -> Any:
        if type(value) is str:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError as exc:
                raise _fail(
                    "bad_timestamp",
                    path,
                    f"{_describe(value)} is not an ISO-8601 timestamp "
                    f"(e.g. 2024-05-01T12:00:00Z) nor epoch {expected.split('epoch ')[1]}",
                ) from exc
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)  # naive times are taken as UTC
            try:
                return (moment - _EPOCH) // unit
            except OverflowError as exc:  # e.g. 0001-01-01T00:00+05:00 is before year 1
                raise _fail("bad_timestamp", path, f"{_describe(value)} is out of range") from exc
        if value is True or value is False or type(value) not in (int, float):
            raise _wrong(path, expected, value)
        return _integral(value, path, *_LONG_RANGE, expected)

    return coerce


def _coerce_date(value: Any, path: str) -> Any:
    if type(value) is str:
        try:
            return (date.fromisoformat(value) - _EPOCH_DATE).days
        except ValueError as exc:
            raise _fail(
                "bad_timestamp", path, f"{_describe(value)} is not an ISO-8601 date"
            ) from exc
    return _integral(value, path, *_INT_RANGE, "date (days since epoch or ISO-8601 date)")


class _JsonCompiler:
    """Turns a parsed (fastavro) schema into JSON coercers.

    JSON has no bounds of its own, so the coercers apply Avro's: arrays and maps spend
    ``budget[0]`` (reset to ``max_items`` before each message) at the weights the Avro
    walk uses, and a recursive type is entered at most :data:`MAX_RECURSION` levels deep
    (``depth[0]``). What they accept is therefore what the next stage can read back.
    """

    def __init__(self, named: dict[str, Any], max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self.named = named
        self.records: dict[str, _Coercer] = {}
        self.compiling: list[str] = []
        self.max_items = max_items
        self.budget = [max_items]
        self.depth = [0]

    def describe(self, schema: Any) -> str:
        if isinstance(schema, list):
            return " or ".join(self.describe(b) for b in schema)
        if isinstance(schema, str):
            return schema.rsplit(".", 1)[-1] if schema not in _PRIMITIVES else schema
        if "logicalType" in schema:
            return str(schema["logicalType"])
        kind = schema["type"]
        if kind in ("record", "error", "enum", "fixed"):
            return f"{kind} {schema['name'].rsplit('.', 1)[-1]}"
        return str(kind) if isinstance(kind, str) else self.describe(kind)

    def compile(self, schema: Any) -> _Coercer:
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return self._primitive(schema)
            if schema in self.compiling:
                return self._nested(schema, self.records[schema])
            if schema in self.records:
                return self.records[schema]
            return self.compile(self.named[schema])
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical in _TS_UNITS and kind == "long":
            return _timestamp(logical)
        if logical == "date" and kind == "int":
            return _coerce_date
        if kind in _PRIMITIVES:
            return self._primitive(kind)
        if kind in ("record", "error"):
            return self._record(schema)
        if kind == "enum":
            return self._enum(schema)
        if kind == "fixed":
            return self._fixed(schema)
        if kind == "array":
            item = self.compile(schema["items"])
            spend = self._spender(schema["items"], 0)

            def array(value: Any, path: str) -> Any:
                if type(value) is not list:
                    raise _wrong(path, "array", value)
                spend(len(value), path)
                return [item(x, f"{path}[{i}]") for i, x in enumerate(value)]

            return array
        if kind == "map":
            item = self.compile(schema["values"])
            spend = self._spender(schema["values"], 1)

            def map_(value: Any, path: str) -> Any:
                if type(value) is not dict:
                    raise _wrong(path, "map (a JSON object)", value)
                spend(len(value), path)
                for k in value:
                    if not k.isascii():
                        _check_text(k, f"{path}[{k!r}]", "map key")
                return {k: item(x, f"{path}[{k!r}]") for k, x in value.items()}

            return map_
        return self.compile(kind)

    def _spender(self, item: Any, extra: int) -> Callable[[int, str], None]:
        """Charge ``n`` items of ``item`` against the message's budget, as the Avro walk does.

        The weight is the walk's for the item type compiled on its own, never less than
        the walk's inside the whole schema (a recursive reference weighs one there).
        """
        _, _, weight = _PlanCompiler(self.named, require_finite=False).compile(item, "")
        weight = max(weight + extra, 1)
        budget = self.budget
        limit = self.max_items

        def spend(n: int, path: str) -> None:
            budget[0] -= n * weight
            if budget[0] < 0:
                raise _fail(
                    "oversized_collection",
                    path,
                    f"{n} more items exceed the limit of {limit} values in the arrays and maps "
                    f"of one message",
                )

        return spend

    def _nested(self, name: str, record: _Coercer) -> _Coercer:
        """``record`` entered from inside itself: at most MAX_RECURSION levels, as in Avro."""
        depth = self.depth
        short = name.rsplit(".", 1)[-1]

        def nested(value: Any, path: str) -> Any:
            if depth[0] >= MAX_RECURSION:
                raise _fail(
                    "wrong_type", path, f"{short} nested deeper than {MAX_RECURSION} levels"
                )
            depth[0] += 1
            try:
                return record(value, path)
            finally:
                depth[0] -= 1

        return nested

    def _primitive(self, kind: str) -> _Coercer:
        return {
            "null": _coerce_null,
            "boolean": _coerce_boolean,
            "int": _coerce_int,
            "long": _coerce_long,
            "float": _coerce_float,
            "double": _coerce_real,
            "string": _coerce_string,
            "bytes": _coerce_bytes,
        }[kind]

    def _enum(self, schema: dict[str, Any]) -> _Coercer:
        symbols = frozenset(schema["symbols"])
        listing = ", ".join(schema["symbols"][:20]) + (", ..." if len(symbols) > 20 else "")
        name = schema["name"].rsplit(".", 1)[-1]

        def enum(value: Any, path: str) -> Any:
            if type(value) is not str:
                raise _wrong(path, f"enum {name} symbol (a string)", value)
            if value not in symbols:
                raise _fail("bad_enum", path, f"{_describe(value)} is not one of {name}: {listing}")
            return value

        return enum

    def _fixed(self, schema: dict[str, Any]) -> _Coercer:
        size = int(schema["size"])

        def fixed(value: Any, path: str) -> Any:
            raw = _coerce_bytes(value, path)
            if len(raw) != size:
                raise _fail("wrong_type", path, f"expected {size} bytes, got {len(raw)}")
            return raw

        return fixed

    def _record(self, schema: dict[str, Any]) -> _Coercer:
        name = schema["name"]
        fields: list[tuple[str, _Coercer | None, Callable[[], Any] | None]] = []

        def record(value: Any, path: str) -> Any:
            if type(value) is not dict:
                raise _wrong(path, f"record {name.rsplit('.', 1)[-1]} (a JSON object)", value)
            out = {}
            for fname, coerce, default in fields:
                child = f"{path}.{fname}" if path else fname
                item = value.get(fname, _MISSING)
                if item is _MISSING:
                    if default is None:
                        raise _fail("missing_field", child, "required field is missing")
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

    def _default(
        self, f: dict[str, Any], coerce: _Coercer, record: str
    ) -> Callable[[], Any] | None:
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

    def _union(self, branches: list[Any]) -> _Coercer:
        compiled = [(b, self.compile(b)) for b in branches]
        groups: dict[str, list[Any]] = {
            "null": [],
            "bool": [],
            "int": [],
            "float": [],
            "str": [],
            "list": [],
            "dict": [],
        }
        named: dict[str, _Coercer] = {}
        integral: list[Any] = []
        doubles: list[Any] = []
        floats: list[Any] = []
        for b, fn in compiled:
            kind = self._kind(b)
            named[kind[0]] = fn
            if len(kind) > 1:
                named[kind[1]] = fn
            base = kind[2]
            if base == "null":
                groups["null"].append(fn)
            elif base == "boolean":
                groups["bool"].append(fn)
            elif base in ("int", "long"):
                integral.append(fn)
                if kind[0] in _TS_UNITS or kind[0] == "date":
                    groups["str"].append(fn)
            elif base == "double":
                doubles.append(fn)
            elif base == "float":
                floats.append(fn)
            elif base in ("string", "bytes", "enum", "fixed"):
                groups["str"].append(fn)
            elif base == "array":
                groups["list"].append(fn)
            else:  # record, map
                groups["dict"].append(fn)
        real = doubles + floats  # the writer puts a float in a double branch over a float one
        groups["int"] = integral + real
        groups["float"] = real + integral
        by_type = {
            type(None): groups["null"],
            bool: groups["bool"],
            int: groups["int"],
            float: groups["float"],
            str: groups["str"],
            list: groups["list"],
            dict: groups["dict"],
        }
        expected = " or ".join(self.describe(b) for b in branches)
        budget = self.budget

        def union(value: Any, path: str) -> Any:
            candidates = by_type.get(type(value), ())
            first: DecodeError | None = None
            left = budget[0]
            for fn in candidates:
                try:
                    return fn(value, path)
                except DecodeError as exc:
                    budget[0] = left  # a branch that failed spends nothing
                    first = first or exc
            if type(value) is dict and len(value) == 1:
                # Avro's own JSON encoding of unions: {"double": 1.5}
                ((tag, inner),) = value.items()
                if tag in named:
                    return named[tag](inner, path)
            if first is not None:
                raise first
            raise _wrong(path, expected, value)

        return union

    def _kind(self, schema: Any) -> tuple[str, str, str]:
        """(tag, short tag, base kind) of a union branch."""
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return schema, schema, schema
            target = self.named.get(schema, {})
            return schema, schema.rsplit(".", 1)[-1], str(target.get("type", "record"))
        kind = schema["type"]
        if isinstance(kind, str) and kind in _PRIMITIVES:
            logical = schema.get("logicalType")
            return (logical or kind), kind, kind
        if kind in ("record", "error", "enum", "fixed"):
            return schema["name"], schema["name"].rsplit(".", 1)[-1], kind
        return kind, kind, kind


# ---------------------------------------------------------------------------------------
# Public API.


class EventDecoder:
    """Decodes the raw messages of one subject into records of its latest schema.

    JSON objects are coerced: ``timestamp-millis`` fields take epoch-ms integers or
    ISO-8601 strings (naive times are UTC); enums take a valid symbol; nullable unions
    take null or the value (Avro's ``{"type": value}`` form is accepted too); a missing
    field gets its default or is ``missing_field``; ints accept integral floats
    (``3.0``); floats and doubles accept ints (``float`` fields are rounded to 32 bits,
    as Avro stores them); NaN and infinities are ``non_finite``; strings (and map keys)
    UTF-8 cannot encode are ``bad_string``. Unknown top-level keys are dropped and listed
    in :attr:`DecodedEvent.ignored`.

    Avro messages are decoded with the writer version their fingerprint or Confluent id
    names (which must belong to this subject) and resolved into the latest version.
    ``max_items`` bounds the values inside arrays and maps of one message (JSON too).

    Parameters
    ----------
    catalog, subject
        Where the schemas come from, and whose events these are.
    max_bytes, max_items
        Bounds on one message: its value's size and the values in its arrays and maps.
    id_field, key_field, time_field
        The pipeline's event id, partitioning key and event time fields (``""``: not
        checked). The id and key, as text, may take at most ``max_id_bytes`` of UTF-8
        (``id_too_long``). The event time must be epoch milliseconds (or microseconds,
        for ``timestamp-micros``) from 1970 on, and at most ``max_event_time_ahead``
        seconds ahead of the ``now_ms`` given to :meth:`decode` (``bad_event_time``).
        Each must name a field of the latest schema.
    """

    def __init__(
        self,
        catalog: SchemaCatalog,
        subject: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_items: int = DEFAULT_MAX_ITEMS,
        id_field: str = "",
        key_field: str = "",
        time_field: str = "",
        max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
        max_event_time_ahead: float = DEFAULT_MAX_EVENT_TIME_AHEAD,
    ) -> None:
        self.catalog = catalog
        self.subject = subject
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.latest = catalog.latest(subject)
        named = self.latest.parsed.get("__named_schemas", {})
        compiler = _JsonCompiler(named, max_items)
        self._coerce = compiler.compile(self.latest.parsed)
        self._budget = compiler.budget
        self._fields = frozenset(self.latest.field_names)
        self._by_fp: dict[bytes, _AvroReader] = {}
        self._by_id: dict[int, _AvroReader] = {}
        for role, name in (
            ("id_field", id_field),
            ("key_field", key_field),
            ("time_field", time_field),
        ):
            if name and name not in self._fields:
                raise ConfigError(
                    f"{role} {name!r} is not a field of {self.latest.label}; fix the "
                    f"pipeline spec or the schema"
                )
        if max_id_bytes < 1:
            raise ConfigError(
                f"max_id_bytes must be at least 1, not {max_id_bytes}; fix RIVERLINE_MAX_ID_BYTES"
            )
        if not 0 <= max_event_time_ahead < math.inf:
            raise ConfigError(
                f"max_event_time_ahead must be a finite number of seconds >= 0, not "
                f"{max_event_time_ahead}; fix RIVERLINE_MAX_EVENT_TIME_AHEAD"
            )
        self.max_id_bytes = max_id_bytes
        self.max_event_time_ahead = max_event_time_ahead
        #: (field, what it is) of the fields whose text length is bounded.
        self._ids = tuple(
            (name, role)
            for name, role in ((id_field, "event id"), (key_field, "partitioning key"))
            if name and not (role == "partitioning key" and name == id_field)
        )
        self._id_chars = max_id_bytes // 4  # strings this long cannot exceed the bound
        self.time_field = time_field
        self._time_divisor = 1
        if time_field:
            ftype = next(f["type"] for f in self.latest.parsed["fields"] if f["name"] == time_field)
            if not _is_number(ftype):
                raise ConfigError(
                    f"time_field {time_field!r} of {self.latest.label} is not a number; make "
                    f'it epoch milliseconds, {{"type": "long", "logicalType": "timestamp-millis"}}'
                )
            self._time_divisor = 1000 if _is_micros(ftype) else 1
        self._ahead_ms = int(max_event_time_ahead * 1000)
        self._checks = bool(self._ids or time_field)

    def decode(
        self, key: bytes | None, value: bytes | None, *, now_ms: int | None = None
    ) -> DecodedEvent:
        """Validate one raw message; raises DecodeError (see the module docstring).

        ``now_ms`` is the ingest time (epoch ms) the event time may not run ahead of by
        more than ``max_event_time_ahead``; None checks only that the event time is from
        1970 through 9999.
        """
        if not value:
            raise DecodeError("empty", "the message has no value (empty or null)")
        n = len(value)
        if n > self.max_bytes:
            raise DecodeError(
                "too_large",
                f"the value is {n} bytes, over the limit of {self.max_bytes} "
                f"(RIVERLINE_MAX_MESSAGE_BYTES)",
            )
        if key is not None:
            try:
                key.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError(
                    "bad_key", f"the key is not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from exc
        if type(value) is not bytes:
            value = bytes(value)
        first = value[0]
        ignored: tuple[str, ...] = ()
        if first == 0xC3 and n >= 2 and value[1] == 0x01:
            if n < _SINGLE_OBJECT_HEADER:
                raise DecodeError(
                    "truncated",
                    f"Avro single-object message of {n} bytes is shorter than its "
                    f"{_SINGLE_OBJECT_HEADER}-byte header",
                )
            fp = value[2:_SINGLE_OBJECT_HEADER]
            reader = self._by_fp.get(fp) or self._fingerprint_reader(fp)
            record = reader.read(value, _SINGLE_OBJECT_HEADER)
            writer, wire_format = reader.writer, "avro-single-object"
        elif first == 0:
            if n < _CONFLUENT_HEADER:
                raise DecodeError(
                    "truncated",
                    f"Confluent-framed message of {n} bytes is shorter than its "
                    f"{_CONFLUENT_HEADER}-byte header",
                )
            schema_id = int.from_bytes(value[1:_CONFLUENT_HEADER], "big")
            reader = self._by_id.get(schema_id) or self._confluent_reader(schema_id)
            record = reader.read(value, _CONFLUENT_HEADER)
            writer, wire_format = reader.writer, "confluent"
        else:
            record, ignored = self._decode_json(value)
            writer, wire_format = self.latest, "json"
        if not self._checks:
            return DecodedEvent(record, writer, wire_format, ignored)
        for name, role in self._ids:
            self._check_id(record[name], name, role)
        event_ms = self._event_ms(record[self.time_field], now_ms) if self.time_field else None
        return DecodedEvent(record, writer, wire_format, ignored, event_ms)

    def _decode_json(self, value: bytes) -> tuple[dict[str, Any], tuple[str, ...]]:
        try:
            obj = json.loads(value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DecodeError(
                "not_json", f"the value is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        except RecursionError as exc:
            raise DecodeError(
                "not_json", "the value is not valid JSON: nested too deeply to parse"
            ) from exc
        except ValueError as exc:  # syntax, or an integer of more digits than Python reads
            raise DecodeError("not_json", f"the value is not valid JSON: {exc}") from exc
        if type(obj) is not dict:
            raise DecodeError(
                "not_object",
                f"expected a JSON object with the fields of {self.latest.label}, got "
                f"{_describe(obj)}",
            )
        self._budget[0] = self.max_items
        try:
            record = self._coerce(obj, "")
        except RecursionError as exc:  # only recursive schemas can nest this deep
            raise DecodeError("wrong_type", "the object is nested too deeply") from exc
        ignored: tuple[str, ...] = ()
        if len(obj) != len(record) or not self._fields.issuperset(obj):
            ignored = tuple(k for k in obj if k not in self._fields)
            for k in ignored:
                if not k.isascii():
                    _check_text(k, "", f"the unknown key {k!r}")
        return record, ignored

    def _check_id(self, value: Any, name: str, role: str) -> None:
        if type(value) is str:
            if len(value) <= self._id_chars:
                return
            size = len(value.encode("utf-8", "surrogatepass"))
        else:  # what ingestion makes of it: str(value)
            size = len(str(value).encode("utf-8", "surrogatepass"))
        if size > self.max_id_bytes:
            raise _fail(
                "id_too_long",
                name,
                f"the {role} is {size} bytes of UTF-8, over the limit of {self.max_id_bytes} "
                f"(RIVERLINE_MAX_ID_BYTES); it travels in the key and headers of every output",
            )

    def _event_ms(self, value: Any, now_ms: int | None) -> int:
        """The event time in epoch ms, or ``bad_event_time``."""
        name = self.time_field
        kind = type(value)
        if kind is int:
            ms = value // self._time_divisor
        elif kind is float and math.isfinite(value):
            ms = int(value) // self._time_divisor
        else:
            raise _fail(
                "bad_event_time", name, f"expected epoch milliseconds, got {_describe(value)}"
            )
        if ms < 0:
            raise _fail(
                "bad_event_time",
                name,
                f"{ms} ms is before 1970-01-01T00:00:00Z; event times are epoch milliseconds",
            )
        if now_ms is not None and ms > now_ms + self._ahead_ms:
            raise _fail(
                "bad_event_time",
                name,
                f"{_iso(ms)} is {(ms - now_ms) / 1000:.0f} s ahead of the ingest time "
                f"{_iso(now_ms)}, more than the {self.max_event_time_ahead:g} s allowed "
                f"(RIVERLINE_MAX_EVENT_TIME_AHEAD)",
            )
        if ms > _MAX_EVENT_MS:
            raise _fail("bad_event_time", name, f"{ms} ms is after the year 9999")
        return ms

    def _fingerprint_reader(self, fp: bytes) -> _AvroReader:
        writer = self.catalog.by_fingerprint(fp, self.subject)
        if writer is None:
            other = self.catalog.by_fingerprint(fp)
            where = f" (it is {other.label}, not a version of {self.subject!r})" if other else ""
            raise DecodeError(
                "unknown_fingerprint",
                f"schema fingerprint {fp.hex()} is not in the catalog for subject "
                f"{self.subject!r}{where}; add the producer's schema as "
                f"schemas/{self.subject}/v<N>.avsc",
            )
        reader = _AvroReader(writer, self.latest, require_finite=True, max_items=self.max_items)
        self._by_fp[fp] = reader
        return reader

    def _confluent_reader(self, schema_id: int) -> _AvroReader:
        writer = self.catalog.by_confluent_id(schema_id)
        if writer is None or writer.subject != self.subject:
            where = f" (it maps to {writer.label}, not {self.subject!r})" if writer else ""
            raise DecodeError(
                "unknown_confluent_id",
                f"Confluent schema id {schema_id} is not mapped to subject "
                f"{self.subject!r}{where}; add it to schemas/confluent-ids.toml",
            )
        reader = _AvroReader(writer, self.latest, require_finite=True, max_items=self.max_items)
        self._by_id[schema_id] = reader
        return reader


_READERS: weakref.WeakKeyDictionary[SchemaCatalog, dict[Any, _AvroReader]] = (
    weakref.WeakKeyDictionary()
)


def decode_single_object(
    catalog: SchemaCatalog,
    data: bytes,
    reader: SchemaVersion | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
    require_finite: bool = False,
) -> tuple[SchemaVersion, dict[str, Any]]:
    """Decode an Avro single-object message; returns (writer version, record).

    For Riverline's own topics. The record is resolved into ``reader`` (default: the
    latest version of the writer's subject). Bounded and checked exactly as
    :class:`EventDecoder` checks raw Avro, except that NaN and infinities are returned as
    written unless ``require_finite`` (what Riverline wrote, it reads back faithfully;
    finiteness of model inputs is enforced where events enter, on ``P.raw``).
    """
    if not data:
        raise DecodeError("empty", "the message has no value (empty or null)")
    if len(data) > max_bytes:
        raise DecodeError("too_large", f"the value is {len(data)} bytes, over {max_bytes}")
    if type(data) is not bytes:
        data = bytes(data)
    if not data.startswith(SINGLE_OBJECT_MAGIC) and not SINGLE_OBJECT_MAGIC.startswith(data):
        raise DecodeError(
            "invalid_avro", "not Avro single-object encoding (does not start with C3 01)"
        )
    if len(data) < _SINGLE_OBJECT_HEADER:
        raise DecodeError(
            "truncated",
            f"Avro single-object message of {len(data)} bytes is shorter than its header",
        )
    fp = data[2:_SINGLE_OBJECT_HEADER]
    cache = _READERS.setdefault(catalog, {})
    key = (fp, None if reader is None else reader.label, max_items, require_finite)
    avro = cache.get(key)
    if avro is None:
        writer = catalog.by_fingerprint(fp)
        if writer is None:
            raise DecodeError(
                "unknown_fingerprint",
                f"schema fingerprint {fp.hex()} is not in the catalog",
            )
        target = reader if reader is not None else catalog.latest(writer.subject)
        if reader is not None:
            writer = catalog.by_fingerprint(fp, reader.subject) or writer
        avro = _AvroReader(writer, target, require_finite=require_finite, max_items=max_items)
        cache[key] = avro
    return avro.writer, avro.read(data, _SINGLE_OBJECT_HEADER)


#: Compiled writers by schema version; ``None`` where fastavro writes every record.
_WRITERS: dict[SchemaVersion, AvroWriter | None] = {}


def _encode(header: bytes, sv: SchemaVersion, record: dict[str, Any], check: bool) -> bytes:
    """``header`` + the Avro body of ``record``: compiled where it can, else fastavro's."""
    try:
        if check:
            _validate_record(record, sv.parsed, raise_errors=True)
        try:
            writer = _WRITERS[sv]
        except KeyError:
            writer = _WRITERS[sv] = compile_writer(sv.parsed)
        if writer is not None:
            out = bytearray(header)
            try:
                writer.write(record, out)
                return bytes(out)
            except Unsupported:
                pass  # a value it does not handle; fastavro writes it (or says what is wrong)
        buf = BytesIO()
        buf.write(header)
        schemaless_writer(buf, sv.parsed, record)
        return buf.getvalue()
    except (ValidationError, ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        raise EncodeError(f"cannot encode record as {sv.label}: {exc}") from exc


def encode_single_object(
    sv: SchemaVersion, record: dict[str, Any], *, validate: bool = False
) -> bytes:
    """``C3 01`` + fingerprint + Avro body of ``record`` (timestamps as ints or datetimes).

    fastavro's writer coerces some wrong values silently (a float into an int field);
    pass ``validate=True`` to check the record first (slower). The body is the one
    fastavro writes, by a writer compiled for the schema (:mod:`streams.serialization.avro_writer`).
    """
    return _encode(SINGLE_OBJECT_MAGIC + sv.fingerprint, sv, record, validate)


def encode_confluent(
    schema_id: int, sv: SchemaVersion, record: dict[str, Any], *, validate: bool = False
) -> bytes:
    """``00`` + 4-byte big-endian schema id + Avro body (Confluent wire format)."""
    if not 0 <= schema_id < 2**32:
        raise EncodeError(f"Confluent schema id {schema_id} does not fit in 4 bytes")
    return _encode(b"\x00" + schema_id.to_bytes(4, "big"), sv, record, validate)
