"""What ``produce --from`` makes of a file's rows before it sends them."""

from __future__ import annotations

import tomllib
from typing import Any

from streams.ingestion.file_producer import KEPT_PROBLEMS, FileReport, file_events
from streams.ingestion.user_files import Row
from streams.spec import parse_spec

SPEC = parse_spec(
    tomllib.loads(
        """
[pipeline]
name = "shop"
subject = "shop"
key_field = "customer"
[model]
name = "m"
task = "binary"
target = "is_returned"
inputs = ["unit_price"]
[[model.steps]]
estimator = "linear_model.LogisticRegression"
"""
    )
)
SCHEMA: dict[str, Any] = {
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "customer", "type": "string"},
        {"name": "unit_price", "type": "double"},
        {"name": "is_returned", "type": ["null", "boolean"], "default": None},
    ]
}


def test_csv_rows_are_typed_renamed_and_given_an_id_and_a_time() -> None:
    report = FileReport("run1")
    rows = [
        Row(2, {"customer": "c1", "unit price": "2.5", "is_returned": ""}),
        Row(3, {"customer": "c2", "unit price": "4", "is_returned": "true", "event_id": "e9"}),
    ]
    events = list(file_events(rows, SPEC, SCHEMA, report, csv=True))
    assert [e["event_id"] for e in events] == ["run1-0000000", "e9"]
    assert all(isinstance(e["event_time"], int) and e["event_time"] > 0 for e in events)
    assert [(e["unit_price"], e["is_returned"]) for e in events] == [(2.5, None), (4.0, True)]
    assert "unit price" not in events[0]


def test_json_rows_keep_their_values_and_times() -> None:
    report = FileReport("r")
    rows = [Row(1, {"customer": "c1", "unit_price": "oops", "event_time": "2024-05-01T00:00:00Z"})]
    [event] = file_events(rows, SPEC, SCHEMA, report)
    # Left as written: ingest dead-letters the wrong type and says which field.
    assert event["unit_price"] == "oops"
    assert event["event_time"] == "2024-05-01T00:00:00Z"


def test_unreadable_lines_are_counted_and_the_first_few_kept() -> None:
    report = FileReport("r")
    rows = [Row(n, None, f"bad {n}") for n in range(1, 9)]
    rows.append(Row(9, {"customer": "c"}))
    events = list(file_events(rows, SPEC, SCHEMA, report))
    assert len(events) == 1
    assert report.skipped == 8
    assert report.problems == [f"line {n}: bad {n}" for n in range(1, KEPT_PROBLEMS + 1)]
