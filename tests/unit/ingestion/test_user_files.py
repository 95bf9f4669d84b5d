"""Reading users' files: JSON lines, CSV and Parquet, with unreadable lines reported."""

from __future__ import annotations

import datetime as dt
import io
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streams.errors import RiverlineError
from streams.ingestion.user_files import (
    Row,
    count_rows,
    csv_coercer,
    detect_format,
    read_rows,
    sniff_format,
)


def test_json_lines_yield_objects_and_say_which_lines_are_not(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text('{"a": 1}\n\nnot json\n[1, 2]\n{"a": 2.5, "b": null}\n')
    rows = list(read_rows(str(path)))
    assert [r.number for r in rows] == [1, 3, 4, 5]
    assert [r.values for r in rows] == [{"a": 1}, None, None, {"a": 2.5, "b": None}]
    assert rows[1].error.startswith("not JSON")
    assert rows[2].error == "not a JSON object but list"
    assert count_rows(str(path)) == 4


def test_csv_rows_are_text_and_a_short_row_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("id,amount,ok\r\n1,2.5,true\r\n2,3\r\n\r\n3,,no\r\n")
    rows = list(read_rows(str(path)))
    assert rows == [
        Row(2, {"id": "1", "amount": "2.5", "ok": "true"}),
        Row(3, None, "2 cells where the header has 3"),
        Row(5, {"id": "3", "amount": "", "ok": "no"}),
    ]
    assert count_rows(str(path)) == 3


def test_parquet_values_become_what_json_holds(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    table = pa.table({"t": [when, when], "x": [1.5, None], "day": [dt.date(2024, 5, 1)] * 2})
    pq.write_table(table, path)
    rows = list(read_rows(str(path)))
    assert [r.values for r in rows] == [
        {"t": "2024-05-01T12:00:00+00:00", "x": 1.5, "day": "2024-05-01"},
        {"t": "2024-05-01T12:00:00+00:00", "x": None, "day": "2024-05-01"},
    ]
    assert count_rows(str(path)) == 2


@pytest.mark.parametrize(
    ("name", "head", "expected"),
    [
        ("a.ndjson", b"", "jsonl"),
        ("a.CSV", b"", "csv"),
        ("a.pq", b"", "parquet"),
        ("-", b'  {"a": 1}\n', "jsonl"),
        ("-", b"a,b\n1,2\n", "csv"),
        ("data", b"PAR1\x00", "parquet"),
    ],
)
def test_the_format_comes_from_the_suffix_else_the_first_bytes(
    name: str, head: bytes, expected: str
) -> None:
    assert detect_format(name, head) == expected


def test_an_unknown_format_says_how_to_name_it() -> None:
    with pytest.raises(RiverlineError, match="--input-format"):
        detect_format("data.txt", b"hello")


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RiverlineError, match=r"cannot read .*nope\.csv"):
        list(read_rows(str(tmp_path / "nope.csv")))


def test_csv_cells_are_typed_by_the_schema_and_bad_ones_left_for_ingest() -> None:
    coerce = csv_coercer(
        {
            "fields": [
                {"name": "n", "type": "long"},
                {"name": "x", "type": ["null", "double"]},
                {"name": "ok", "type": "boolean"},
                {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "s", "type": "string"},
            ]
        }
    )
    assert coerce({"n": "7", "x": "", "ok": "No", "t": "1714564800000", "s": "12"}) == {
        "n": 7,
        "x": None,
        "ok": False,
        "t": 1714564800000,
        "s": "12",
    }
    assert coerce({"n": "seven", "x": "1e3", "ok": "maybe", "t": "2024-05-01T12:00:00Z"}) == {
        "n": "seven",
        "x": 1000.0,
        "ok": "maybe",
        "t": "2024-05-01T12:00:00Z",
    }


def test_stdin_is_sniffed_without_losing_its_first_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"id,x\n1,2.5\n2,3.5\n"
    stdin = io.TextIOWrapper(io.BufferedReader(io.BytesIO(data)))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert sniff_format("-") == "csv"
    assert [r.values for r in read_rows("-")] == [{"id": "1", "x": "2.5"}, {"id": "2", "x": "3.5"}]
    assert count_rows("-") is None
