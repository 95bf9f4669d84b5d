"""Avro bodies written by Python source generated once per schema, byte for byte as fastavro.

fastavro's ``schemaless_writer`` walks the schema for every record and resolves each
union branch by trying validators in turn, and a worker writes three records per event
(``P.events``, ``P.features``, ``P.predictions``). :func:`compile_writer` instead turns
a schema into Python source, one flat function per record, map and array type, and
``exec``'s it once: each field's check and write is a few inline statements, a union
picks its branch by the value's exact Python type with the branch index bytes already
encoded, a map writes its keys from a bounded cache, and a long (a timestamp, mostly)
is encoded fourteen bits per table lookup. Calls happen only where the schema nests a
record, map or array, and :attr:`AvroWriter.write` is the root function itself. Only
text the generator makes goes into the source (:attr:`AvroWriter.source`): function
names it numbers, byte strings it encoded, and field names as ``repr`` of a value it
checked is a ``str``; every other schema value (enum symbols, sizes, other field names)
reaches the functions as a constant in their namespace.

It handles the values Riverline's records hold: ``None``, ``bool``, ``int``, ``float``,
``str``, ``bytes``, ``dict`` and ``list`` of those, enum symbols, and logical types whose
underlying value is passed as such (timestamps as epoch ints, say). For anything else (a
``datetime``, a ``Decimal``, a missing field that takes its default, a numpy scalar,
tuple notation for unions) :attr:`AvroWriter.write` raises :class:`Unsupported` and the
caller writes the record with fastavro: the result is always what fastavro would write
(``tests/unit/serialization/test_avro_writer.py`` compares the two on random records of
every schema).
A schema the compiler does not cover (recursive types, unions of named or complex types,
logical types fastavro converts) gets no writer at all (:func:`compile_writer` returns
``None``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, Final

__all__ = ["AvroWriter", "Unsupported", "compile_writer"]

_Write = Callable[[Any, bytearray], None]
#: Writes the value in the named local variable to ``out``: the statements, unindented.
_Emit = Callable[[str], list[str]]

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
_PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}
)
#: Zigzag varints of 0..63 and -64..-1, one byte each: most lengths, indices and counts.
_SMALL: Final = {n: bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)}


class Unsupported(Exception):
    """A value the compiled writer does not handle: write the record with fastavro."""


#: A varint's 14-bit groups (both bytes flagged "more follows"), and its 7-bit groups.
_GROUPS14: Final = tuple(bytes(((g & 0x7F) | 0x80, (g >> 7) | 0x80)) for g in range(1 << 14))
_GROUPS7: Final = tuple(bytes((g | 0x80,)) for g in range(1 << 7))


def _write_long(n: int, out: bytearray) -> None:
    """Append the zigzag varint of a 64-bit ``int`` (Avro ``int`` and ``long``) to ``out``.

    Two groups per table lookup: an epoch-millisecond timestamp takes six bytes.
    """
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
    """Zigzag varint of a 64-bit ``int``."""
    small = _SMALL.get(n)
    if small is not None:
        return small
    out = bytearray()
    _write_long(n, out)
    return bytes(out)


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


#: What the generated functions see besides their own constants.
_HELPERS: Final[dict[str, Any]] = {
    "Unsupported": Unsupported,
    "NoneType": type(None),
    "StructError": struct.error,
    "_SMALL": _SMALL,
    "_long": _long,
    "_write_long": _write_long,
    "_pack_double": struct.Struct("<d").pack,
    "_pack_float": struct.Struct("<f").pack,
    "_pack_index_double": struct.Struct("<Bd").pack,
}


#: Ends each record's and the root's ``try``: a missing field takes its default (fastavro's
#: rules), and a value that cannot be encoded or packed gets fastavro's error message.
_REFUSED: Final = [
    "except (KeyError, UnicodeEncodeError, OverflowError, StructError):",
    "    raise Unsupported from None",
]


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


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


def _append_length(n: str) -> str:
    return f"out += _SMALL[{n}] if {n} < 64 else _long({n})"


def _typed_write(branch: str, vtype: str, x: str, index: bytes) -> list[str]:
    """Statements writing ``x``, known to be of exact type ``vtype``, as ``branch``.

    ``index`` is the union branch index already encoded (empty outside a union).
    """
    head = [f"out += {index!r}"] if index else []
    if branch == "null":
        return head or ["pass"]
    if branch == "boolean":
        true, false = index + b"\x01", index + b"\x00"
        return [f"out += {true!r} if {x} else {false!r}"]
    if branch in ("int", "long"):
        small = [f"if -64 <= {x} < 64:", f"    out += _SMALL[{x}]", "else:"]
        return [*head, *small, f"    _write_long({x}, out)"]
    if branch == "string":
        return [f"b = {x}.encode()", "n = len(b)", *head, _append_length("n"), "out += b"]
    if branch == "bytes":
        return [f"n = len({x})", *head, _append_length("n"), f"out += {x}"]
    value = x if vtype == "float" else f"float({x})"
    if branch == "float":
        return [*head, f"out += _pack_float({value})"]
    if len(index) == 1:  # double: the index byte and the value packed in one call
        return [f"out += _pack_index_double({index[0]}, {value})"]
    return [*head, f"out += _pack_double({value})"]


def _int_write(names: list[str], x: str, in_union: bool) -> list[str] | None:
    """Statements writing the ``int`` in ``x`` (``None``: no branch takes an int).

    fastavro's branch for an int depends only on whether it fits 32 bits, 64 bits or neither.
    """
    int32, int64, beyond = (_union_branch(names, n) for n in (0, 2**31, 2**63))
    if int32 is None and int64 is None and beyond is None:
        return None

    def write(i: int | None) -> list[str]:
        if i is None:
            return ["raise Unsupported"]
        return _typed_write(names[i], "int", x, _long(i) if in_union else b"")

    refused_by_write_long = beyond is None and int64 is not None and names[int64] == "long"
    if int32 == int64 == beyond or (int32 == int64 and refused_by_write_long):
        return write(int32)
    in_long = f"if {_LONG_MIN} <= {x} <= {_LONG_MAX}:"
    beyond_long = ["else:", *_indent(write(beyond))]
    if int32 == int64:
        return [in_long, *_indent(write(int64)), *beyond_long]
    in_int = f"if {_INT_MIN} <= {x} <= {_INT_MAX}:"
    return [in_int, *_indent(write(int32)), "el" + in_long, *_indent(write(int64)), *beyond_long]


#: The exact Python types a union dispatches on, in the order they are tested, each
#: with a sample value that finds its branch (an int's branch depends on its range).
_DISPATCH: Final[tuple[tuple[str, Any], ...]] = (
    ("float", 0.0),
    ("int", 0),
    ("str", ""),
    ("NoneType", None),
    ("bool", True),
    ("bytes", b""),
)


def _emit_branches(names: list[str], in_union: bool) -> _Emit:
    """Writes a value of one of ``names`` (a union's, or one primitive's) by exact type."""

    def emit(x: str) -> list[str]:
        bodies: list[tuple[str, list[str]]] = []
        for tname, sample in _DISPATCH:
            if tname == "int":
                body = _int_write(names, x, in_union)
                if body is not None:
                    bodies.append((tname, body))
                continue
            i = _union_branch(names, sample)
            if i is not None:
                index = _long(i) if in_union else b""
                bodies.append((tname, _typed_write(names[i], tname, x, index)))
        return _dispatch(x, bodies)

    return emit


def _dispatch(x: str, bodies: list[tuple[str, list[str]]]) -> list[str]:
    """Runs the body for ``x``'s exact type; any other type is :class:`Unsupported`."""
    if not bodies:
        return ["raise Unsupported"]
    if len(bodies) == 1:
        t, body = bodies[0]
        return [f"if type({x}) is not {t}:", "    raise Unsupported", *body]
    lines = [f"t = type({x})"]
    for k, (t, body) in enumerate(bodies):
        lines += [f"{'el' if k else ''}if t is {t}:", *_indent(body)]
    return [*lines, "else:", "    raise Unsupported"]


class _Source:
    """The generated functions' text and the namespace they are ``exec``'d in."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = dict(_HELPERS)
        self.functions = 0

    def constant(self, value: Any) -> str:
        """A name the generated code reads ``value`` by."""
        name = f"_c{len(self.namespace) - len(_HELPERS)}"
        self.namespace[name] = value
        return name

    def literal(self, text: Any) -> str:
        """``text`` as an expression: a ``str`` literal, or a constant for anything else."""
        return str.__repr__(text) if type(text) is str else self.constant(text)

    def function(self, refuse: str | None, body: list[str]) -> str:
        """Defines ``(v, out)``: :class:`Unsupported` where ``refuse`` holds, else ``body``."""
        name = f"_w{self.functions}"
        self.functions += 1
        head = [f"def {name}(v, out):"]
        if refuse is not None:
            head += [f"    if {refuse}:", "        raise Unsupported"]
        self.lines += [*head, *_indent(body), ""]
        return name

    def build(self, name: str) -> AvroWriter:
        """The writer whose ``write`` is the function ``name``, with the others it calls."""
        source = "\n".join(self.lines)
        exec(compile(source, "<avro writer>", "exec"), self.namespace)
        return AvroWriter(self.namespace[name], source)


class _Call:
    """Emits a call to a generated function (a record's, map's or array's)."""

    def __init__(self, name: str, record: bool) -> None:
        self.name = name
        self.record = record

    def __call__(self, x: str) -> list[str]:
        return [f"{self.name}({x}, out)"]


class _Compiler:
    def __init__(self) -> None:
        self.named: dict[str, Any] = {}
        self.compiling: set[str] = set()
        self.source = _Source()

    def compile_root(self, schema: Any) -> AvroWriter:
        emit = self.compile(schema)
        if isinstance(emit, _Call) and emit.record:
            return self.source.build(emit.name)
        root = self.source.function(None, ["try:", *_indent(emit("v")), *_REFUSED])
        return self.source.build(root)

    def compile(self, schema: Any) -> _Emit:
        if isinstance(schema, str):
            return self._named_type(schema)
        if isinstance(schema, list):
            return self._union(schema)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical is not None:
            if logical not in _PASSTHROUGH or kind not in _PRIMITIVES:
                raise _NotCompiled(f"logical type {logical}")
            return self._primitive(kind)
        if kind in _PRIMITIVES:
            return self._primitive(kind)
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

    @staticmethod
    def _primitive(kind: str) -> _Emit:
        # an int field takes any 64-bit value in fastavro, as a long does
        return _emit_branches(["long" if kind == "int" else kind], in_union=False)

    def _named_type(self, name: str) -> _Emit:
        if name in _PRIMITIVES:
            return self._primitive(name)
        if name in self.named:
            return self.compile(self.named[name])
        raise _NotCompiled(f"unknown type {name}")

    def _name(self, schema: dict[str, Any]) -> str:
        name = str(schema["name"])
        self.named[name] = schema
        return name

    def _function(self, check: str, body: list[str], *, record: bool = False) -> _Call:
        return _Call(self.source.function(check, body), record=record)

    def _record(self, schema: dict[str, Any]) -> _Emit:
        name = self._name(schema)
        if name in self.compiling:
            raise _NotCompiled(f"recursive type {name}")
        self.compiling.add(name)
        fields = [(f["name"], self.compile(f["type"])) for f in schema["fields"]]
        self.compiling.discard(name)
        body = ["try:"]
        for field, emit in fields:
            value = f"v[{self.source.literal(field)}]"
            if isinstance(emit, _Call):
                body += _indent(emit(value))
            else:
                body += _indent([f"x = {value}", *emit("x")])
        return self._function("type(v) is not dict", [*body, *_REFUSED], record=True)

    def _enum(self, symbols: list[str]) -> _Emit:
        index = self.source.constant({s: _long(i) for i, s in enumerate(symbols)})
        return lambda x: [
            f"s = {index}.get({x}) if type({x}) is str else None",
            "if s is None:",
            "    raise Unsupported",
            "out += s",
        ]

    def _fixed(self, size: int) -> _Emit:
        size_name = self.source.constant(size)
        return lambda x: [
            f"if type({x}) is not bytes or len({x}) != {size_name}:",
            "    raise Unsupported",
            f"out += {x}",
        ]

    def _container(self, schema: dict[str, Any], kind: str) -> _Emit:
        if kind == "array":
            loop = ["for x in v:", *_indent(self.compile(schema["items"])("x"))]
            return self._function("type(v) is not list", _counted(loop))
        write_value = self.compile(schema["values"])
        keys = _KeyCache()
        cached, store = self.source.constant(keys.encoded), self.source.constant(keys.store)
        loop = [
            "for k, x in v.items():",
            "    if type(k) is not str:",
            "        raise Unsupported",
            f"    e = {cached}.get(k)",
            "    if e is None:",
            f"        e = {store}(k)",
            "    out += e",
            *_indent(write_value("x")),
        ]
        return self._function("type(v) is not dict", _counted(loop))

    def _union(self, branches: list[Any]) -> _Emit:
        names: list[str] = []
        for b in branches:
            if not isinstance(b, str) or b not in _PRIMITIVES:
                raise _NotCompiled("a union of named or complex types")
            names.append(b)
        return _emit_branches(names, in_union=True)


def _counted(loop: list[str]) -> list[str]:
    """An array's or map's blocks: its items in one block, then the empty block."""
    items = ["n = len(v)", _append_length("n"), *loop]
    return ["if v:", *_indent(items), "out += b'\\x00'"]


class AvroWriter:
    """Writes one schema's records as Avro bodies (no header)."""

    def __init__(self, write: _Write, source: str) -> None:
        #: ``write(record, out)`` appends ``record``'s body to ``out``; :class:`Unsupported`
        #: leaves ``out`` unusable. The generated function itself, not a method around it:
        #: it turns the errors fastavro would report into :class:`Unsupported` (see _REFUSED).
        self.write = write
        #: The generated functions, for reading.
        self.source = source


def compile_writer(parsed_schema: Any) -> AvroWriter | None:
    """A writer for a fastavro-parsed schema, or ``None`` when it has a construct not covered."""
    try:
        return _Compiler().compile_root(parsed_schema)
    except _NotCompiled:
        return None
