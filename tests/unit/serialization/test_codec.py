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

from streams.errors import ConfigError, DecodeError
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.codec import (
    REASONS,
    DecodedEvent,
    EncodeError,
    EventDecoder,
    decode_single_object,
    encode_confluent,
    encode_single_object,
)
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
    assert len(set(REASONS)) == len(REASONS) == 23


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
        # Riverline's readers take both framings (RIVERLINE_OUTPUT_FORMAT): the same reason.
        assert got == reason


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


# --- hostile values: what JSON admits but Avro, UTF-8 or the pipeline cannot hold -------

NOW = 1_700_000_000_000
STAMP = {
    "type": "record",
    "name": "Stamp",
    "namespace": "test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "key", "type": "string", "default": "k"},
        {"name": "ts", "type": TS},
        {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}, "default": 0},
        {"name": "maybe", "type": ["null", TS], "default": None},
        {"name": "num", "type": "long", "default": 0},
    ],
}


@pytest.fixture
def stamps(tmp_path: Path) -> SchemaCatalog:
    _write(tmp_path, {"stamps/v1.avsc": STAMP})
    return SchemaCatalog.load(tmp_path)


def stamp_decoder(catalog: SchemaCatalog, **options: Any) -> EventDecoder:
    fields = {"id_field": "id", "key_field": "key", "time_field": "ts"}
    return EventDecoder(catalog, "stamps", **(fields | options))


def stamp(**overrides: Any) -> dict[str, Any]:
    return {"id": "e-1", "key": "k", "ts": NOW, "us": 0, "maybe": None, "num": 0} | overrides


def both_formats(catalog: SchemaCatalog, record: dict[str, Any]) -> list[bytes]:
    """``record`` as JSON and as Avro single-object of stamps/v1."""
    return [json.dumps(record).encode(), encode_single_object(catalog.latest("stamps"), record)]


@pytest.mark.parametrize(
    ("overrides", "where"),
    [
        ({"note": "a\ud800b"}, "field 'note': string holds a lone UTF-16 surrogate (U+D800"),
        ({"note": {"string": "\udfff"}}, "field 'note': string holds a lone UTF-16"),
        ({"tags": ["x", "\udbff"]}, "field 'tags[1]': string holds"),
        ({"attrs": {"\ud800": 1.0}}, "field 'attrs['\\ud800']': map key holds"),
        ({"unknown\udc00": 1}, "the unknown key 'unknown\\udc00' holds"),
    ],
)
def test_lone_surrogates_anywhere_in_json_are_bad_strings(
    clicks: EventDecoder, overrides: dict[str, Any], where: str
) -> None:
    value = json.dumps(click(**overrides)).encode()  # ensure_ascii: the escapes \ud800...
    assert b"\\ud" in value

    reason, message = reason_of(lambda: clicks.decode(None, value))

    assert (reason, where in message) == ("bad_string", True), message
    message.encode("utf-8")  # the dead letter's rl.error.message header can hold it


def test_surrogate_pairs_and_other_text_are_fine(
    catalog: SchemaCatalog, clicks: EventDecoder
) -> None:
    text = "\U0001f600 é 中"
    value = json.dumps(click(note=text, tags=[text], attrs={text: 1.0})).encode()
    assert b"\\ud83d\\ude00" in value  # the pair json.dumps escapes the emoji into

    record = clicks.decode(None, value).record

    assert (record["note"], record["tags"], record["attrs"]) == (text, [text], {text: 1.0})
    assert clicks.decode(None, encode_single_object(catalog.latest("clicks"), record)).record == (
        record
    )


@pytest.mark.parametrize("bad", [b"\xed\xa0\x80Q", b"\xff\xfeQQ", b"QQQ\xc3"])
def test_avro_strings_that_are_not_utf8_are_refused(
    catalog: SchemaCatalog, clicks: EventDecoder, bad: bytes
) -> None:
    """Avro holds UTF-8 (strict: an encoded surrogate is invalid), in values and map keys."""
    v2 = catalog.latest("clicks")
    for record in (click(note="QQQQ"), click(attrs={"QQQQ": 1.0})):
        value = encode_single_object(v2, record)
        assert value.count(b"\x08QQQQ") == 1
        broken = value.replace(b"\x08QQQQ", b"\x08" + bad)

        reason, message = reason_of(lambda broken=broken: clicks.decode(None, broken))

        assert reason == "invalid_avro"
        assert "not valid UTF-8" in message


def test_event_ids_and_keys_over_the_limit_are_refused(stamps: SchemaCatalog) -> None:
    decoder = stamp_decoder(stamps, max_id_bytes=8)

    for value in both_formats(stamps, stamp(id="12345678", key="éééé")):  # 8 bytes each
        assert decoder.decode(None, value, now_ms=NOW).record["id"] == "12345678"
    for record, where in (
        (stamp(id="123456789"), "field 'id': the event id is 9 bytes of UTF-8, over the limit"),
        (stamp(key="ééééé"), "field 'key': the partitioning key is 10 bytes"),
    ):
        for value in both_formats(stamps, record):
            reason, message = reason_of(lambda v=value: decoder.decode(None, v, now_ms=NOW))
            assert (reason, where in message) == ("id_too_long", True), message
            assert "RIVERLINE_MAX_ID_BYTES" in message


def test_an_id_that_is_not_a_string_is_bounded_as_text(stamps: SchemaCatalog) -> None:
    decoder = stamp_decoder(stamps, id_field="num", max_id_bytes=3)

    assert decoder.decode(None, json.dumps(stamp(num=-99)).encode()).record["num"] == -99
    assert reason_of(lambda: decoder.decode(None, json.dumps(stamp(num=1000)).encode()))[0] == (
        "id_too_long"
    )


def test_the_400_kb_event_id_is_refused(stamps: SchemaCatalog) -> None:
    value = json.dumps(stamp(id="x" * 400_000)).encode()

    assert reason_of(lambda: stamp_decoder(stamps).decode(None, value, now_ms=NOW))[0] == (
        "id_too_long"
    )
    assert EventDecoder(stamps, "stamps").decode(None, value).record["id"] == "x" * 400_000


@pytest.mark.parametrize(
    ("ts", "outcome"),
    [
        (0, 0),
        (NOW, NOW),
        (NOW + 60_000, NOW + 60_000),  # exactly the allowed minute ahead
        ("2023-11-14T22:13:20Z", NOW),
        (NOW + 60_001, "60 s ahead of the ingest time 2023-11-14T22:13:20.000+00:00, more than"),
        (-1, "-1 ms is before 1970-01-01T00:00:00Z"),
        ("1969-12-31T23:59:59.999Z", "-1 ms is before 1970"),
        (2**63 - 1, "9223372036854775807 ms is 9223370336854776 s ahead"),
    ],
)
def test_event_times_before_1970_or_too_far_ahead_are_refused(
    stamps: SchemaCatalog, ts: Any, outcome: int | str
) -> None:
    decoder = stamp_decoder(stamps, max_event_time_ahead=60.0)

    for value in (
        both_formats(stamps, stamp(ts=ts))
        if isinstance(ts, int)
        else [json.dumps(stamp(ts=ts)).encode()]
    ):
        if isinstance(outcome, int):
            assert decoder.decode(None, value, now_ms=NOW).event_ms == outcome
        else:
            reason, message = reason_of(lambda v=value: decoder.decode(None, v, now_ms=NOW))
            assert (reason, outcome in message) == ("bad_event_time", True), message


def test_without_an_ingest_time_event_times_are_bounded_by_year_9999(
    stamps: SchemaCatalog,
) -> None:
    decoder = stamp_decoder(stamps)
    last = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z

    assert decoder.decode(None, json.dumps(stamp(ts=last)).encode()).event_ms == last
    value = json.dumps(stamp(ts=last + 1)).encode()
    assert reason_of(lambda: decoder.decode(None, value)) == (
        "bad_event_time",
        "field 'ts': 253402300800000 ms is after the year 9999",
    )


def test_event_times_in_microseconds_and_null_ones(stamps: SchemaCatalog) -> None:
    micros = stamp_decoder(stamps, time_field="us", max_event_time_ahead=1.0)
    nullable = stamp_decoder(stamps, time_field="maybe")

    event = micros.decode(None, json.dumps(stamp(us=NOW * 1000 + 999)).encode(), now_ms=NOW)
    assert (event.event_ms, event.record["us"]) == (NOW, NOW * 1000 + 999)
    late = json.dumps(stamp(us=(NOW + 1001) * 1000)).encode()
    assert reason_of(lambda: micros.decode(None, late, now_ms=NOW))[0] == "bad_event_time"
    assert nullable.decode(None, json.dumps(stamp(maybe=5)).encode()).event_ms == 5
    for value in both_formats(stamps, stamp(maybe=None)):
        assert reason_of(lambda v=value: nullable.decode(None, v)) == (
            "bad_event_time",
            "field 'maybe': expected epoch milliseconds, got null",
        )


def test_a_decoder_without_pipeline_fields_checks_neither(stamps: SchemaCatalog) -> None:
    event = EventDecoder(stamps, "stamps").decode(None, json.dumps(stamp(ts=-5)).encode())

    assert (event.record["ts"], event.event_ms) == (-5, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"id_field": "nope"}, "id_field 'nope' is not a field of stamps/v1"),
        ({"key_field": "nope"}, "key_field 'nope' is not a field of stamps/v1"),
        ({"time_field": "nope"}, "time_field 'nope' is not a field of stamps/v1"),
        ({"time_field": "key"}, "time_field 'key' of stamps/v1/.* is not a number"),
        ({"max_id_bytes": 0}, "max_id_bytes must be at least 1"),
        ({"max_event_time_ahead": -1.0}, "max_event_time_ahead must be a finite number"),
        ({"max_event_time_ahead": math.inf}, "max_event_time_ahead must be a finite number"),
    ],
)
def test_pipeline_fields_and_limits_are_checked_up_front(
    stamps: SchemaCatalog, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        stamp_decoder(stamps, **options)


def test_json_collections_are_bounded_as_avro_ones(catalog: SchemaCatalog) -> None:
    """What JSON admits, the next stage reads back from Avro under the same max_items."""
    decoder = EventDecoder(catalog, "clicks", max_items=20)
    v2 = catalog.latest("clicks")
    outcomes = []
    for n in range(14, 20):  # tags weigh 1 per item, each attrs entry 2 (key and value)
        record = click(tags=["t"] * n, attrs={"a": 1.0, "b": 2.0, "c": 3.0})
        json_outcome = outcome_of(lambda r=record: decoder.decode(None, json.dumps(r).encode()))
        avro_outcome = outcome_of(
            lambda r=record: decoder.decode(None, encode_single_object(v2, r))
        )
        assert json_outcome == avro_outcome
        outcomes.append(json_outcome)

    assert outcomes == ["ok"] * 1 + ["oversized_collection"] * 5


def test_a_union_branch_that_fails_spends_no_items(tmp_path: Path) -> None:
    lists = [{"type": "array", "items": "long"}, {"type": "array", "items": "string"}]
    schema = {"type": "record", "name": "U", "fields": [{"name": "xs", "type": lists}]}
    _write(tmp_path, {"u/v1.avsc": schema})
    decoder = EventDecoder(SchemaCatalog.load(tmp_path), "u", max_items=3)

    assert decoder.decode(None, b'{"xs": ["a", "b", "c"]}').record == {"xs": ["a", "b", "c"]}


def outcome_of(decode: Callable[[], object]) -> str:
    try:
        decode()
    except DecodeError as exc:
        return exc.reason
    return "ok"


def _chain(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"v": depth, "next": None}
    for v in range(depth - 1, -1, -1):
        node = {"v": v, "next": node}
    return node


def test_recursive_json_is_bounded_as_avro_reading_is(tmp_path: Path) -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "v", "type": "long"}, {"name": "next", "type": ["null", "Node"]}],
    }
    schema = {
        "type": "record",
        "name": "Tree",
        "namespace": "test",
        "fields": [{"name": "head", "type": node}],
    }
    _write(tmp_path, {"tree/v1.avsc": schema})
    catalog = SchemaCatalog.load(tmp_path)
    decoder = EventDecoder(catalog, "tree")
    sv = catalog.latest("tree")

    deepest = {"head": _chain(64)}  # 64 nodes below the head: Avro's MAX_RECURSION
    record = decoder.decode(None, json.dumps(deepest).encode()).record
    assert decode_single_object(catalog, encode_single_object(sv, record))[1] == deepest
    too_deep = {"head": _chain(65)}
    reason, message = reason_of(lambda: decoder.decode(None, json.dumps(too_deep).encode()))
    assert (reason, "nested deeper than 64 levels" in message) == ("wrong_type", True)
    assert outcome_of(lambda: decoder.decode(None, encode_single_object(sv, too_deep))) == (
        "invalid_avro"
    )


@pytest.mark.parametrize(
    "value",
    [
        b'{"id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"count": ' + b"7" * 5000 + b"}",
    ],
)
def test_json_the_parser_refuses_inside_a_field_is_not_json(
    clicks: EventDecoder, value: bytes
) -> None:
    assert reason_of(lambda: clicks.decode(None, value))[0] == "not_json"


def test_extreme_numbers_in_json(clicks: EventDecoder) -> None:
    overflow = json.dumps(click()).replace('"score": 0.25', '"score": 1e309').encode()
    assert b"1e309" in overflow
    assert reason_of(lambda: clicks.decode(None, overflow))[0] == "non_finite"
    huge = json.dumps(click(score=10**400)).encode()
    assert reason_of(lambda: clicks.decode(None, huge)) == (
        "wrong_type",
        "field 'score': integer too large for a double",
    )
    assert clicks.decode(None, json.dumps(click(count=-0.0)).encode()).record["count"] == 0


def test_a_signed_record_decodes_as_the_bounded_read_does_and_must_still_end_exactly() -> None:
    from streams.serialization.codec import decode_single_object, encode_single_object
    from streams.settings import REPO_ROOT

    catalog = SchemaCatalog.load(REPO_ROOT / "schemas")
    alert = catalog.record("alert")
    record = {
        "alert_id": "a1",
        "kind": "drift",
        "severity": "WARNING",
        "pipeline": "p",
        "model": None,
        "message": "m",
        "details": {"k": "v"},
        "event_id": None,
        "ts": 1,
    }
    value = encode_single_object(alert, record)
    assert decode_single_object(catalog, value, signed=True) == decode_single_object(catalog, value)
    for bad in (value + b"\x00", value[:-1]):
        with pytest.raises(DecodeError):
            decode_single_object(catalog, bad, signed=True)
