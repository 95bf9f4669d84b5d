"""The offline store: what the pipeline wrote, as Parquet, for lineage, replay and training.

Where: ``Settings.store_url``, a local path or a URL that :mod:`pyarrow.fs` opens
(``file:///srv/store``, ``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``). Every sink
and command of one deployment points at the same URL, so sinks on several machines write
into one store and ``riverline lineage`` or ``train`` read it from any machine.

Layout: ``<root>/<kind>/pipeline=<P>/date=<YYYY-MM-DD>/<topic>+<partition>+<first>-<last>.parquet``
where ``kind`` is ``events``, ``features``, ``predictions``, ``labels`` or ``dead_letters``
and ``date`` is the UTC date of the batch's first message. A file is named by the topic,
partition and offset range it holds, so writing the same range again after a crash
replaces the file instead of duplicating rows. Readers never see half a file: on a local
disk or HDFS a file is written under a hidden temporary name and renamed; an object store
has no rename, but an object appears whole when its upload completes, so the file is
serialized in memory first and uploaded under its own name. pandas, pyarrow and DuckDB read
the store directly (hive partitioning).
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from streams.errors import ConfigError, RiverlineError
from streams.settings import Settings, check_store_url, store_url_for_display

__all__ = ["KINDS", "FileVersion", "OfflineStore"]

KINDS = ("events", "features", "predictions", "labels", "dead_letters")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Filesystems with an atomic rename that replaces the target (``pyarrow.fs`` type names).
_RENAMING = frozenset({"local", "hdfs"})


@dataclass(frozen=True)
class FileVersion:
    """What a stored file looked like when seen: a later write changes it."""

    size: int
    mtime_ns: int


def _block_name(topic: str, partition: int, first: int, last: int) -> str:
    return f"{_SAFE.sub('_', topic)}+{partition}+{first}-{last}.parquet"


def _open(location: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """The filesystem and root path of a store location (a path or a URL)."""
    try:
        url = check_store_url(os.fspath(location))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if "://" not in url:
        return pafs.LocalFileSystem(), url
    try:
        filesystem, root = pafs.FileSystem.from_uri(url)
    except (pa.ArrowException, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot open the offline store at {store_url_for_display(url)}: {first_line}. "
            "Check RIVERLINE_STORE_URL and the credentials of that storage (for S3 the "
            "AWS_* environment variables or the instance role)."
        ) from exc
    return filesystem, root.rstrip("/")


class OfflineStore:
    """Append-by-offset-range Parquet files under a path or URL.

    Parameters
    ----------
    location
        An absolute local path, or a URL :mod:`pyarrow.fs` opens (``file:///abs/path``,
        ``s3://bucket/prefix``, ...). With ``filesystem``, a path on that filesystem.
    filesystem
        The filesystem to use as it is (tests, or a caller that configured one).
    """

    def __init__(
        self, location: str | os.PathLike[str], filesystem: pafs.FileSystem | None = None
    ) -> None:
        if filesystem is None:
            filesystem, root = _open(location)
        else:
            root = os.fspath(location).rstrip("/")
        self.filesystem = filesystem
        #: The store's root as a path on :attr:`filesystem`.
        self.root = root
        #: Where the store is, for messages (without credentials).
        self.url = (
            root if filesystem.type_name == "local" else store_url_for_display(os.fspath(location))
        )
        self._renames = filesystem.type_name in _RENAMING

    @classmethod
    def from_settings(cls, settings: Settings) -> OfflineStore:
        """The deployment's store: ``settings.store_url``, else ``RIVERLINE_HOME/store``."""
        return cls(settings.store_location)

    def __repr__(self) -> str:
        return f"OfflineStore({self.url!r})"

    def _folder(self, kind: str, pipeline: str, first_ts_ms: int) -> str:
        if kind not in KINDS:
            raise RiverlineError(f"unknown offline-store kind {kind!r}; use one of {KINDS}.")
        day = datetime.fromtimestamp(first_ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
        return f"{self.root}/{kind}/pipeline={pipeline}/date={day}"

    def path_for(
        self,
        kind: str,
        pipeline: str,
        topic: str,
        partition: int,
        first_ts_ms: int,
        offset_range: tuple[int, int],
    ) -> str:
        """The file (a path on :attr:`filesystem`) that :meth:`write` writes these rows to."""
        folder = self._folder(kind, pipeline, first_ts_ms)
        return f"{folder}/{_block_name(topic, partition, *offset_range)}"

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
    ) -> str:
        """Write rows read from one topic partition; returns the file written.

        ``offsets`` and ``timestamps_ms`` give each row's source offset and Kafka time;
        they become the columns ``_offset`` and ``_timestamp_ms``. The file is named by
        ``offset_range`` (default: the rows' first and last offsets); the path returned
        is on :attr:`filesystem`.
        """
        if not rows:
            raise RiverlineError("nothing to write: an offline-store batch needs rows.")
        if not (len(rows) == len(offsets) == len(timestamps_ms)):
            raise RiverlineError("rows, offsets and timestamps must have the same length.")
        span = offset_range or (min(offsets), max(offsets))
        path = self.path_for(kind, pipeline, topic, partition, int(timestamps_ms[0]), span)
        columns: dict[str, list[Any]] = {"_offset": list(offsets)}
        columns["_timestamp_ms"] = list(timestamps_ms)
        for key in rows[0]:
            columns[key] = [row.get(key) for row in rows]
        # Serialized before any byte reaches the store: a failure leaves no partial file.
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table(columns), buffer)
        # Same offsets, same file: a later, fuller write of a block replaces it.
        self._put(path, buffer.getvalue())
        return path

    def _put(self, path: str, data: pa.Buffer) -> None:
        folder, _, name = path.rpartition("/")
        if not self._renames:
            with self.filesystem.open_output_stream(path) as out:
                out.write(data)
            return
        self.filesystem.create_dir(folder, recursive=True)
        # A name of its own per write: two sinks may write one block during a handover.
        tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        try:
            with self.filesystem.open_output_stream(tmp) as out:
                out.write(data)
            self.filesystem.move(tmp, path)
        except BaseException:
            # Never created, or already gone: the original error is the one to raise.
            with contextlib.suppress(OSError):
                self.filesystem.delete_file(tmp)
            raise

    def _listing(self, folder: str, *, recursive: bool = False) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(folder, recursive=recursive, allow_not_found=True)
        return list(self.filesystem.get_file_info(selector))

    def file_for(
        self,
        kind: str,
        topic: str,
        partition: int,
        first: int,
        last: int,
        pipeline: str | None = None,
    ) -> str | None:
        """The file holding exactly this offset range, if one was written (any date).

        Shared topics (dead letters) are stored per pipeline: pass ``pipeline`` for them.
        Returns a path on :attr:`filesystem`.
        """
        base = f"{self.root}/{kind}"
        if pipeline:
            pipelines = [f"{base}/pipeline={pipeline}"]
        else:
            pipelines = [
                i.path
                for i in self._listing(base)
                if i.type == pafs.FileType.Directory and i.base_name.startswith("pipeline=")
            ]
        name = _block_name(topic, partition, first, last)
        candidates = [
            f"{i.path}/{name}"
            for folder in pipelines
            for i in self._listing(folder)
            if i.type == pafs.FileType.Directory and i.base_name.startswith("date=")
        ]
        if not candidates:
            return None
        found = sorted(i.path for i in self.filesystem.get_file_info(candidates) if i.is_file)
        return found[0] if found else None

    def version(self, path: str) -> FileVersion | None:
        """The file's size and modification time now; None if there is no such file."""
        info = self.filesystem.get_file_info(path)
        if not info.is_file:
            return None
        return FileVersion(int(info.size or 0), int(info.mtime_ns or 0))

    def read_file(self, path: str) -> pa.Table:
        """One stored file as written: ``_offset``, ``_timestamp_ms`` and the rows' columns."""
        with self.filesystem.open_input_file(path) as source:
            return pq.read_table(source)

    def files(self, kind: str, pipeline: str | None = None) -> list[tuple[str, str, str]]:
        """``(path, pipeline, date)`` of every stored file of one kind, in path order."""
        base = f"{self.root}/{kind}"
        folder = f"{base}/pipeline={pipeline}" if pipeline else base
        found = []
        for info in self._listing(folder, recursive=True):
            parts = info.path[len(base) + 1 :].split("/")
            if not info.is_file or len(parts) != 3:
                continue
            pipeline_dir, date_dir, name = parts
            if (
                pipeline_dir.startswith("pipeline=")
                and date_dir.startswith("date=")
                and name.endswith(".parquet")
                and not name.startswith(".")
            ):
                found.append((info.path, pipeline_dir[9:], date_dir[5:]))
        return sorted(found)

    def read(self, kind: str, pipeline: str | None = None) -> pa.Table:
        """Everything of one kind (optionally one pipeline), with its partition columns.

        Files written at different times may type a column differently (all-null in one
        block, boolean in the next); their schemas are unified permissively.
        """
        tables = []
        for path, file_pipeline, date in self.files(kind, pipeline):
            table = self.read_file(path)
            # The hive partition values, unless a record already has such a column.
            for column, value in (("pipeline", file_pipeline), ("date", date)):
                if column not in table.column_names:
                    table = table.append_column(column, pa.array([value] * table.num_rows))
            tables.append(table)
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables, promote_options="permissive")
