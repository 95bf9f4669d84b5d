from __future__ import annotations

import dataclasses

import pytest

from streams.lineage import HEADERS, Lineage


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
