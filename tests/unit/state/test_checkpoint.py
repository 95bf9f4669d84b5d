"""Checkpoints: wire format, which events a restored state skips, when to write."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import RiverlineError
from streams.messages import InMessage
from streams.state.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    CheckpointSchedule,
    checkpoint_key,
    select_unseen,
)
from streams.trust.records import RecordSigner

PROPERTY = settings(max_examples=100, deadline=None, database=None)


def _cp(**overrides: object) -> Checkpoint:
    values: dict[str, object] = {
        "pipeline": "cards",
        "partition": 3,
        "offset": 1234,
        "spec_hash": "0123456789ab",
        "feature_set": "card_features@abcdef012345",
        "state": bytes(range(256)) * 10,
        "written_ms": 1_790_000_000_000,
    }
    values.update(overrides)
    return Checkpoint(**values)  # type: ignore[arg-type]


def _msg(partition: int, offset: int) -> InMessage:
    return InMessage("cards.events", partition, offset, None, b"", 0)


# --------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------


def test_round_trip_keeps_everything() -> None:
    cp = _cp()
    assert Checkpoint.from_bytes(cp.to_bytes()) == cp
    assert cp.key == checkpoint_key("cards", 3) == "cards/features/3"


def test_bytes_are_deterministic_and_versioned() -> None:
    data = _cp().to_bytes()
    assert data == _cp().to_bytes()
    assert data[:4] == b"RLCP"
    assert data[4] == FORMAT_VERSION


@pytest.mark.parametrize("where", [0, 5, 20, -40, -1])
def test_any_damaged_byte_fails_the_record_mac(where: int) -> None:
    """Damage is caught by the record's MAC, before the bytes are parsed."""
    cp = _cp()
    signer = RecordSigner(b"secret")
    headers = signer.sign("riverline.checkpoints", cp.key.encode(), cp.to_bytes())
    data = bytearray(cp.to_bytes())
    data[where] ^= 0xFF
    assert not signer.verify("riverline.checkpoints", cp.key.encode(), bytes(data), headers)
    assert signer.verify("riverline.checkpoints", cp.key.encode(), cp.to_bytes(), headers)


@pytest.mark.parametrize("length", [0, 1, 8, 40])
def test_truncated_bytes_are_refused(length: int) -> None:
    with pytest.raises(CheckpointError, match="truncated"):
        Checkpoint.from_bytes(_cp().to_bytes()[:length])


@pytest.mark.parametrize("version", [1, FORMAT_VERSION + 1])
def test_another_format_version_is_refused_by_name(version: int) -> None:
    """Version 1 (an unkeyed checksum and a pickled predict state) is never read."""
    header = b'{"partition":0}'
    body = struct.pack(">4sBI", b"RLCP", version, len(header)) + header
    with pytest.raises(CheckpointError, match=f"format version {version} is not"):
        Checkpoint.from_bytes(body + hashlib.sha256(body).digest())


def test_a_bad_header_is_refused() -> None:
    header = b'{"partition":0}'  # the rest is missing
    body = struct.pack(">4sBI", b"RLCP", FORMAT_VERSION, len(header)) + header
    with pytest.raises(CheckpointError, match="header"):
        Checkpoint.from_bytes(body)


def test_checkpoint_error_is_a_riverline_error() -> None:
    with pytest.raises(RiverlineError):
        Checkpoint.from_bytes(b"nope")


# --------------------------------------------------------------------------------------
# Which events a state skips
# --------------------------------------------------------------------------------------


def test_replayed_events_are_skipped_and_new_ones_kept() -> None:
    batch = [_msg(0, o) for o in (7, 8, 9, 10, 11)]
    s = select_unseen(batch, {0: 10})
    assert [m.offset for m in s.events] == [10, 11]
    assert (s.positions, s.replayed, s.ahead, s.unowned) == ({0: 12}, 3, 0, 0)


def test_events_after_a_gap_wait_for_the_missing_one() -> None:
    s = select_unseen([_msg(0, 12), _msg(0, 10), _msg(0, 11), _msg(0, 12)], {0: 10})
    assert [m.offset for m in s.events] == [10, 11, 12]
    assert s.ahead == 1


def test_partitions_not_held_are_skipped() -> None:
    s = select_unseen([_msg(1, 0), _msg(0, 0)], {0: 0})
    assert [(m.partition, m.offset) for m in s.events] == [(0, 0)]
    assert s.unowned == 1
    assert s.positions == {0: 1}


def test_positions_are_not_mutated() -> None:
    positions = {0: 0}
    select_unseen([_msg(0, 0)], positions)
    assert positions == {0: 0}


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[int, list[InMessage]]:
    """At-least-once delivery of one partition: in-order runs, each restarting at or
    before the furthest offset delivered so far (a seek back after a crash or rebalance)."""
    reached, out = 0, []
    for _ in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, reached))
        end = draw(st.integers(start, start + 30))
        out += [_msg(0, o) for o in range(start, end)]
        reached = max(reached, end)
    return reached, out


@PROPERTY
@given(deliveries(), st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_any_redelivery_yields_each_offset_once_in_order(
    delivery: tuple[int, list[InMessage]], sizes: list[int]
) -> None:
    reached, messages = delivery
    positions = {0: 0}
    kept: list[int] = []
    i = 0
    while i < len(messages):  # cut into batches of any size
        size = sizes[len(kept) % len(sizes)]
        s = select_unseen(messages[i : i + size], positions)
        kept += [m.offset for m in s.events]
        positions = s.positions
        i += size
    assert kept == list(range(reached))


# --------------------------------------------------------------------------------------
# When to write
# --------------------------------------------------------------------------------------


def test_schedule_by_events_and_by_time() -> None:
    now = [100.0]
    s = CheckpointSchedule(every=10, interval=5.0, clock=lambda: now[0])
    assert not s.due()
    s.record(9)
    assert not s.due()
    s.record(1)
    assert s.due()
    s.done()
    s.record(1)
    now[0] += 4.9
    assert not s.due()
    now[0] += 0.2
    assert s.due()
    assert s.pending == 1
