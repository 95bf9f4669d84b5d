"""Decoding raw events and Riverline's own records: formats, coercion, evolution, errors."""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest

from streams.catalog import SchemaCatalog, SchemaVersion
from streams.codec import (
    REASONS,
    DecodedEvent,
    EncodeError,
    EventDecoder,
    decode_single_object,
    encode_confluent,
    encode_single_object,
)
from streams.errors import DecodeError
from streams.settings import REPO_ROOT

TS = {"type": "long", "logicalType": "timestamp-millis"}
KIND = {"type": "enum", "name": "Kind", "symbols": ["A", "B", "C"]}

CLICK_V1 = {
    "type": "record",
    "name": "Click",
    "namespace": "test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "ts", "type": TS},
        {"name": "count", "type": "int"},
        {"name": "total", "type": "long"},
        {"name": "score", "type": "double"},
        {"name": "ratio", "type": "float"},
        {"name": "kind", "type": KIND},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "attrs", "type": {"type": "map", "values": "double"}, "default": {}},
        {"name": "flag", "type": "boolean", "default": False},
        {"name": "legacy", "type": "string", "default": "old"},
    ],
}
# v2: "legacy" removed, "region" added with a default.
CLICK_V2 = {
    **CLICK_V1,
    "fields": [f for f in CLICK_V1["fields"] if f["name"] != "legacy"]
    + [{"name": "region", "type": "string", "default": "eu"}],
}
# A probe for hand-made bytes: one field of each kind the walk checks, in this order.
PROBE = {
    "type": "record",
    "name": "Probe",
    "namespace": "test",
    "fields": [
        {"name": "u", "type": ["null", "long"]},
        {"name": "e", "type": KIND},
        {"name": "b", "type": "boolean"},
        {"name": "s", "type": "string"},
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "d", "type": "double"},
        {"name": "i", "type": "int"},
    ],
}
IDS = """
[[schema]]
id = 7
subject = "clicks"
version = 1
[[schema]]
id = 8
subject = "clicks"
version = 2
[[schema]]
id = 9
subject = "probe"
version = 1
"""


def _write(root: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    """clicks v1 and v2, probe v1, Confluent ids 7, 8 (clicks) and 9 (probe)."""
    _write(
        tmp_path,
        {
            "clicks/v1.avsc": CLICK_V1,
            "clicks/v2.avsc": CLICK_V2,
            "probe/v1.avsc": PROBE,
            "confluent-ids.toml": IDS,
        },
    )
    return SchemaCatalog.load(tmp_path)


@pytest.fixture
def clicks(catalog: SchemaCatalog) -> EventDecoder:
    return EventDecoder(catalog, "clicks")


@pytest.fixture
def probe(catalog: SchemaCatalog) -> EventDecoder:
    return EventDecoder(catalog, "probe")


def click(**overrides: Any) -> dict[str, Any]:
    """A valid clicks/v2 record (also valid JSON input)."""
    record = {
        "id": "c-1",
        "ts": 1_700_000_000_000,
        "count": 3,
        "total": 2**40,
        "score": 0.25,
        "ratio": 0.5,
        "kind": "B",
        "note": None,
        "tags": ["x", "y"],
        "attrs": {"a": 1.5},
        "flag": True,
        "region": "us",
    }
    record.update(overrides)
    return record


def zz(n: int) -> bytes:
    """Avro zig-zag varint."""
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if value < 0x80:
            out.append(value)
            return bytes(out)
        out.append((value & 0x7F) | 0x80)
        value >>= 7


def probe_body(**parts: bytes) -> bytes:
    """Bytes of a probe record; pass raw bytes for a field to replace its encoding."""
    fields = {
        "u": zz(1) + zz(5),
        "e": zz(2),
        "b": b"\x01",
        "s": zz(2) + b"hi",
        "xs": zz(2) + zz(10) + zz(-3) + zz(0),
        "d": struct.pack("<d", 2.5),
        "i": zz(-7),
    }
    fields.update(parts)
    return b"".join(fields.values())


def single(sv: SchemaVersion, body: bytes) -> bytes:
    return b"\xc3\x01" + sv.fingerprint + body


def reason_of(decode: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(DecodeError) as info:
        decode()
    return info.value.reason, str(info.value)


# --- wire formats --------------------------------------------------------------------


def test_single_object_round_trip_keeps_schema_order_and_plain_timestamps(
    catalog: SchemaCatalog, clicks: EventDecoder
) -> None:
    v2 = catalog.latest("clicks")

    event = clicks.decode(b"c-1", encode_single_object(v2, click()))

    assert event == DecodedEvent(click(), v2, "avro-single-object")
    assert list(event.record) == [f["name"] for f in CLICK_V2["fields"]]
    assert type(event.record["ts"]) is int


def test_confluent_framing_uses_the_mapped_version(
    catalog: SchemaCatalog, clicks: EventDecoder
) -> None:
    value = encode_confluent(8, catalog.latest("clicks"), click())

    assert value[:5] == b"\x00\x00\x00\x00\x08"
    event = clicks.decode(None, value)
    assert (event.record, event.writer.version, event.wire_format) == (click(), 2, "confluent")


def test_datetimes_encode_as_epoch_millis(catalog: SchemaCatalog, clicks: EventDecoder) -> None:
    from datetime import UTC, datetime

    moment = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    value = encode_single_object(catalog.latest("clicks"), click(ts=moment))

    assert clicks.decode(None, value).record["ts"] == 1_700_000_000_000


def test_json_is_validated_against_the_latest_schema(
    catalog: SchemaCatalog, clicks: EventDecoder
) -> None:
    event = clicks.decode(b"k", json.dumps(click()).encode())

    assert event == DecodedEvent(click(), catalog.latest("clicks"), "json")


def test_every_reason_is_documented_once() -> None:
    assert len(set(REASONS)) == len(REASONS) == 18


# --- schema evolution ----------------------------------------------------------------


def test_v1_and_v2_producers_share_a_topic(catalog: SchemaCatalog, clicks: EventDecoder) -> None:
    v1, v2 = catalog.versions("clicks")
    old = {k: v for k, v in click().items() if k != "region"} | {"legacy": "gone"}

    from_v1 = clicks.decode(None, encode_single_object(v1, old))
    from_v1_confluent = clicks.decode(None, encode_confluent(7, v1, old))
    from_v2 = clicks.decode(None, encode_single_object(v2, click()))

    expected_v1 = click(region="eu")  # legacy dropped, region defaulted
    assert from_v1.record == expected_v1 == from_v1_confluent.record
    assert list(from_v1.record) == list(from_v2.record) == [f["name"] for f in CLICK_V2["fields"]]
    assert (from_v1.writer, from_v2.writer) == (v1, v2)


def test_decode_single_object_resolves_into_the_latest_or_given_reader(
    catalog: SchemaCatalog,
) -> None:
    v1, v2 = catalog.versions("clicks")
    old = {k: v for k, v in click().items() if k != "region"} | {"legacy": "gone"}
    data = encode_single_object(v1, old)

    writer, record = decode_single_object(catalog, data)
    assert (writer, record) == (v1, click(region="eu"))
    writer, record = decode_single_object(catalog, data, v1)
    assert (writer, record) == (v1, old)
    writer, record = decode_single_object(catalog, encode_single_object(v2, click()), v1)
    assert record == old | {"legacy": "old"}


@pytest.mark.parametrize(
    "name",
    ["prediction", "feature_vector", "dead_letter", "label", "model_record", "alert", "audit"],
)
def test_riverline_records_round_trip(name: str) -> None:
    catalog = SchemaCatalog.load(REPO_ROOT / "schemas")
    sv = catalog.record(name)
    record = _example(sv.parsed, sv.parsed.get("__named_schemas", {}))

    writer, decoded = decode_single_object(catalog, encode_single_object(sv, record))

    assert writer == sv
    assert decoded == record


def _example(schema: Any, named: dict[str, Any]) -> Any:
    """A deterministic, non-trivial value of a schema (maps and arrays get one item)."""
    if isinstance(schema, list):
        return _example(schema[-1], named)
    if isinstance(schema, str):
        if schema in named:
            return _example(named[schema], named)
        return {
            "null": None, "boolean": True, "int": -3, "long": 1_700_000_000_123,
            "float": 0.5, "double": 0.125, "string": "s", "bytes": b"\x00\xff",
        }[schema]  # fmt: skip
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: _example(f["type"], named) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "array":
        return [_example(schema["items"], named)]
    if kind == "map":
        return {"k": _example(schema["values"], named)}
    return _example(kind, named)


# --- JSON coercion -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"ts": "2023-11-14T22:13:20Z"}, {"ts": 1_700_000_000_000}),
        ({"ts": "2023-11-14T22:13:20.5+00:00"}, {"ts": 1_700_000_000_500}),
        ({"ts": "2023-11-14T23:13:20+01:00"}, {"ts": 1_700_000_000_000}),
        ({"ts": "2023-11-14 22:13:20"}, {"ts": 1_700_000_000_000}),  # naive is UTC
        ({"ts": 1.7e12}, {"ts": 1_700_000_000_000}),
        ({"count": 4.0, "total": 5.0}, {"count": 4, "total": 5}),
        ({"score": 2, "ratio": -1}, {"score": 2.0, "ratio": -1.0}),
        ({"note": "hello"}, {"note": "hello"}),
        ({"note": {"string": "tagged"}}, {"note": "tagged"}),  # Avro JSON union form
        ({"kind": "C"}, {"kind": "C"}),
    ],
)
def test_json_coercion(
    clicks: EventDecoder, given: dict[str, Any], expected: dict[str, Any]
) -> None:
    record = clicks.decode(None, json.dumps(click(**given)).encode()).record

    assert record == click(**expected)
    assert type(record["score"]) is float
    assert type(record["count"]) is int


def test_json_defaults_and_ignored_keys(clicks: EventDecoder) -> None:
    given = {k: v for k, v in click().items() if k not in ("note", "tags", "attrs", "region")}
    given["unknown"] = 1

    event = clicks.decode(None, json.dumps(given).encode())

    assert event.record == click(note=None, tags=[], attrs={}, region="eu")
    assert list(event.record) == [f["name"] for f in CLICK_V2["fields"]]
    assert event.ignored == ("unknown",)
    other = clicks.decode(None, json.dumps(given).encode()).record
    other["tags"].append("mutated")
    assert clicks.decode(None, json.dumps(given).encode()).record["tags"] == []


def test_json_output_encodes_as_avro(catalog: SchemaCatalog, clicks: EventDecoder) -> None:
    record = clicks.decode(None, json.dumps(click(ts="2024-01-01T00:00:00Z")).encode()).record

    data = encode_single_object(catalog.latest("clicks"), record, validate=True)

    assert clicks.decode(None, data).record == record


# --- one test per reason, from real bytes ----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason", "message"),
    [
        ({"count": "abc"}, "wrong_type", "field 'count': expected int, got string \"abc\""),
        ({"count": 1.5}, "wrong_type", "field 'count': expected int (a whole number)"),
        ({"count": 2**31}, "wrong_type", "field 'count': 2147483648 is out of range for int"),
        ({"count": True}, "wrong_type", "field 'count': expected int, got boolean true"),
        ({"score": "1.0"}, "wrong_type", "field 'score': expected number"),
        ({"flag": 1}, "wrong_type", "field 'flag': expected boolean, got number 1"),
        ({"tags": "x"}, "wrong_type", "field 'tags': expected array"),
        ({"tags": ["x", 3]}, "wrong_type", "field 'tags[1]': expected string, got number 3"),
        ({"attrs": {"a": "b"}}, "wrong_type", "field 'attrs['a']': expected number"),
        ({"note": 5}, "wrong_type", "field 'note': expected null or string, got number 5"),
        ({"id": None}, "wrong_type", "field 'id': expected string, got null"),
        ({"score": float("nan")}, "non_finite", "field 'score': nan is not allowed"),
        ({"ratio": float("inf")}, "non_finite", "field 'ratio': inf is not allowed"),
        ({"attrs": {"a": float("-inf")}}, "non_finite", "field 'attrs['a']': -inf"),
        ({"count": float("nan")}, "non_finite", "field 'count'"),
        ({"kind": "Z"}, "bad_enum", "field 'kind': string \"Z\" is not one of Kind: A, B, C"),
        ({"kind": 1}, "wrong_type", "field 'kind': expected enum Kind symbol"),
        ({"ts": "yesterday"}, "bad_timestamp", "field 'ts': string \"yesterday\" is not an ISO"),
        ({"ts": True}, "wrong_type", "field 'ts': expected timestamp-millis"),
    ],
)
def test_json_errors_name_the_field(
    clicks: EventDecoder, overrides: dict[str, Any], reason: str, message: str
) -> None:
    value = json.dumps(click(**overrides)).encode()  # json writes NaN and Infinity tokens

    assert reason_of(lambda: clicks.decode(None, value))[0] == reason
    assert message in reason_of(lambda: clicks.decode(None, value))[1]


def test_missing_required_field(clicks: EventDecoder) -> None:
    value = json.dumps({k: v for k, v in click().items() if k != "total"}).encode()

    assert reason_of(lambda: clicks.decode(None, value)) == (
        "missing_field",
        "field 'total': required field is missing",
    )


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, None, "empty"),
        (None, b"", "empty"),
        (b"\xff\xfe", b"{}", "bad_key"),
        (None, b"{nope", "not_json"),
        (None, b"\xff\xfe{}", "not_json"),
        (None, b"[" * 100_000 + b"]" * 100_000, "not_json"),
        (None, b"1" * 5000, "not_json"),  # over Python's int digit limit
        (None, b"[1, 2]", "not_object"),
        (None, b'"text"', "not_object"),
        (None, b"NaN", "not_object"),
        (None, b"\x00\x00\x00", "truncated"),
        (None, b"\xc3\x01\x00\x01", "truncated"),
        (None, b"\x00\x00\x00\x00\x63\x02", "unknown_confluent_id"),
        (None, b"\x00\x00\x00\x00\x09" + probe_body(), "unknown_confluent_id"),  # probe's id
        (None, b"\xc3\x01" + b"\x99" * 8 + b"\x02", "unknown_fingerprint"),
    ],
)
def test_framing_reasons(
    clicks: EventDecoder, key: bytes | None, value: bytes | None, reason: str
) -> None:
    assert reason_of(lambda: clicks.decode(key, value))[0] == reason


def test_too_large(catalog: SchemaCatalog) -> None:
    decoder = EventDecoder(catalog, "clicks", max_bytes=100)

    assert reason_of(lambda: decoder.decode(None, b" " * 101))[0] == "too_large"
    assert reason_of(lambda: decoder.decode(None, b" " * 100))[0] == "not_json"


def test_fingerprint_of_another_subject_is_unknown_here(
    catalog: SchemaCatalog, clicks: EventDecoder
) -> None:
    value = single(catalog.latest("probe"), probe_body())

    reason, message = reason_of(lambda: clicks.decode(None, value))

    assert reason == "unknown_fingerprint"
    assert "probe/v1" in message


def test_probe_body_is_valid(catalog: SchemaCatalog, probe: EventDecoder) -> None:
    record = probe.decode(None, single(catalog.latest("probe"), probe_body())).record

    assert record == {"u": 5, "e": "C", "b": True, "s": "hi", "xs": [10, -3], "d": 2.5, "i": -7}


@pytest.mark.parametrize(
    ("parts", "tail", "reason", "where"),
    [
        ({"u": zz(-1)}, b"", "bad_union_index", "field 'u': union index -1"),
        ({"u": zz(2)}, b"", "bad_union_index", "field 'u': union index 2"),
        ({"e": zz(3)}, b"", "bad_enum_index", "field 'e': enum index 3"),
        ({"e": zz(-1)}, b"", "bad_enum_index", "field 'e'"),
        ({"b": b"\x02"}, b"", "invalid_avro", "field 'b': boolean byte 0x02"),
        ({"s": zz(-1)}, b"", "invalid_avro", "field 's': negative length"),
        ({"s": zz(1000) + b"hi"}, b"", "oversized_collection", "field 's': length 1000"),
        ({"s": zz(2) + b"\xff\xfe"}, b"", "invalid_avro", "field 's': string is not valid UTF-8"),
        ({"xs": zz(2**40) + zz(1)}, b"", "oversized_collection", "field 'xs'"),
        ({"xs": zz(-1) + zz(10**6) + zz(1) + zz(0)}, b"", "oversized_collection", "block of"),
        ({"xs": zz(-1) + zz(3) + zz(1) + zz(0)}, b"", "invalid_avro", "block size says"),
        ({"d": struct.pack("<d", math.nan)}, b"", "non_finite", "field 'd': nan"),
        ({"d": struct.pack("<d", -math.inf)}, b"", "non_finite", "field 'd': -inf"),
        ({"i": b"\xff\xff\xff\xff\x1f"}, b"", "invalid_avro", "field 'i': value does not fit"),
        ({"u": zz(1) + b"\xff" * 10 + b"\x01"}, b"", "invalid_avro", "varint longer than 10"),
        ({"i": b""}, b"", "truncated", "field 'i': message ends"),
        ({"d": b"\x00\x00"}, b"", "truncated", "message ends"),
        ({}, b"\x00", "trailing_bytes", "1 bytes follow"),
    ],
)
def test_avro_reasons(
    catalog: SchemaCatalog,
    probe: EventDecoder,
    parts: dict[str, bytes],
    tail: bytes,
    reason: str,
    where: str,
) -> None:
    sv = catalog.latest("probe")
    body = probe_body(**parts) + tail

    for value in (single(sv, body), b"\x00\x00\x00\x00\x09" + body):
        got, message = reason_of(lambda value=value: probe.decode(None, value))
        assert (got, where in message) == (reason, True), message
        got, message = reason_of(
            lambda value=value: decode_single_object(catalog, value, require_finite=True)
        )
        assert got == ("invalid_avro" if value[0] == 0 else reason)


def test_fastavro_alone_accepts_what_the_walk_refuses(catalog: SchemaCatalog) -> None:
    """Why the walk exists: fastavro reads a negative union index and ignores trailing bytes."""
    sv = catalog.latest("probe")
    body = probe_body(u=zz(-1) + zz(5)) + b"junk"

    record = fastavro.schemaless_reader(io.BytesIO(body), sv.parsed)

    assert record["u"] == 5  # index -1 picked the last branch
    assert reason_of(lambda: decode_single_object(catalog, single(sv, body)))[0] == (
        "bad_union_index"
    )


def test_decode_single_object_framing(catalog: SchemaCatalog) -> None:
    sv = catalog.latest("probe")

    assert reason_of(lambda: decode_single_object(catalog, b""))[0] == "empty"
    assert reason_of(lambda: decode_single_object(catalog, b"{}"))[0] == "invalid_avro"
    assert reason_of(lambda: decode_single_object(catalog, b"\xc3\x01\x00"))[0] == "truncated"
    assert reason_of(lambda: decode_single_object(catalog, b"\xc3\x01" + b"\x01" * 9))[0] == (
        "unknown_fingerprint"
    )
    big = single(sv, probe_body(s=zz(200) + b"x" * 200))
    assert reason_of(lambda: decode_single_object(catalog, big, max_bytes=100))[0] == "too_large"


def test_own_records_read_back_non_finite_values_unless_asked(catalog: SchemaCatalog) -> None:
    value = single(catalog.latest("probe"), probe_body(d=struct.pack("<d", math.inf)))

    _, record = decode_single_object(catalog, value)

    assert record["d"] == math.inf
    with pytest.raises(DecodeError, match="field 'd': inf is not allowed"):
        decode_single_object(catalog, value, require_finite=True)


# --- encoding ------------------------------------------------------------------------


def test_encode_errors_are_riverline_errors(catalog: SchemaCatalog) -> None:
    sv = catalog.latest("clicks")

    with pytest.raises(EncodeError, match="clicks/v2"):
        encode_single_object(sv, {"id": "x"})
    with pytest.raises(EncodeError):
        encode_single_object(sv, click(count=1.5), validate=True)
    with pytest.raises(EncodeError, match="4 bytes"):
        encode_confluent(2**32, sv, click())


def test_nested_records_resolve_into_reader_order(tmp_path: Path) -> None:
    def schema(*extra: dict[str, Any]) -> dict[str, Any]:
        node = {
            "type": "record",
            "name": "Node",
            "fields": [
                {"name": "v", "type": "long"},
                *extra,
                {"name": "next", "type": ["null", "Node"], "default": None},
            ],
        }
        return {
            "type": "record",
            "name": "Outer",
            "namespace": "test",
            "fields": [
                {"name": "head", "type": node},
                {"name": "nodes", "type": {"type": "array", "items": "Node"}},
                {"name": "maybe", "type": ["null", "Node"]},
            ],
        }

    extra = {"name": "w", "type": "string", "default": "w0"}
    _write(tmp_path, {"nested/v1.avsc": schema(), "nested/v2.avsc": schema(extra)})
    catalog = SchemaCatalog.load(tmp_path)
    v1 = catalog.get("nested", 1)
    leaf = {"v": 2, "next": None}
    record = {"head": {"v": 1, "next": leaf}, "nodes": [leaf, leaf], "maybe": leaf}

    decoded = EventDecoder(catalog, "nested").decode(None, encode_single_object(v1, record))

    new_leaf = {"v": 2, "w": "w0", "next": None}
    assert decoded.record == {
        "head": {"v": 1, "w": "w0", "next": new_leaf},
        "nodes": [new_leaf, new_leaf],
        "maybe": new_leaf,
    }
    orders = [list(decoded.record["head"]), list(decoded.record["head"]["next"])]
    orders += [list(decoded.record["nodes"][1]), list(decoded.record["maybe"])]
    assert orders == [["v", "w", "next"]] * 4
