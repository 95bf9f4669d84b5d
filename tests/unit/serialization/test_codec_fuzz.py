"""Hostile input: whatever the bytes, decoding ends in a record or a DecodeError, quickly.

A record it ends in re-encodes as Avro and reads back equal (the next stage's view of
it); a DecodeError names a reason from REASONS and a message a dead letter can carry.

Time limits here are generous ceilings against runaway work (a billion-iteration loop, a
quadratic path), not benchmarks; ``riverline bench`` measures throughput.
"""

from __future__ import annotations

import json
import math
import struct
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import DecodeError
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.codec import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    REASONS,
    SINGLE_OBJECT_MAGIC,
    DecodedEvent,
    EventDecoder,
    decode_single_object,
    encode_confluent,
    encode_single_object,
)
from streams.settings import REPO_ROOT

# A hostile message must not cost unbounded time (a billion claimed items would take
# minutes). Typical worst cases take 0.1-50 ms; the ceiling leaves room for a loaded
# 2-core CI machine with tracemalloc on. Speed itself is measured by `riverline bench`.
CEILING_S = 5.0
MEMORY_BOUND = 64 * 1024 * 1024
FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

HOSTILE = {
    "type": "record",
    "name": "Hostile",
    "namespace": "test",
    "fields": [
        {"name": "nulls", "type": {"type": "array", "items": "null"}},
        {
            "name": "recs",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [{"name": "s", "type": "string"}, {"name": "n", "type": "null"}],
                },
            },
        },
        {"name": "m", "type": {"type": "map", "values": "long"}},
        {"name": "ds", "type": {"type": "array", "items": "double"}},
        {"name": "bs", "type": {"type": "array", "items": "boolean"}},
        {
            "name": "tree",
            "type": {
                "type": "record",
                "name": "Node",
                "fields": [
                    {"name": "v", "type": "long"},
                    {"name": "next", "type": ["null", "Node"]},
                ],
            },
        },
        {"name": "fx", "type": {"type": "fixed", "name": "Four", "size": 4}},
    ],
}


#: One field of each kind JSON coercion handles, with the pipeline's id, key and time.
MIXED = {
    "type": "record",
    "name": "Mixed",
    "namespace": "test",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "key", "type": ["null", "string"], "default": None},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}, "default": 0},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}, "default": 0},
        {"name": "u", "type": ["null", "string", "long", "double", "boolean"], "default": None},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}, "default": "A"},
        {"name": "raw", "type": "bytes", "default": ""},
        {"name": "fx", "type": {"type": "fixed", "name": "F2", "size": 2}, "default": "ab"},
        {"name": "f", "type": "float", "default": 0.0},
        {"name": "i", "type": "int", "default": 0},
        {
            "name": "tags",
            "type": {"type": "map", "values": {"type": "array", "items": "string"}},
            "default": {},
        },
        {
            "name": "inner",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Inner",
                    "fields": [
                        {"name": "s", "type": "string"},
                        {"name": "x", "type": "double"},
                        {"name": "next", "type": ["null", "Inner"], "default": None},
                    ],
                },
            ],
            "default": None,
        },
    ],
}
#: The ingest time the fuzzed events are checked against.
NOW = 1_767_225_600_000


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> SchemaCatalog:
    root = tmp_path_factory.mktemp("schemas")
    real = REPO_ROOT / "schemas"
    (root / "phishing").mkdir()
    (root / "phishing" / "v1.avsc").write_text((real / "phishing" / "v1.avsc").read_text())
    (root / "hostile").mkdir()
    (root / "hostile" / "v1.avsc").write_text(json.dumps(HOSTILE))
    (root / "mixed").mkdir()
    (root / "mixed" / "v1.avsc").write_text(json.dumps(MIXED))
    (root / "confluent-ids.toml").write_text(
        '[[schema]]\nid = 1\nsubject = "phishing"\nversion = 1\n'
        '[[schema]]\nid = 2\nsubject = "hostile"\nversion = 1\n'
        '[[schema]]\nid = 3\nsubject = "mixed"\nversion = 1\n'
    )
    return SchemaCatalog.load(root)


@pytest.fixture(scope="module")
def phishing(catalog: SchemaCatalog) -> EventDecoder:
    return EventDecoder(catalog, "phishing")


@pytest.fixture(scope="module")
def hostile(catalog: SchemaCatalog) -> EventDecoder:
    return EventDecoder(catalog, "hostile")


@pytest.fixture(scope="module")
def strict(catalog: SchemaCatalog) -> EventDecoder:
    """Phishing as a pipeline decodes it: id and time checked, small limits to hit."""
    return EventDecoder(
        catalog,
        "phishing",
        id_field="event_id",
        time_field="event_time",
        max_id_bytes=64,
        max_event_time_ahead=3600.0,
    )


@pytest.fixture(scope="module")
def mixed(catalog: SchemaCatalog) -> EventDecoder:
    return EventDecoder(
        catalog, "mixed", id_field="id", key_field="key", time_field="ts", max_items=64
    )


def zz(n: int) -> bytes:
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def outcome(decode: Callable[[], DecodedEvent | tuple[SchemaVersion, dict[str, Any]]]) -> str:
    """Run one decode under the time ceiling; 'ok' or the DecodeError reason."""
    start = time.perf_counter()
    try:
        decode()
        result = "ok"
    except DecodeError as exc:
        result = exc.reason
    elapsed = time.perf_counter() - start
    assert elapsed < CEILING_S, f"decode took {elapsed:.2f}s ({result})"
    return result


def hostile_body(**parts: bytes) -> bytes:
    fields = {
        "nulls": zz(0),
        "recs": zz(0),
        "m": zz(0),
        "ds": zz(0),
        "bs": zz(0),
        "tree": zz(1) + zz(0),  # v=1, next=null
        "fx": b"abcd",
    }
    fields.update(parts)
    return b"".join(fields.values())


# --- strategies ----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
longs = st.integers(-(2**63), 2**63 - 1)
phishing_records = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=30),
        "event_time": longs,
        "empty_server_form_handler": finite,
        "popup_window": finite,
        "https": finite,
        "request_from_other_domain": finite,
        "anchor_from_other_domain": finite,
        "is_popular": finite,
        "long_url": finite,
        "age_of_domain": st.integers(-(2**31), 2**31 - 1),
        "ip_in_url": st.integers(-(2**31), 2**31 - 1),
        "is_phishing": st.none() | st.booleans(),
    }
)
hostile_records = st.fixed_dictionaries(
    {
        "nulls": st.lists(st.none(), max_size=5),
        "recs": st.lists(st.fixed_dictionaries({"s": st.text(max_size=5), "n": st.none()})),
        "m": st.dictionaries(st.text(max_size=4), longs, max_size=4),
        "ds": st.lists(finite, max_size=5),
        "bs": st.lists(st.booleans(), max_size=5),
        "tree": st.recursive(
            st.builds(lambda v: {"v": v, "next": None}, longs),
            lambda inner: st.builds(lambda v, n: {"v": v, "next": n}, longs, inner),
            max_leaves=5,
        ),
        "fx": st.binary(min_size=4, max_size=4),
    }
)


@st.composite
def mutated(draw: st.DrawFn, data: bytes, keep: int) -> bytes:
    """``data`` with some bytes after ``keep`` flipped, inserted, deleted or cut off."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if len(out) <= keep:
            out += draw(st.binary(min_size=1, max_size=4))
            continue
        at = draw(st.integers(keep, len(out) - 1))
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        if action == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            out[at] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x3F]))
        elif action == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=10))
        elif action == "delete":
            del out[at : at + draw(st.integers(1, 4))]
        else:
            del out[at:]
    return bytes(out)


# --- properties ----------------------------------------------------------------------


@FUZZ
@given(value=st.binary(max_size=200), key=st.none() | st.binary(max_size=8))
def test_arbitrary_bytes(phishing: EventDecoder, value: bytes, key: bytes | None) -> None:
    outcome(lambda: phishing.decode(key, value))


@FUZZ
@given(body=st.binary(max_size=200), framing=st.sampled_from(["single", "confluent"]))
def test_arbitrary_bodies_behind_valid_headers(
    catalog: SchemaCatalog,
    phishing: EventDecoder,
    hostile: EventDecoder,
    body: bytes,
    framing: str,
) -> None:
    for decoder, schema_id in ((phishing, 1), (hostile, 2)):
        sv = decoder.latest
        if framing == "single":
            header = b"\xc3\x01" + sv.fingerprint
        else:
            header = b"\x00" + schema_id.to_bytes(4, "big")
        result = outcome(lambda d=decoder, h=header: d.decode(None, h + body))
        assert result not in ("unknown_fingerprint", "unknown_confluent_id")
        if framing == "single":
            outcome(lambda h=header: decode_single_object(catalog, h + body))


@FUZZ
@given(record=phishing_records)
def test_valid_phishing_records_round_trip(phishing: EventDecoder, record: dict[str, Any]) -> None:
    sv = phishing.latest

    assert phishing.decode(None, encode_single_object(sv, record)).record == record
    assert phishing.decode(None, encode_confluent(1, sv, record)).record == record


@FUZZ
@given(record=hostile_records)
def test_valid_nested_records_round_trip(hostile: EventDecoder, record: dict[str, Any]) -> None:
    assert hostile.decode(None, encode_single_object(hostile.latest, record)).record == record


@FUZZ
@given(data=st.data(), record=phishing_records)
def test_mutated_phishing_messages(
    phishing: EventDecoder, data: st.DataObject, record: dict[str, Any]
) -> None:
    valid = encode_single_object(phishing.latest, record)
    value = data.draw(mutated(valid, keep=10))

    outcome(lambda: phishing.decode(None, value))


@FUZZ
@given(data=st.data(), record=hostile_records)
def test_mutated_nested_messages(
    catalog: SchemaCatalog, hostile: EventDecoder, data: st.DataObject, record: dict[str, Any]
) -> None:
    valid = encode_single_object(hostile.latest, record)
    value = data.draw(mutated(valid, keep=10))

    outcome(lambda: hostile.decode(None, value))
    outcome(lambda: decode_single_object(catalog, value))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


@FUZZ
@given(
    obj=st.dictionaries(
        st.sampled_from(["event_id", "event_time", "https", "age_of_domain", "is_phishing", "x"]),
        json_values,
    )
)
def test_json_objects_of_any_shape(phishing: EventDecoder, obj: dict[str, Any]) -> None:
    outcome(lambda: phishing.decode(None, json.dumps(obj).encode()))


# --- resource bounds of specific hostile messages --------------------------------------


def bounded(decode: Callable[[], object]) -> tuple[str, int]:
    """(outcome, peak traced bytes) of one decode, under the time ceiling."""
    tracemalloc.start()
    try:
        result = outcome(decode)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def test_billion_nulls_are_refused_at_once(hostile: EventDecoder) -> None:
    value = b"\xc3\x01" + hostile.latest.fingerprint + hostile_body(nulls=zz(10**9) + zz(0))

    result, peak = bounded(lambda: hostile.decode(None, value))

    assert result == "oversized_collection"
    assert peak < 1024 * 1024


def test_a_megabyte_of_tiny_records_stays_within_memory(hostile: EventDecoder) -> None:
    # 1 MiB claiming ~500k records of an empty string each.
    count = 500_000
    body = hostile_body(recs=zz(count) + zz(0) * count + zz(0))
    value = b"\xc3\x01" + hostile.latest.fingerprint + body

    result, peak = bounded(lambda: hostile.decode(None, value))

    assert result == "oversized_collection"
    assert peak < MEMORY_BOUND


def test_the_largest_accepted_collections_stay_within_memory(hostile: EventDecoder) -> None:
    count = DEFAULT_MAX_ITEMS // 3  # a record item counts itself and its two fields
    body = hostile_body(recs=zz(count) + zz(0) * count + zz(0))
    value = b"\xc3\x01" + hostile.latest.fingerprint + body

    result, peak = bounded(lambda: hostile.decode(None, value))

    assert result == "ok"
    assert peak < MEMORY_BOUND


def test_a_megabyte_of_map_entries_stays_within_memory(hostile: EventDecoder) -> None:
    count = 120_000  # 8 bytes each: just under 1 MiB
    entries = b"".join(zz(4) + i.to_bytes(4, "little") + zz(i) for i in range(count))
    value = b"\xc3\x01" + hostile.latest.fingerprint + hostile_body(m=zz(count) + entries + zz(0))

    result, peak = bounded(lambda: hostile.decode(None, value))

    assert result == "oversized_collection"
    assert peak < MEMORY_BOUND


def test_a_megabyte_of_doubles_is_checked_and_accepted(hostile: EventDecoder) -> None:
    count = (DEFAULT_MAX_BYTES - 100) // 8
    doubles = struct.pack(f"<{count}d", *([0.5] * count))
    header = b"\xc3\x01" + hostile.latest.fingerprint
    good = header + hostile_body(ds=zz(count) + doubles + zz(0))
    nan = header + hostile_body(ds=zz(count) + doubles[:-8] + struct.pack("<d", math.nan) + zz(0))

    ok, peak = bounded(lambda: hostile.decode(None, good))
    bad = outcome(lambda: hostile.decode(None, nan))

    assert (ok, bad) == ("ok", "non_finite")
    assert peak < MEMORY_BOUND


def test_bad_boolean_inside_an_array(hostile: EventDecoder) -> None:
    body = hostile_body(bs=zz(3) + b"\x01\x00\x02" + zz(0))
    value = b"\xc3\x01" + hostile.latest.fingerprint + body

    assert outcome(lambda: hostile.decode(None, value)) == "invalid_avro"


def test_deep_recursion_is_refused(hostile: EventDecoder) -> None:
    depth = 100_000
    tree = (zz(0) + zz(1)) * depth + zz(0) + zz(0)
    value = b"\xc3\x01" + hostile.latest.fingerprint + hostile_body(tree=tree)

    assert outcome(lambda: hostile.decode(None, value)) == "invalid_avro"


def test_moderate_recursion_is_fine(hostile: EventDecoder) -> None:
    tree = (zz(7) + zz(1)) * 20 + zz(7) + zz(0)
    value = b"\xc3\x01" + hostile.latest.fingerprint + hostile_body(tree=tree)

    event = hostile.decode(None, value)

    depth, node = 0, event.record["tree"]
    while node["next"] is not None:
        depth, node = depth + 1, node["next"]
    assert depth == 20


def test_worst_case_json_of_max_size_is_bounded(phishing: EventDecoder) -> None:
    value = b'{"x": [' + b"{}," * 349_000 + b"{}]}"

    result, peak = bounded(lambda: phishing.decode(None, value))

    assert result == "missing_field"
    assert peak < MEMORY_BOUND


# --- hostile values: a record that comes out re-encodes and reads back equal -----------


def decoded_or_refused(
    catalog: SchemaCatalog, decoder: EventDecoder, key: bytes | None, value: bytes
) -> str:
    """'ok' after checking the round trip, or the DecodeError's reason. Nothing else."""
    start = time.perf_counter()
    event: DecodedEvent | None = None
    error: DecodeError | None = None
    try:
        event = decoder.decode(key, value, now_ms=NOW)
    except DecodeError as exc:
        error = exc
    elapsed = time.perf_counter() - start
    assert elapsed < CEILING_S, f"decode took {elapsed:.2f}s"
    if error is not None:
        assert error.reason in REASONS, error.reason
        str(error).encode("utf-8")  # a dead letter's rl.error.message header holds it
        return error.reason
    assert event is not None
    data = encode_single_object(decoder.latest, event.record)
    if len(data) > decoder.max_bytes:
        return "ok"  # ingestion refuses the re-encoded event as too_large
    again = decoder.decode(None, data, now_ms=NOW)
    assert again.record == event.record
    assert again.event_ms == event.event_ms
    assert decode_single_object(catalog, data)[1] == event.record  # as later stages read it
    return "ok"


SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")
texts = st.text(st.characters() | st.sampled_from(SURROGATES), max_size=12)
big_texts = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["x", "é", "\U0001f600", "\ud800", "A"]),
    st.integers(0, 200_000),
)
extreme_numbers = st.sampled_from(
    [2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 2**64, 10**400, -0.0, 0.0, 1e308, 5e-324, 3.5e38]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | extreme_numbers
    | texts
    | st.sampled_from(
        [
            "A",
            "B",
            "ab",
            "",
            "2026-01-01T00:00:00Z",
            "2026-01-01",
            "1969-12-31T23:59:59Z",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-23:59",
        ]
    )
)
hostile_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
#: JSON text no Python value dumps to: deep nesting, huge numbers, escapes as sent.
raw_json = st.sampled_from(
    [
        "1e309",
        "-1e309",
        "1E400",
        "-0.0",
        "-0",
        "NaN",
        "Infinity",
        "-Infinity",
        "7" * 5000,
        "1" + "0" * 4299,
        '"\\ud800"',
        '"a\\udfff\\ud800"',
        '"\\ud83d\\ude00"',
        '{"\\ud800": 1}',
        '{"string": "\\udc00"}',
        "[" * 50_000 + "]" * 50_000,
        '{"a": ' * 3000 + "1" + "}" * 3000,
        "[" * 300 + "]" * 300,
        '{"s": "x", "x": 1.0, "next": ' * 70 + "null" + "}" * 70,
    ]
)


@st.composite
def documents(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]], names: list[str]) -> bytes:
    """A valid ``base`` object with a few fields replaced, added or dropped, as JSON text."""
    fields = {name: json.dumps(v) for name, v in draw(base).items()}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(names) | texts)
        fields[name] = draw(raw_json | hostile_values.map(json.dumps) | big_texts.map(json.dumps))
    if fields and draw(st.integers(0, 9)) == 0:
        del fields[draw(st.sampled_from(sorted(fields)))]
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}").encode()


event_times = st.integers(0, NOW + 3_600_000) | st.sampled_from([-1, NOW + 3_600_001, 2**63 - 1])
strict_bases = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=70),
        "event_time": event_times,
        "empty_server_form_handler": finite,
        "popup_window": finite,
        "https": finite,
        "request_from_other_domain": finite,
        "anchor_from_other_domain": finite,
        "is_popular": finite,
        "long_url": finite,
        "age_of_domain": st.integers(-(2**31), 2**31 - 1),
        "ip_in_url": st.integers(-(2**31), 2**31 - 1),
    }
)
mixed_bases = st.fixed_dictionaries(
    {"id": st.text(max_size=20), "ts": event_times},
    optional={
        "key": st.none() | st.text(max_size=20),
        "u": st.none() | st.text(max_size=5) | longs | finite | st.booleans(),
        "e": st.sampled_from(["A", "B"]),
        "f": st.floats(-1e6, 1e6),
        "i": st.integers(-(2**31), 2**31 - 1),
        "tags": st.dictionaries(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3)),
        "inner": st.none() | st.fixed_dictionaries({"s": st.text(max_size=3), "x": finite}),
    },
)
STRICT_NAMES = [
    f["name"]
    for f in json.loads((REPO_ROOT / "schemas" / "phishing" / "v1.avsc").read_text())["fields"]
]
MIXED_NAMES = [f["name"] for f in MIXED["fields"]]


@FUZZ
@given(value=documents(strict_bases, STRICT_NAMES), key=st.none() | st.binary(max_size=8))
def test_hostile_json_events_round_trip_or_are_refused(
    catalog: SchemaCatalog, strict: EventDecoder, value: bytes, key: bytes | None
) -> None:
    decoded_or_refused(catalog, strict, key, value)


@FUZZ
@given(value=documents(mixed_bases, MIXED_NAMES))
def test_hostile_json_of_every_kind_round_trips_or_is_refused(
    catalog: SchemaCatalog, mixed: EventDecoder, value: bytes
) -> None:
    decoded_or_refused(catalog, mixed, None, value)


HOSTILE_NAMES = [f["name"] for f in HOSTILE["fields"]]
#: Valid hostile records as JSON holds them (fixed as code points 0-255).
hostile_json_bases = hostile_records.map(lambda r: r | {"fx": r["fx"].decode("latin-1")})


@FUZZ
@given(
    mixed_obj=st.builds(
        dict.__or__, mixed_bases, st.dictionaries(st.sampled_from(MIXED_NAMES), hostile_values)
    ),
    hostile_obj=st.builds(
        dict.__or__,
        hostile_json_bases,
        st.dictionaries(st.sampled_from(HOSTILE_NAMES) | texts, hostile_values, max_size=2),
    ),
)
def test_valid_objects_with_any_values_round_trip_or_are_refused(
    catalog: SchemaCatalog,
    mixed: EventDecoder,
    hostile: EventDecoder,
    mixed_obj: dict[str, Any],
    hostile_obj: dict[str, Any],
) -> None:
    decoded_or_refused(catalog, mixed, None, json.dumps(mixed_obj).encode())
    decoded_or_refused(catalog, hostile, None, json.dumps(hostile_obj).encode())


_valid_records: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "phishing": phishing_records.map(lambda r: r | {"event_time": abs(r["event_time"]) % NOW}),
    "hostile": hostile_records,
    "mixed": st.fixed_dictionaries(
        {
            "id": st.text(max_size=10),
            "key": st.none() | st.text(max_size=10),
            "ts": st.integers(0, NOW),
            "us": longs,
            "day": st.integers(-(2**31), 2**31 - 1),
            "u": st.none() | st.text(max_size=5) | longs | finite | st.booleans(),
            "e": st.sampled_from(["A", "B"]),
            "raw": st.binary(max_size=5),
            "fx": st.binary(min_size=2, max_size=2),
            "f": st.just(0.5),
            "i": st.integers(-(2**31), 2**31 - 1),
            "tags": st.dictionaries(st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3)),
            "inner": st.none()
            | st.fixed_dictionaries({"s": st.text(max_size=3), "x": finite, "next": st.none()}),
        }
    ),
}


@FUZZ
@given(
    data=st.data(),
    body=st.binary(max_size=120),
    framing=st.sampled_from(["single", "confluent", "mutated"]),
)
def test_avro_bytes_round_trip_or_are_refused(
    catalog: SchemaCatalog,
    strict: EventDecoder,
    mixed: EventDecoder,
    hostile: EventDecoder,
    data: st.DataObject,
    body: bytes,
    framing: str,
) -> None:
    for decoder, schema_id in ((strict, 1), (hostile, 2), (mixed, 3)):
        sv = decoder.latest
        if framing == "confluent":
            value = b"\x00" + schema_id.to_bytes(4, "big") + body
        elif framing == "single":
            value = SINGLE_OBJECT_MAGIC + sv.fingerprint + body
        else:  # a valid message with a few bytes changed: far more of these decode
            record = data.draw(_valid_records[sv.subject])
            value = data.draw(mutated(encode_single_object(sv, record), keep=10))
        decoded_or_refused(catalog, decoder, None, value)
