from __future__ import annotations

import dataclasses

import pytest

from streams.messages import InMessage
from streams.pipeline.lineage import HEADERS, Lineage, lineage_headers, untrusted_headers
from streams.pipeline.stage import DeadLetter


def test_headers_round_trip() -> None:
    lineage = (
        Lineage(
            event_id="e1",
            schema="phishing/v1/abcd",
            source="phishing.raw:0:42",
            pipeline="phishing@123",
            event_ts=1,
            ingest_ts=2,
            raw_ts=3,
        )
        .with_features("fs@9")
        .with_model("m@1")
    )
    headers = lineage.to_headers()
    assert {k for k, _ in headers} >= set(HEADERS)
    assert Lineage.from_headers(headers) == lineage


def test_missing_headers_read_as_empty() -> None:
    lineage = Lineage.from_headers([("rl.event_id", b"x"), ("rl.event_ts", b"oops")])
    assert lineage.event_id == "x"
    assert lineage.event_ts == 0
    assert lineage.model == ""


def test_with_features_and_model_are_new_frozen_lineages_that_leave_the_original() -> None:
    base = Lineage("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3)
    featured = base.with_features("fs@9")
    both = featured.with_model("m@1")
    assert both == Lineage("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3, "fs@9", "m@1")
    assert hash(both) == hash(Lineage("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3, "fs@9", "m@1"))
    assert (base.features, base.model, featured.model) == ("", "", "")
    assert type(both) is Lineage
    with pytest.raises(dataclasses.FrozenInstanceError):
        both.model = "other@2"  # type: ignore[misc]


def test_incoming_riverline_headers_are_renamed_untrusted_in_place() -> None:
    headers = [
        ("trace", b"t1"),
        ("rl.event_id", b"forged"),
        ("rl.error.class", b"empty"),
        ("RL.Model", None),
        ("rlx", b"kept"),
        ("untrusted.rl.schema", b"kept too"),
        ("rl.event_id", b"twice"),
    ]

    renamed = untrusted_headers(headers)

    assert renamed == (
        ("trace", b"t1"),
        ("untrusted.rl.event_id", b"forged"),
        ("untrusted.rl.error.class", b"empty"),
        ("untrusted.RL.Model", None),
        ("rlx", b"kept"),
        ("untrusted.rl.schema", b"kept too"),
        ("untrusted.rl.event_id", b"twice"),
    )
    assert lineage_headers(renamed) == {}
    assert Lineage.from_headers(renamed) == Lineage.from_headers([])
    assert untrusted_headers(()) == ()


def test_lineage_headers_is_the_one_reading_rule() -> None:
    headers = [
        ("rl.event_id", b"first"),
        ("other", b"x"),
        ("rl.schema", b"s\xff"),
        ("rl.model", None),
        ("rl.event_id", b"last"),
    ]

    assert lineage_headers(headers) == {
        "rl.event_id": "last",  # the last one wins
        "rl.schema": "s\ufffd",  # invalid UTF-8 becomes U+FFFD
        "rl.model": "",  # a null value reads as empty
    }
    assert lineage_headers(None) == {}
    lineage = Lineage.from_headers(headers)
    assert (lineage.event_id, lineage.schema, lineage.model) == ("last", "s\ufffd", "")


def test_a_dead_letter_reads_back_riverlines_own_error_headers() -> None:
    """Riverline appends its headers after the original's: the last one wins is its own."""
    original = InMessage("p.raw", 0, 7, None, b"{}", 0, (("rl.error.class", b"forged"),))

    out = DeadLetter("ingest", "not_json", "bad", "p/v1").to_message(original, "dlq")

    assert lineage_headers(out.headers)["rl.error.class"] == "not_json"


def test_headers_of_derived_lineages_name_their_own_feature_set_and_model() -> None:
    base = Lineage("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3)
    first = base.to_headers()  # encodes the shared headers once, for the copies too
    featured = base.with_features("fs@9")
    both = featured.with_model("m@1")
    assert (dict(first)["rl.features"], dict(first)["rl.model"]) == (b"", b"")
    assert dict(featured.to_headers())["rl.features"] == b"fs@9"
    assert Lineage.from_headers(both.to_headers()) == both
    assert both.to_headers() == Lineage(*dataclasses.astuple(both)).to_headers()
    assert base == Lineage("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3)


def test_of_makes_what_the_constructor_makes() -> None:
    made = Lineage.of("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3)
    assert made == Lineage("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3)
    assert hash(made) == hash(Lineage("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3))
    assert made.to_headers() == Lineage("e1", "s/v1/ab", "t.raw:0:7", "p@1", 1, 2, 3).to_headers()
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.event_id = "e2"  # type: ignore[misc]
