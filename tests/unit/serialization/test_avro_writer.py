"""The compiled Avro writer writes what fastavro writes, or steps aside.

See :mod:`streams.serialization.avro_writer`.
"""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.serialization.avro_writer import Unsupported, _KeyCache, compile_writer
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.codec import SINGLE_OBJECT_MAGIC, EncodeError, encode_single_object
from streams.settings import REPO_ROOT

CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")
VERSIONS = [sv for subject in CATALOG.subjects() for sv in CATALOG.versions(subject)]


def fastavro_body(parsed: Any, record: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def compiled_body(parsed: Any, record: Any) -> bytes:
    writer = compile_writer(parsed)
    assert writer is not None
    out = bytearray()
    writer.write(record, out)
    return bytes(out)


#: Strategies of the primitive types, edges included.
PRIMITIVE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    # beyond int32 too: fastavro writes any 64-bit value into an int field
    "int": st.integers(-(2**31), 2**31 - 1) | st.integers(-(2**63), 2**63 - 1),
    "long": st.integers(-(2**31), 2**31 - 1) | st.integers(-(2**63), 2**63 - 1),
    # ints too (fastavro converts them), and NaN and infinities
    "float": st.floats() | st.integers(-(2**60), 2**60),
    "double": st.floats() | st.integers(-(2**60), 2**60),
    "string": st.text(max_size=12),
    "bytes": st.binary(max_size=12),
}


def values(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of ``schema`` as Riverline's records hold them, edges included."""
    if isinstance(schema, list):
        return st.one_of([values(branch, named) for branch in schema])
    if isinstance(schema, str) and schema in named:
        return values(named[schema], named)
    kind = schema if isinstance(schema, str) else schema["type"]
    if kind in PRIMITIVE_VALUES:
        return PRIMITIVE_VALUES[kind]
    return complex_values(kind, schema, named)


def complex_values(kind: str, schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a named or container type (named types are recorded in ``named``)."""
    if kind in ("enum", "fixed", "record"):
        named[schema["name"]] = schema
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(values(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=6), values(schema["values"], named), max_size=70)
    if kind == "record":
        fields = {f["name"]: values(f["type"], named) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    raise AssertionError(f"no strategy for {kind}")


@pytest.mark.parametrize("sv", VERSIONS, ids=lambda sv: sv.label)
def test_every_catalog_schema_compiles(sv: SchemaVersion) -> None:
    assert compile_writer(sv.parsed) is not None


@pytest.mark.parametrize("sv", VERSIONS, ids=lambda sv: sv.label)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_bytes_are_fastavros(sv: SchemaVersion, data: st.DataObject) -> None:
    record = data.draw(values(sv.parsed, {}))
    if assert_same_as_fastavro(sv.parsed, record) is None:
        with pytest.raises(EncodeError):
            encode_single_object(sv, record)


def assert_same_as_fastavro(parsed: Any, record: Any) -> bytes | None:
    """The compiled writer's body is fastavro's, or neither writes it (then ``None``)."""
    try:
        expected = fastavro_body(parsed, record)
    except ValueError:  # e.g. 2**31 in ["null", "int"]: no branch takes it
        with pytest.raises(Unsupported):
            compiled_body(parsed, record)
        return None
    try:
        got = compiled_body(parsed, record)
    except Unsupported:
        # Allowed only where the value is out of the writer's range: float32 overflow.
        assert any(
            isinstance(v, float) and math.isfinite(v) and abs(v) > 3.4e38 for v in _leaves(record)
        ), record
        return expected
    assert got == expected
    return got


#: Shapes the catalog does not have: other roots, unions whose int branch depends on the
#: value's range, named types used twice, containers of containers.
SHAPES: dict[str, Any] = {
    "int-root": "int",
    "float-root": "float",
    "union-root": ["null", "int", "float"],
    "float-before-int": ["float", "int", "string"],
    "int-long-double": ["int", "long", "double", "bytes"],
    "float-then-double": ["null", "float", "double"],
    "array-of-unions": {"type": "array", "items": ["null", "int", "float", "boolean"]},
    "map-of-arrays": {"type": "map", "values": {"type": "array", "items": "double"}},
    "named-twice": {
        "type": "record",
        "name": "Outer",
        "fields": [
            {"name": "kind", "type": {"type": "enum", "name": "Kind", "symbols": ["A", "B_2"]}},
            {"name": "again", "type": "Kind"},
            {"name": "id", "type": {"type": "fixed", "name": "Id", "size": 4}},
            {
                "name": "inner",
                "type": {
                    "type": "record",
                    "name": "Inner",
                    "fields": [{"name": "ids", "type": {"type": "array", "items": "Id"}}],
                },
            },
            {"name": "inners", "type": {"type": "map", "values": "Inner"}},
        ],
    },
}


@pytest.mark.parametrize("schema", SHAPES.values(), ids=SHAPES.keys())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_other_shapes_are_written_as_fastavro_does(schema: Any, data: st.DataObject) -> None:
    parsed = fastavro.parse_schema(schema)
    assert_same_as_fastavro(parsed, data.draw(values(parsed, {})))


#: Field names fastavro's parse_schema accepts that are not identifiers.
ODD_NAMES: list[Any] = ['a"b', "x\n", "'); import os; ('", "\\", "ü", "class", "", 5]


def test_any_field_name_fastavro_accepts_is_written_as_fastavro_does() -> None:
    fields = [{"name": name, "type": ["null", "long"]} for name in ODD_NAMES]
    parsed = fastavro.parse_schema({"type": "record", "name": "Odd", "fields": fields})
    record = {name: i for i, name in enumerate(ODD_NAMES)}
    assert assert_same_as_fastavro(parsed, record) is not None
    writer = compile_writer(parsed)
    assert writer is not None
    del record["class"]
    with pytest.raises(Unsupported):
        writer.write(record, bytearray())


class Label(str):
    pass


class Count(int):
    pass


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ("long", True),  # bool is not int, as fastavro's validators say
        ("long", Count(3)),  # nor is a subclass
        ("long", 2**63),
        ("int", 1.0),
        ("double", "1"),
        ("float", False),
        ("boolean", 1),
        ("null", 0),
        ("string", b"x"),
        ("bytes", "x"),
        (["null", "int"], 2**31),  # no branch takes it
        (["null", "long"], 2**63),
        (["null", "double"], True),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, "B"),
        ({"type": "enum", "name": "E", "symbols": ["A"]}, Label("A")),
        ({"type": "fixed", "name": "F", "size": 2}, b"abc"),
        ({"type": "array", "items": "long"}, (1, 2)),
        ({"type": "map", "values": "long"}, {Label("k"): 1}),
        ({"type": "map", "values": "long"}, {1: 1}),
        ({"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}, {}),
    ],
)
def test_values_it_does_not_take_are_unsupported(schema: Any, value: Any) -> None:
    writer = compile_writer(fastavro.parse_schema(schema))
    assert writer is not None
    with pytest.raises(Unsupported):
        writer.write(value, bytearray())


def test_a_subclassed_map_key_is_unsupported_even_once_its_text_is_cached() -> None:
    writer = compile_writer(fastavro.parse_schema({"type": "map", "values": "long"}))
    assert writer is not None
    writer.write({"k": 1}, bytearray())
    with pytest.raises(Unsupported):
        writer.write({Label("k"): 1}, bytearray())


def test_the_key_cache_stops_growing_at_its_limit_and_still_writes_every_key() -> None:
    parsed = fastavro.parse_schema({"type": "map", "values": "long"})
    record = {f"k{i}": i for i in range(_KeyCache.limit + 50)}
    first = assert_same_as_fastavro(parsed, record)
    writer = compile_writer(parsed)
    assert writer is not None
    for _ in range(2):  # once filling the cache, once past it
        out = bytearray()
        writer.write(record, out)
        assert bytes(out) == first
    cache = _KeyCache()
    for key in record:
        cache.store(key)
    assert len(cache.encoded) == _KeyCache.limit


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def prediction_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": "e-1",
        "pipeline": "transactions",
        "model": "transactions-lr@3",
        "schema": "transactions/v1/0011223344556677",
        "source": "t.raw:0:12",
        "features": "card_features@abc",
        "spec": "0123",
        "event_ts": 1_700_000_000_000,
        "ingest_ts": 1_700_000_000_001,
        "predict_ts": 1_700_000_000_002,
        "prediction": False,
        "proba": {"False": 0.9, "True": 0.1},
        "score": None,
        "label": True,
    }
    record.update(changes)
    return record


@pytest.mark.parametrize(
    "changes",
    [
        {"event_ts": datetime(2026, 11, 30, 12, 0, tzinfo=UTC)},  # fastavro converts it
        {"score": Decimal("0.5")},  # not a type the compiled writer knows
        {"prediction": (1, 2)},  # a tuple: fastavro's union tuple notation or an error
    ],
    ids=["datetime", "decimal", "tuple"],
)
def test_values_it_does_not_handle_go_to_fastavro(changes: dict[str, Any]) -> None:
    sv = CATALOG.record("prediction")
    record = prediction_record(**changes)
    with pytest.raises(Unsupported):
        compiled_body(sv.parsed, record)
    try:
        expected = SINGLE_OBJECT_MAGIC + sv.fingerprint + fastavro_body(sv.parsed, record)
    except (ValueError, TypeError):  # fastavro refuses it: so does encode
        with pytest.raises(EncodeError, match=r"cannot encode record as riverline\.prediction"):
            encode_single_object(sv, record)
        return
    assert encode_single_object(sv, record) == expected


def test_an_int_past_a_long_goes_to_the_double_branch_as_in_fastavro() -> None:
    sv = CATALOG.record("prediction")
    record = prediction_record(label=2**70)
    assert compiled_body(sv.parsed, record) == fastavro_body(sv.parsed, record)


def test_a_missing_field_takes_its_default_as_fastavro_does() -> None:
    sv = CATALOG.record("prediction")
    record = prediction_record()
    del record["score"]  # default null
    assert encode_single_object(sv, record) == (
        SINGLE_OBJECT_MAGIC + sv.fingerprint + fastavro_body(sv.parsed, record)
    )


def test_what_neither_can_write_is_an_encode_error() -> None:
    sv = CATALOG.record("prediction")
    with pytest.raises(EncodeError, match=r"riverline\.prediction"):
        encode_single_object(sv, prediction_record(event_id="\ud800"))  # lone surrogate
    with pytest.raises(EncodeError, match=r"riverline\.prediction"):
        encode_single_object(sv, prediction_record(pipeline=None))


def test_map_keys_are_cached_but_still_checked() -> None:
    sv = CATALOG.record("prediction")
    first = encode_single_object(sv, prediction_record())
    assert encode_single_object(sv, prediction_record()) == first
    with pytest.raises(EncodeError):
        encode_single_object(sv, prediction_record(proba={1: 0.5}))


@pytest.mark.parametrize(
    "schema",
    [
        {  # recursive
            "type": "record",
            "name": "Node",
            "fields": [{"name": "next", "type": ["null", "Node"]}],
        },
        {  # a union of records: fastavro picks the branch by field names
            "type": "record",
            "name": "R",
            "fields": [
                {
                    "name": "u",
                    "type": [
                        {"type": "record", "name": "A", "fields": [{"name": "a", "type": "int"}]},
                        {"type": "record", "name": "B", "fields": [{"name": "b", "type": "int"}]},
                    ],
                }
            ],
        },
        {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
    ],
    ids=["recursive", "union-of-records", "decimal"],
)
def test_schemas_it_does_not_cover_get_no_writer(schema: dict[str, Any]) -> None:
    assert compile_writer(fastavro.parse_schema(schema)) is None
