"""Avro bodies written by closures compiled once per schema, byte for byte as fastavro.

fastavro's ``schemaless_writer`` walks the schema for every record and resolves each
union branch by trying validators in turn, and a worker writes three records per event
(``P.events``, ``P.features``, ``P.predictions``). A compiled writer knows each field's
type in advance and picks a union branch by the value's exact Python type, with one
closure per branch that writes its index and the value; longs (timestamps, mostly) are
written two 7-bit groups per table lookup.

It handles the values Riverline's records hold: ``None``, ``bool``, ``int``, ``float``,
``str``, ``bytes``, ``dict`` and ``list`` of those, enum symbols, and logical types whose
underlying value is passed as such (timestamps as epoch ints, say). For anything else (a
``datetime``, a ``Decimal``, a missing field that takes its default, a numpy scalar,
tuple notation for unions) :meth:`AvroWriter.write` raises :class:`Unsupported` and the
caller writes the record with fastavro: the result is always what fastavro would write
(``tests/unit/serialization/test_avro_writer.py`` compares the two on random records of
every schema).
A schema the compiler does not cover (recursive types, unions of named or complex types)
gets no writer at all (:func:`compile_writer` returns ``None``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

__all__ = ["AvroWriter", "Unsupported", "compile_writer"]

_Write = Callable[[Any, bytearray], None]

_LONG_MIN: Final = -(2**63)
_LONG_MAX: Final = 2**63 - 1
_INT_MIN: Final = -(2**31)
_INT_MAX: Final = 2**31 - 1
#: Logical types fastavro passes through unchanged when given their underlying value.
_PASSTHROUGH: Final = frozenset(
    {
        "timestamp-millis",
        "timestamp-micros",
        "local-timestamp-millis",
        "local-timestamp-micros",
        "time-millis",
        "time-micros",
        "date",
        "uuid",
    }
)
_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack
#: Zigzag varints of 0..63 and -64..-1, one byte each: most lengths, indices and counts.
_SMALL: Final = {n: bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)}


class Unsupported(Exception):
    """A value the compiled writer does not handle: write the record with fastavro."""


#: A varint's 14-bit groups (both bytes flagged "more follows"), and its 7-bit groups.
_GROUPS14: Final = tuple(bytes(((g & 0x7F) | 0x80, (g >> 7) | 0x80)) for g in range(1 << 14))
_GROUPS7: Final = tuple(bytes((g | 0x80,)) for g in range(1 << 7))


def _append_long(n: int, out: bytearray) -> None:
    """Append the zigzag varint of a 64-bit ``int`` to ``out``, two 7-bit groups per
    table lookup (an epoch-millisecond timestamp is six bytes: three lookups)."""
    small = _SMALL.get(n)
    if small is not None:
        out += small
        return
    if n < _LONG_MIN or n > _LONG_MAX:
        raise Unsupported
    z = (n << 1) ^ (n >> 63)
    while z >= 0x4000:
        out += _GROUPS14[z & 0x3FFF]
        z >>= 14
    if z >= 0x80:
        out += _GROUPS7[z & 0x7F]
        z >>= 7
    out.append(z)


def _long(n: int) -> bytes:
    """Zigzag varint of a 64-bit ``int`` (as Avro ``int`` and ``long``)."""
    out = bytearray()
    _append_long(n, out)
    return bytes(out)


def _write_null(v: Any, out: bytearray) -> None:
    if v is not None:
        raise Unsupported


def _write_boolean(v: Any, out: bytearray) -> None:
    if v is True:
        out += b"\x01"
    elif v is False:
        out += b"\x00"
    else:
        raise Unsupported


def _write_long(v: Any, out: bytearray) -> None:
    if type(v) is not int:
        raise Unsupported
    _append_long(v, out)


def _write_double(v: Any, out: bytearray) -> None:
    t = type(v)
    if t is float:
        out += _pack_double(v)
    elif t is int:  # fastavro converts an int in a float or double field
        out += _pack_double(float(v))
    else:
        raise Unsupported


def _write_float(v: Any, out: bytearray) -> None:
    t = type(v)
    if t is not float and t is not int:
        raise Unsupported
    out += _pack_float(float(v))


def _write_string(v: Any, out: bytearray) -> None:
    if type(v) is not str:
        raise Unsupported
    b = v.encode()
    _append_long(len(b), out)
    out += b


def _write_bytes(v: Any, out: bytearray) -> None:
    if type(v) is not bytes:
        raise Unsupported
    _append_long(len(v), out)
    out += v


_WRITE_PRIMITIVE: Final[dict[str, _Write]] = {
    "null": _write_null,
    "boolean": _write_boolean,
    "int": _write_long,
    "long": _write_long,
    "float": _write_float,
    "double": _write_double,
    "string": _write_string,
    "bytes": _write_bytes,
}


class _KeyCache:
    """Encoded map keys (length prefix and UTF-8): a vector's keys repeat every event."""

    limit: Final = 4096

    def __init__(self) -> None:
        self.encoded: dict[str, bytes] = {}

    def store(self, key: str) -> bytes:
        """``key`` encoded, kept for next time while the cache is under its limit."""
        b = key.encode()
        encoded = _long(len(b)) + b
        if len(self.encoded) < self.limit:
            self.encoded[key] = encoded
        return encoded


class _NotCompiled(Exception):
    """The schema has a construct the compiler does not cover."""


#: Branches fastavro's validators accept a value of each exact type in (ints: :func:`_fits`).
_ACCEPTS: Final[dict[type, tuple[str, ...]]] = {
    type(None): ("null",),
    bool: ("boolean",),
    float: ("float", "double"),
    str: ("string",),
    bytes: ("bytes",),
}


def _fits(branch: str, t: type, value: Any) -> bool:
    """Whether a union branch accepts ``value`` (of exact type ``t``), as fastavro decides."""
    if t is int:
        return (
            (branch == "int" and _INT_MIN <= value <= _INT_MAX)
            or (branch == "long" and _LONG_MIN <= value <= _LONG_MAX)
            or branch in ("float", "double")
        )
    accepts = _ACCEPTS.get(t)
    if accepts is None:
        raise Unsupported
    return branch in accepts


def _union_branch(branches: list[str], value: Any) -> int | None:
    """The branch fastavro picks for ``value`` (its first valid one, double over float)."""
    t = type(value)
    chosen = None
    for i, b in enumerate(branches):
        if chosen is not None:  # a float branch was found: only a double beats it
            if b == "double":
                return i
            continue
        if _fits(b, t, value):
            if b != "float":
                return i
            chosen = i
    return chosen


def _branch_writer(index: int, branch: str, t: type) -> _Write:
    """Writes a union's branch ``index`` and a value of exact type ``t`` in that branch:
    one call per value, with the index bytes (and a double's packing) prepared."""
    prefix = _long(index)
    if branch == "null":

        def write_null(v: Any, out: bytearray) -> None:
            out += prefix

        return write_null
    if branch == "boolean":
        true, false = prefix + b"\x01", prefix + b"\x00"

        def write_boolean(v: Any, out: bytearray) -> None:
            out += true if v else false

        return write_boolean
    if branch == "double" and t is float and len(prefix) == 1:
        pack = struct.Struct("<Bd").pack
        z = prefix[0]

        def write_double(v: Any, out: bytearray) -> None:
            out += pack(z, v)

        return write_double
    write_value = _WRITE_PRIMITIVE[branch]

    def write(v: Any, out: bytearray) -> None:
        out += prefix
        write_value(v, out)

    return write


class _Compiler:
    def __init__(self) -> None:
        self.named: dict[str, Any] = {}
        self.compiling: set[str] = set()

    def compile(self, schema: Any) -> _Write:
        if isinstance(schema, str):
            return self._named_type(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            if logical not in _PASSTHROUGH or kind not in _WRITE_PRIMITIVE:
                raise _NotCompiled(f"logical type {logical}")
            return _WRITE_PRIMITIVE[kind]
        if kind in _WRITE_PRIMITIVE:
            return _WRITE_PRIMITIVE[kind]
        if kind == "record":
            return self._record(schema)
        if kind == "enum":
            self._name(schema)
            return self._enum(schema["symbols"])
        if kind == "fixed":
            self._name(schema)
            return self._fixed(schema["size"])
        if kind in ("array", "map"):
            return self._container(schema, kind)
        raise _NotCompiled(f"type {kind}")

    def _container(self, schema: dict[str, Any], kind: str) -> _Write:
        if kind == "array":
            return self._array(self.compile(schema["items"]))
        return self._map(self.compile(schema["values"]))

    def _named_type(self, name: str) -> _Write:
        if name in _WRITE_PRIMITIVE:
            return _WRITE_PRIMITIVE[name]
        if name in self.named:
            return self.compile(self.named[name])
        raise _NotCompiled(f"unknown type {name}")

    def _name(self, schema: dict[str, Any]) -> str:
        name = str(schema["name"])
        self.named[name] = schema
        return name

    def _record(self, schema: dict[str, Any]) -> _Write:
        name = self._name(schema)
        if name in self.compiling:
            raise _NotCompiled(f"recursive type {name}")
        self.compiling.add(name)
        fields = [(f["name"], self.compile(f["type"])) for f in schema["fields"]]
        self.compiling.discard(name)

        def write(v: Any, out: bytearray) -> None:
            if type(v) is not dict:
                raise Unsupported
            try:
                for field, write_field in fields:
                    write_field(v[field], out)
            except KeyError:  # a missing field takes its default: fastavro's rules
                raise Unsupported from None

        return write

    @staticmethod
    def _enum(symbols: list[str]) -> _Write:
        index = {s: _long(i) for i, s in enumerate(symbols)}

        def write(v: Any, out: bytearray) -> None:
            encoded = index.get(v) if type(v) is str else None
            if encoded is None:
                raise Unsupported
            out += encoded

        return write

    @staticmethod
    def _fixed(size: int) -> _Write:
        def write(v: Any, out: bytearray) -> None:
            if type(v) is not bytes or len(v) != size:
                raise Unsupported
            out += v

        return write

    @staticmethod
    def _array(write_item: _Write) -> _Write:
        def write(v: Any, out: bytearray) -> None:
            if type(v) is not list:
                raise Unsupported
            if v:
                _append_long(len(v), out)
                for item in v:
                    write_item(item, out)
            out += b"\x00"

        return write

    @staticmethod
    def _map(write_value: _Write) -> _Write:
        keys = _KeyCache()
        cached = keys.encoded.get

        def write(v: Any, out: bytearray) -> None:
            if type(v) is not dict:
                raise Unsupported
            if v:
                _append_long(len(v), out)
                for key, value in v.items():
                    if type(key) is not str:
                        raise Unsupported
                    out += cached(key) or keys.store(key)
                    write_value(value, out)
            out += b"\x00"

        return write

    def _union(self, branches: list[Any]) -> _Write:
        names: list[str] = []
        for b in branches:
            if not isinstance(b, str) or b not in _WRITE_PRIMITIVE:
                raise _NotCompiled("a union of named or complex types")
            names.append(b)
        writers = [_WRITE_PRIMITIVE[b] for b in names]
        #: Exact value type -> the writer of its branch index and value, where the branch
        #: does not depend on the value (every type but int, whose range can matter).
        by_type: dict[type, _Write] = {}
        for t, sample in ((type(None), None), (bool, True), (float, 0.0), (str, ""), (bytes, b"")):
            i = _union_branch(names, sample)
            if i is not None:
                by_type[t] = _branch_writer(i, names[i], t)
        small_int = _union_branch(names, 0)

        def write(v: Any, out: bytearray) -> None:
            t = type(v)
            branch = by_type.get(t)
            if branch is not None:
                branch(v, out)
                return
            if t is not int:
                raise Unsupported
            i = small_int if _INT_MIN <= v <= _INT_MAX else _union_branch(names, v)
            if i is None:
                raise Unsupported
            out += _long(i)
            writers[i](v, out)

        return write


class AvroWriter:
    """Writes one schema's records as Avro bodies (no header)."""

    def __init__(self, write: _Write) -> None:
        self._write = write

    def write(self, record: Any, out: bytearray) -> None:
        """Append ``record``'s body to ``out``; :class:`Unsupported` leaves ``out`` unusable."""
        try:
            self._write(record, out)
        except (UnicodeEncodeError, OverflowError, struct.error):
            raise Unsupported from None  # fastavro says what was wrong


def compile_writer(parsed_schema: Any) -> AvroWriter | None:
    """A writer for a fastavro-parsed schema, or ``None`` when it has a construct not covered."""
    try:
        return AvroWriter(_Compiler().compile(parsed_schema))
    except _NotCompiled:
        return None
