"""Bounded decoding of one Avro writer version into one reader version.

:class:`AvroReader` walks the bytes first (:mod:`streams.serialization.avro_walk`), then
lets fastavro build the record from bytes known to be sound, with logical types left as
their underlying values, and puts resolved records back in reader field order.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

import fastavro
from fastavro import schemaless_reader

from streams.errors import DecodeError
from streams.serialization.avro_walk import MAX_RECURSION, PRIMITIVES, PlanCompiler, merge, walk
from streams.serialization.catalog import SchemaVersion

__all__ = ["AvroReader"]

_Reorder = Callable[[Any], Any]


class AvroReader:
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
        compiler = PlanCompiler(writer.parsed.get("__named_schemas", {}), require_finite)
        ops, _, _ = compiler.compile(writer.parsed, "")
        self.plan = merge(ops)
        self.needs_limits = compiler.needs_limits
        self.w_parsed = fastavro.parse_schema(_strip_logical(writer.schema))
        self.r_parsed: Any = None
        self.reorder: _Reorder | None = None
        if writer.canonical != reader.canonical or writer.schema != reader.schema:
            self.r_parsed = fastavro.parse_schema(_strip_logical(reader.schema))
            named = reader.parsed.get("__named_schemas", {})
            self.reorder = _Reorderer(named).build(reader.parsed)

    def read(self, data: bytes, offset: int, *, bounded: bool = True) -> dict[str, Any]:
        """The record whose body starts at ``data[offset]``; DecodeError if it is unsound.

        ``bounded=False`` skips the walk that bounds sizes and nesting before fastavro
        reads: only for records whose MAC the caller verified (Riverline wrote them).
        """
        end = len(data)
        if bounded:
            limits = [self.max_items, MAX_RECURSION] if self.needs_limits else None
            pos = walk(self.plan, data, offset, end, limits)
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
        compiler = PlanCompiler(
            self.writer.parsed.get("__named_schemas", {}), require_finite=False, utf8=True
        )
        ops, _, _ = compiler.compile(self.writer.parsed, "")
        limits = [self.max_items, MAX_RECURSION]
        walk(merge(ops), data, offset, len(data), limits)


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


class _Reorderer:
    """Builds functions putting records back in reader field order (fastavro appends
    defaults); None where a type holds no record."""

    def __init__(self, named: dict[str, Any]) -> None:
        self.named = named
        self.built: dict[str, _Reorder] = {}

    def build(self, s: Any) -> _Reorder | None:
        if isinstance(s, str):
            if s in PRIMITIVES:
                return None
            if s in self.built:
                return self.built[s]
            s = self.named.get(s, s)
            if isinstance(s, str):
                return None
        if isinstance(s, list):
            return self._union(s)
        kind = s.get("type")
        if kind in ("record", "error"):
            return self._record(s)
        if kind in ("array", "map"):
            return self._collection(s, kind)
        if isinstance(kind, dict | list) or (isinstance(kind, str) and kind not in PRIMITIVES):
            return self.build(kind) if kind not in ("enum", "fixed") else None
        return None

    def _union(self, branches: list[Any]) -> _Reorder | None:
        built = [(b, self.build(b)) for b in branches]
        records = [
            (frozenset(f["name"] for f in _resolve_named(b, self.named)["fields"]), fn)
            for b, fn in built
            if fn is not None and _resolve_named(b, self.named).get("type") in ("record", "error")
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

    def _record(self, s: dict[str, Any]) -> _Reorder:
        if s["name"] in self.built:
            return self.built[s["name"]]
        fields: list[tuple[str, _Reorder | None]] = []

        def record(v: Any) -> Any:
            return {n: (fn(v[n]) if fn is not None else v[n]) for n, fn in fields}

        self.built[s["name"]] = record  # before the fields: recursive types refer to it
        fields.extend((f["name"], self.build(f["type"])) for f in s["fields"])
        return record

    def _collection(self, s: dict[str, Any], kind: str) -> _Reorder | None:
        if kind == "array":
            item = self.build(s["items"])
            return None if item is None else (lambda v: [item(x) for x in v])
        value = self.build(s["values"])
        return None if value is None else (lambda v: {k: value(x) for k, x in v.items()})


def _resolve_named(schema: Any, named: dict[str, Any]) -> dict[str, Any]:
    while isinstance(schema, str):
        if schema not in named:
            return {}
        schema = named[schema]
    return schema if isinstance(schema, dict) else {}
