"""The validating walk over Avro bytes, compiled once per writer schema.

Before fastavro reads an untrusted body, :func:`walk` checks everything fastavro lets
through (see :mod:`streams.serialization.codec`): union and enum indices in range, varints
no longer than their type allows, booleans 0 or 1, lengths within the remaining bytes, a
bounded number of values inside arrays and maps, bounded nesting of recursive types and,
where asked, finite floats and doubles. Walking never builds values.

A plan is a tuple of ops ``(kind, arg, path)`` made by :class:`PlanCompiler`; a record's
fields are flattened into its parent's plan and adjacent fixed-width fields are merged
(:func:`merge`), so the phishing schema is six ops.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from streams.errors import DecodeError

__all__ = [
    "MAX_RECURSION",
    "PRIMITIVES",
    "Plan",
    "PlanCompiler",
    "field_error",
    "merge",
    "walk",
]

#: Nesting allowed through recursive named types (fastavro's reader recurses in C).
MAX_RECURSION: Final = 64

PRIMITIVES: Final = frozenset(
    ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
)

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

#: Varint kinds whose one-byte values the walk steps over without a call.
_VARINTS: Final = frozenset((_K_LONG, _K_INT))

Op = tuple[int, Any, Any]
Plan = tuple[Op, ...]
#: What compiling one type gives: its ops, its least encoded size, the values it produces.
Compiled = tuple[list[Op], int, int]

_BULK_NONE = 0
_BULK_SKIP = 1
_BULK_REAL = 2
_BULK_BOOL = 3


def field_error(reason: str, path: str, message: str) -> DecodeError:
    """The DecodeError of the value at ``path`` (a field path; ``""`` for the whole record)."""
    where = f"field '{path}': " if path else ""
    return DecodeError(reason, f"{where}{message}")


@dataclass(frozen=True)
class _Collection:
    item: Plan
    min_size: int  # bytes one item takes at least
    weight: int  # values one item produces
    bulk: int
    bulk_arg: Any  # width for _BULK_SKIP, struct format char for _BULK_REAL


class _Ref:
    """A recursive named type: its plan is filled in once the type is compiled."""

    __slots__ = ("plan",)

    def __init__(self) -> None:
        self.plan: Plan = ()


# ---------------------------------------------------------------------------------------
# Walking


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
            raise field_error("invalid_avro", path, "varint longer than 10 bytes")
    if acc >= 1 << 64:
        raise field_error("invalid_avro", path, "varint does not fit in 64 bits")
    return (acc >> 1) ^ -(acc & 1), pos


def _read_small_long(data: bytes, pos: int, path: str) -> tuple[int, int]:
    """:func:`_read_long`, with a one-byte value decoded in place."""
    n = data[pos]
    if n < 0x80:
        return (n >> 1) ^ -(n & 1), pos + 1
    return _read_long(data, pos, path)


def _skip_varint(data: bytes, pos: int, path: str, max_len: int, last_max: int) -> int:
    start = pos
    while True:
        b = data[pos]
        pos += 1
        if b < 0x80:
            break
        if pos - start >= max_len:
            raise field_error("invalid_avro", path, f"varint longer than {max_len} bytes")
    if pos - start == max_len and b > last_max:
        kind = "int (32 bits)" if max_len == 5 else "long (64 bits)"
        raise field_error("invalid_avro", path, f"value does not fit in an Avro {kind}")
    return pos


def _check_finite(values: tuple[float, ...], paths: tuple[str, ...]) -> None:
    # Called only when a fast sum check flagged the run; a finite overflow ends here too.
    for value, path in zip(values, paths, strict=False):
        if not math.isfinite(value):
            raise field_error(
                "non_finite", path, f"{value} is not allowed (must be a finite number)"
            )


def walk(plan: Plan, data: bytes, pos: int, end: int, limits: list[int] | None) -> int:
    """Validate ``data[pos:]`` against ``plan``; return the position after it.

    ``end`` must be ``len(data)``: reading past it raises IndexError, reported as
    ``truncated`` for the op being walked. ``limits`` is ``[values left, nesting left]``
    for plans with collections or recursive types (None otherwise).
    """
    path: Any = ""
    try:
        for kind, arg, path in plan:
            if kind in _VARINTS and data[pos] < 0x80:
                pos += 1  # most ints and longs are one byte: no call for them
            else:
                pos = _STEPS[kind](arg, data, pos, end, limits, path)
    except IndexError as exc:
        raise field_error("truncated", path, "message ends in the middle of this value") from exc
    return pos


# Each step walks one op: (arg, data, pos, end, limits, path) -> the position after it.
_Step = Callable[[Any, bytes, int, int, Any, str], int]


def _step_long(arg: Any, data: bytes, pos: int, end: int, limits: Any, path: str) -> int:
    return _skip_varint(data, pos, path, 10, 0x01)


def _step_int(arg: Any, data: bytes, pos: int, end: int, limits: Any, path: str) -> int:
    return _skip_varint(data, pos, path, 5, 0x0F)


def _step_real(arg: Any, data: bytes, pos: int, end: int, limits: Any, path: str) -> int:
    nxt = pos + arg[0].size
    if nxt > end:
        raise IndexError
    values = arg[0].unpack_from(data, pos)
    total = sum(values)
    if total - total != 0.0:  # NaN or infinity somewhere (or a finite overflow)
        _check_finite(values, arg[1])
    return nxt


def _step_str(arg: Any, data: bytes, pos: int, end: int, limits: Any, path: str) -> int:
    n, pos = _read_small_long(data, pos, path)
    if n < 0:
        raise field_error("invalid_avro", path, f"negative length {n}")
    if n > end - pos:
        raise field_error(
            "oversized_collection",
            path,
            f"length {n} exceeds the {end - pos} bytes left in the message",
        )
    return pos + n


def _step_skip(arg: Any, data: bytes, pos: int, end: int, limits: Any, path: str) -> int:
    pos += arg
    if pos > end:
        raise IndexError
    return pos


def _step_bool(arg: Any, data: bytes, pos: int, end: int, limits: Any, path: str) -> int:
    if data[pos] > 1:
        raise field_error("invalid_avro", path, f"boolean byte {data[pos]:#04x} is not 0 or 1")
    return pos + 1


def _step_union(
    arg: Any, data: bytes, pos: int, end: int, limits: list[int] | None, path: str
) -> int:
    i, pos = _read_small_long(data, pos, path)
    if not 0 <= i < len(arg):
        raise field_error(
            "bad_union_index",
            path,
            f"union index {i} out of range (the union has {len(arg)} branches)",
        )
    return walk(arg[i], data, pos, end, limits) if arg[i] else pos


def _step_enum(arg: Any, data: bytes, pos: int, end: int, limits: Any, path: str) -> int:
    i, pos = _read_long(data, pos, path)
    if not 0 <= i < arg:
        raise field_error(
            "bad_enum_index", path, f"enum index {i} out of range (the enum has {arg} symbols)"
        )
    return pos


def _step_collection(
    arg: Any, data: bytes, pos: int, end: int, limits: list[int] | None, path: str
) -> int:
    assert limits is not None
    while True:
        count, block_end, pos = _block_header(data, pos, end, path)
        if count == 0:
            return pos
        _charge(arg, count, end - pos, limits, path)
        pos = _walk_items(arg, count, data, pos, end, limits, path)
        if block_end >= 0 and pos != block_end:
            raise field_error(
                "invalid_avro", path, f"block size says {block_end} but items end at {pos}"
            )


def _block_header(data: bytes, pos: int, end: int, path: str) -> tuple[int, int, int]:
    """(item count, end of the block or -1 if unsized, position of the first item)."""
    count, pos = _read_long(data, pos, path)
    if count >= 0:
        return count, -1, pos
    size, pos = _read_long(data, pos, path)
    if not 0 <= size <= end - pos:
        raise field_error(
            "oversized_collection",
            path,
            f"block of {size} bytes exceeds the {end - pos} bytes left in the message",
        )
    return -count, pos + size, pos


def _charge(coll: _Collection, count: int, left: int, limits: list[int], path: str) -> None:
    """Refuse ``count`` items that cannot fit in ``left`` bytes or exceed the value budget."""
    if count * coll.min_size > left:
        raise field_error(
            "oversized_collection",
            path,
            f"{count} items need at least {count * coll.min_size} bytes but only {left} are left",
        )
    limits[0] -= count * coll.weight
    if limits[0] < 0:
        raise field_error(
            "oversized_collection",
            path,
            f"{count} more items exceed the limit of values per message",
        )


def _walk_items(
    coll: _Collection,
    count: int,
    data: bytes,
    pos: int,
    end: int,
    limits: list[int],
    path: str,
) -> int:
    if coll.bulk == _BULK_SKIP:
        return pos + count * coll.bulk_arg
    if coll.bulk == _BULK_REAL:
        fmt = struct.Struct(f"<{count}{coll.bulk_arg}")
        values = fmt.unpack_from(data, pos)
        total = sum(values)
        if total - total != 0.0:
            _check_finite(values, (f"{path}[]",) * count)
        return pos + fmt.size
    if coll.bulk == _BULK_BOOL:
        if data[pos : pos + count].translate(None, b"\x00\x01"):
            raise field_error("invalid_avro", f"{path}[]", "boolean byte is not 0 or 1")
        return pos + count
    if coll.item:  # an empty item (null) takes no bytes
        for _ in range(count):
            pos = walk(coll.item, data, pos, end, limits)
    return pos


def _step_utf8(arg: Any, data: bytes, pos: int, end: int, limits: Any, path: str) -> int:
    n, pos = _read_long(data, pos, path)
    if not 0 <= n <= end - pos:
        raise field_error("invalid_avro", path, f"bad string length {n}")
    try:
        data[pos : pos + n].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise field_error(
            "invalid_avro",
            path,
            f"string is not valid UTF-8 ({exc.reason} at byte {exc.start})",
        ) from exc
    return pos + n


def _step_ref(
    arg: Any, data: bytes, pos: int, end: int, limits: list[int] | None, path: str
) -> int:
    assert limits is not None
    limits[1] -= 1
    if limits[1] < 0:
        raise field_error("invalid_avro", path, f"nested deeper than {MAX_RECURSION} levels")
    pos = walk(arg.plan, data, pos, end, limits)
    limits[1] += 1
    return pos


#: The step of each op kind, indexed by kind.
_STEPS: Final[tuple[_Step, ...]] = (
    _step_long,  # _K_LONG
    _step_real,  # _K_REAL
    _step_str,  # _K_STR
    _step_int,  # _K_INT
    _step_skip,  # _K_SKIP
    _step_bool,  # _K_BOOL
    _step_union,  # _K_UNION
    _step_enum,  # _K_ENUM
    _step_collection,  # _K_ARRAY
    _step_collection,  # _K_MAP
    _step_ref,  # _K_REF
    _step_utf8,  # _K_UTF8
)


# ---------------------------------------------------------------------------------------
# Compiling


class PlanCompiler:
    """Turns a parsed (fastavro) schema into a walk plan.

    ``require_finite`` checks floats and doubles; ``utf8`` checks strings for UTF-8 (only
    to locate a bad string after fastavro refused one). :attr:`needs_limits` says, once a
    schema is compiled, whether its walk needs ``limits``.
    """

    def __init__(self, named: dict[str, Any], require_finite: bool, utf8: bool = False) -> None:
        self.named = named
        self.require_finite = require_finite
        self.string = _K_UTF8 if utf8 else _K_STR
        self.stack: list[str] = []
        self.refs: dict[str, _Ref] = {}
        self.needs_limits = False

    def compile(self, schema: Any, path: str) -> Compiled:
        """(ops, minimum encoded size, values produced) for one type at ``path``."""
        if isinstance(schema, list):
            return self._union(schema, path)
        if isinstance(schema, str):
            return self._name(schema, path)
        kind = schema["type"]
        if kind in ("record", "error"):
            return self._record(schema, path)
        if kind == "enum":
            return [(_K_ENUM, len(schema["symbols"]), path)], 1, 1
        if kind == "fixed":
            size = int(schema["size"])
            return ([(_K_SKIP, size, path)] if size else []), size, 1
        if kind in ("array", "map"):
            return self._collection(schema, kind == "map", path)
        if kind in PRIMITIVES:  # {"type": "long", "logicalType": ...}
            return self._primitive(kind, path)
        return self.compile(kind, path)  # {"type": "some.Named"}

    def _union(self, branches: list[Any], path: str) -> Compiled:
        compiled = [self.compile(b, path) for b in branches]
        plans = tuple(merge(ops) for ops, _, _ in compiled)
        min_size = 1 + min((m for _, m, _ in compiled), default=0)
        weight = max((w for _, _, w in compiled), default=1)
        return [(_K_UNION, plans, path)], min_size, weight

    def _name(self, name: str, path: str) -> Compiled:
        if name in PRIMITIVES:
            return self._primitive(name, path)
        if name in self.stack:
            return self._ref(name, path)
        return self.compile(self.named[name], path)

    def _ref(self, name: str, path: str) -> Compiled:
        """A reference to a named type being compiled: a recursive type."""
        self.needs_limits = True
        ref = self.refs.setdefault(name, _Ref())
        return [(_K_REF, ref, path)], 0, 1

    def _record(self, schema: dict[str, Any], path: str) -> Compiled:
        name = schema["name"]
        if name in self.stack:
            return self._ref(name, path)
        self.stack.append(name)
        ops: list[Op] = []
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
            self.refs[name].plan = merge(ops)
        return ops, min_size, weight

    def _collection(self, schema: dict[str, Any], is_map: bool, path: str) -> Compiled:
        self.needs_limits = True
        child = f"{path}{{}}" if is_map else f"{path}[]"
        item_ops, item_min, item_weight = self.compile(
            schema["values" if is_map else "items"], child
        )
        if is_map:
            item_ops = [(self.string, None, f"{path} (map key)"), *item_ops]
            item_min += 1
            item_weight += 1
        item = merge(item_ops)
        bulk, bulk_arg = (_BULK_NONE, None) if is_map else _bulk(item)
        coll = _Collection(item, item_min, max(item_weight, 1), bulk, bulk_arg)
        return [(_K_MAP if is_map else _K_ARRAY, coll, path)], 1, 1

    def _primitive(self, kind: str, path: str) -> Compiled:
        if kind == "null":
            return [], 0, 1
        if kind in ("float", "double"):
            return self._real(kind, path)
        op = {
            "boolean": _K_BOOL,
            "int": _K_INT,
            "long": _K_LONG,
            "string": self.string,
            "bytes": _K_STR,
        }[kind]
        return [(op, None, path)], 1, 1

    def _real(self, kind: str, path: str) -> Compiled:
        width = 4 if kind == "float" else 8
        if not self.require_finite:
            return [(_K_SKIP, width, path)], width, 1
        return [(_K_REAL, ("f" if kind == "float" else "d", (path,)), path)], width, 1


def _bulk(item: Plan) -> tuple[int, Any]:
    """How an array of ``item`` is walked in one step, if it can be: (bulk kind, arg)."""
    if len(item) != 1:
        return _BULK_NONE, None
    op_kind, op_arg, _ = item[0]
    if op_kind == _K_SKIP:
        return _BULK_SKIP, op_arg
    if op_kind == _K_BOOL:
        return _BULK_BOOL, None
    if op_kind == _K_REAL and len(op_arg[1]) == 1:
        return _BULK_REAL, op_arg[0].format[-1]
    return _BULK_NONE, None


def merge(ops: list[Op]) -> Plan:
    """Merge adjacent fixed-width ops into one; build the structs of float runs."""
    merged: list[Op] = []
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
    out: list[Op] = []
    for kind, arg, path in merged:
        if kind == _K_REAL and not isinstance(arg[0], struct.Struct):
            arg = (struct.Struct("<" + arg[0]), arg[1])
        out.append((kind, arg, path))
    return tuple(out)
