"""Hostile input: whatever the bytes, decoding ends in a record or a DecodeError, quickly.

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

from streams.catalog import SchemaCatalog, SchemaVersion
from streams.codec import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    DecodedEvent,
    EventDecoder,
    decode_single_object,
    encode_confluent,
    encode_single_object,
)
from streams.errors import DecodeError
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


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> SchemaCatalog:
    root = tmp_path_factory.mktemp("schemas")
    real = REPO_ROOT / "schemas"
    (root / "phishing").mkdir()
    (root / "phishing" / "v1.avsc").write_text((real / "phishing" / "v1.avsc").read_text())
    (root / "hostile").mkdir()
    (root / "hostile" / "v1.avsc").write_text(json.dumps(HOSTILE))
    (root / "confluent-ids.toml").write_text(
        '[[schema]]\nid = 1\nsubject = "phishing"\nversion = 1\n'
        '[[schema]]\nid = 2\nsubject = "hostile"\nversion = 1\n'
    )
    return SchemaCatalog.load(root)


@pytest.fixture(scope="module")
def phishing(catalog: SchemaCatalog) -> EventDecoder:
    return EventDecoder(catalog, "phishing")


@pytest.fixture(scope="module")
def hostile(catalog: SchemaCatalog) -> EventDecoder:
    return EventDecoder(catalog, "hostile")


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
