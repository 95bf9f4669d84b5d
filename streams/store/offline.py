"""The offline store: what the pipeline wrote, as Parquet, for lineage, replay and training.

Layout: ``<root>/<kind>/pipeline=<P>/date=<YYYY-MM-DD>/<topic>+<partition>+<first>-<last>.parquet``
where ``kind`` is ``events``, ``features``, ``predictions``, ``labels`` or ``dead_letters``
and ``date`` is the UTC date of the batch's first message. A file is named by the topic,
partition and offset range it holds, so writing the same range again after a crash
replaces the file instead of duplicating rows. Files are written to a temporary name and
renamed, so readers never see half a file. pandas, pyarrow and DuckDB read it directly
(hive partitioning).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from streams.errors import RiverlineError

__all__ = ["KINDS", "OfflineStore"]

KINDS = ("events", "features", "predictions", "labels", "dead_letters")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class OfflineStore:
    """Append-by-offset-range Parquet files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _folder(self, kind: str, pipeline: str, first_ts_ms: int) -> Path:
        if kind not in KINDS:
            raise RiverlineError(f"unknown offline-store kind {kind!r}; use one of {KINDS}.")
        day = datetime.fromtimestamp(first_ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
        return self.root / kind / f"pipeline={pipeline}" / f"date={day}"

    def write(
        self,
        kind: str,
        pipeline: str,
        topic: str,
        partition: int,
        offsets: Sequence[int],
        timestamps_ms: Sequence[int],
        rows: Sequence[Mapping[str, Any]],
        *,
        offset_range: tuple[int, int] | None = None,
    ) -> Path:
        """Write rows read from one topic partition; returns the file written.

        ``offsets`` and ``timestamps_ms`` give each row's source offset and Kafka time;
        they become the columns ``_offset`` and ``_timestamp_ms``. The file is named by
        ``offset_range`` (default: the rows' first and last offsets).
        """
        if not rows:
            raise RiverlineError("nothing to write: an offline-store batch needs rows.")
        if not (len(rows) == len(offsets) == len(timestamps_ms)):
            raise RiverlineError("rows, offsets and timestamps must have the same length.")
        folder = self._folder(kind, pipeline, int(timestamps_ms[0]))
        folder.mkdir(parents=True, exist_ok=True)
        first, last = offset_range or (min(offsets), max(offsets))
        name = f"{_SAFE.sub('_', topic)}+{partition}+{first}-{last}.parquet"
        path = folder / name
        columns: dict[str, list[Any]] = {"_offset": list(offsets)}
        columns["_timestamp_ms"] = list(timestamps_ms)
        for key in rows[0]:
            columns[key] = [row.get(key) for row in rows]
        table = pa.table(columns)
        # Same offsets, same file: a later, fuller write of a block replaces it.
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return path

    def file_for(
        self,
        kind: str,
        topic: str,
        partition: int,
        first: int,
        last: int,
        pipeline: str | None = None,
    ) -> Path | None:
        """The file holding exactly this offset range, if one was written (any date).

        Shared topics (dead letters) are stored per pipeline: pass ``pipeline`` for them.
        """
        name = f"{_SAFE.sub('_', topic)}+{partition}+{first}-{last}.parquet"
        folder = f"pipeline={pipeline}" if pipeline else "pipeline=*"
        matches = sorted((self.root / kind).glob(f"{folder}/date=*/{name}"))
        return matches[0] if matches else None

    def read(self, kind: str, pipeline: str | None = None) -> pa.Table:
        """Everything of one kind (optionally one pipeline), with its partition columns.

        Files written at different times may type a column differently (all-null in one
        block, boolean in the next); their schemas are unified permissively.
        """
        pattern = (
            f"pipeline={pipeline}/date=*/*.parquet" if pipeline else "pipeline=*/date=*/*.parquet"
        )
        tables = []
        for path in sorted((self.root / kind).glob(pattern)):
            table = pq.read_table(path, partitioning=None)
            # The hive partition values, unless a record already has such a column.
            for column, value in (
                ("pipeline", path.parent.parent.name[9:]),
                ("date", path.parent.name[5:]),
            ):
                if column not in table.column_names:
                    table = table.append_column(column, pa.array([value] * table.num_rows))
            tables.append(table)
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="permissive")
