"""Users' own files as rows of events: JSON lines, CSV or Parquet, from a path or stdin.

:func:`read_rows` yields one :class:`Row` per record with its line (or row) number; a
line that cannot be parsed (not JSON, not an object, a CSV row with the wrong number of
cells) is a row with ``error`` set and no ``values``, so the caller counts and reports it
and goes on. Values are what the format holds: JSON values, CSV cells as text (see
:func:`csv_coercer`, which types them by the schema), Parquet values made JSON-friendly
(timestamps and dates as ISO-8601 text, decimals as floats).
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from streams.errors import RiverlineError

__all__ = [
    "FORMATS",
    "Row",
    "count_rows",
    "csv_coercer",
    "detect_format",
    "read_rows",
    "sniff_format",
]

#: The file formats users may give, by name.
FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_PARQUET_MAGIC = b"PAR1"
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


@dataclass(frozen=True, slots=True)
class Row:
    """One record of a file: its number (line for text, row for Parquet), values or error."""

    number: int
    values: dict[str, Any] | None
    error: str = ""


def detect_format(source: str, head: bytes = b"") -> str:
    """The format of ``source`` (a path, or ``-`` for stdin) from its suffix, else its head.

    Raises
    ------
    RiverlineError
        If neither the suffix nor the first bytes say which format it is.
    """
    found = _SUFFIXES.get(Path(source).suffix.lower()) if source != "-" else None
    if found:
        return found
    text = head.lstrip()
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if text.startswith(b"{"):
        return "jsonl"
    if text and b"," in text.split(b"\n", 1)[0]:
        return "csv"
    raise RiverlineError(
        f"cannot tell the format of {source}: name it .jsonl, .csv or .parquet, or pass "
        f"--input-format ({', '.join(FORMATS)})."
    )


def sniff_format(source: str) -> str:
    """The format of ``source`` (a path or ``-``), from its suffix or first bytes; stdin
    is peeked at, not consumed."""
    if source == "-":
        stdin = sys.stdin.buffer
        head = stdin.peek(4096)[:4096] if isinstance(stdin, io.BufferedReader) else b""
        return detect_format(source, head)
    with _open_binary(source) as stream:
        return detect_format(source, stream.read(4096))


def _open_binary(source: str) -> IO[bytes]:
    if source == "-":
        return sys.stdin.buffer
    try:
        return open(source, "rb")
    except OSError as exc:
        raise RiverlineError(f"cannot read {source}: {exc.strerror}; check the path.") from exc


def read_rows(source: str, fmt: str | None = None) -> Iterator[Row]:
    """Every record of ``source`` (a path or ``-`` for stdin), in order.

    ``fmt`` is one of :data:`FORMATS`; None: :func:`detect_format`.
    """
    fmt = fmt or sniff_format(source)
    stream = _open_binary(source)
    try:
        if fmt not in FORMATS:
            raise RiverlineError(f"unknown input format {fmt!r}; use one of {FORMATS}.")
        if fmt == "parquet":
            yield from _parquet_rows(io.BytesIO(stream.read()) if source == "-" else stream)
            return
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
        yield from _jsonl_rows(text) if fmt == "jsonl" else _csv_rows(text)
    finally:
        if source != "-":
            stream.close()


def count_rows(source: str, fmt: str | None = None) -> int | None:
    """How many records a file holds (None for stdin): Parquet from its footer, text by
    counting non-empty lines (a CSV without its header line)."""
    if source == "-":
        return None
    fmt = fmt or sniff_format(source)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(source).metadata.num_rows)
    with open(source, "rb") as f:
        lines = sum(1 for line in f if line.strip())
    return max(lines - 1, 0) if fmt == "csv" else lines


def _jsonl_rows(text: IO[str]) -> Iterator[Row]:
    for number, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            yield Row(number, None, f"not JSON: {exc}")
            continue
        if not isinstance(value, dict):
            yield Row(number, None, f"not a JSON object but {type(value).__name__}")
            continue
        yield Row(number, value)


def _csv_rows(text: IO[str]) -> Iterator[Row]:
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    names = [h.strip() for h in header]
    for cells in reader:
        number = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(names):
            yield Row(number, None, f"{len(cells)} cells where the header has {len(names)}")
            continue
        yield Row(number, dict(zip(names, cells, strict=True)))


def _parquet_rows(stream: IO[bytes]) -> Iterator[Row]:
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(stream).iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            number += 1
            yield Row(number, {k: _plain(v) for k, v in record.items()})


def _plain(value: Any) -> Any:
    """A Parquet value as JSON holds it."""
    if isinstance(value, dt.datetime):
        # ISO-8601 text: a timestamp whatever the column's name (ingest reads it exactly).
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _base_type(ftype: Any) -> tuple[str, str]:
    """(type, logical type) of a field, the first non-null branch of a union."""
    if isinstance(ftype, list):
        branches = [b for b in ftype if b != "null"]
        ftype = branches[0] if branches else "null"
    if isinstance(ftype, dict):
        return str(ftype.get("type")), str(ftype.get("logicalType", ""))
    return str(ftype), ""


def _cell(text: str, kind: str, logical: str) -> Any:
    """A CSV cell as the field's type holds it; the text itself when it does not parse
    (the pipeline then names what is wrong in its dead letter)."""
    if text == "":
        return None
    try:
        if kind in ("int", "long"):
            return int(text) if not logical or text.lstrip("-").isdigit() else text
        if kind in ("float", "double"):
            return float(text)
    except ValueError:
        return text
    if kind == "boolean" and text.strip().lower() in _TRUE | _FALSE:
        return text.strip().lower() in _TRUE
    return text


def csv_coercer(schema: Mapping[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """A function typing a CSV row's cells by the schema's fields (empty cells: null).

    Columns the schema lacks keep their text (ingest drops them).

    >>> coerce = csv_coercer({"fields": [{"name": "n", "type": "long"},
    ...                                  {"name": "ok", "type": ["null", "boolean"]}]})
    >>> coerce({"n": "12", "ok": "yes", "other": "x"})
    {'n': 12, 'ok': True, 'other': 'x'}
    """
    kinds = {str(f["name"]): _base_type(f["type"]) for f in schema.get("fields", [])}

    def coerce(row: dict[str, Any]) -> dict[str, Any]:
        return {
            name: _cell(value, *kinds[name]) if name in kinds and isinstance(value, str) else value
            for name, value in row.items()
        }

    return coerce
