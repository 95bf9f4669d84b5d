from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from streams.errors import RiverlineError
from streams.store.offline import OfflineStore

DAY_MS = 1_795_000_000_000  # 2026-11-18 UTC


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"event_id": f"e{i}", "prediction": i % 2 == 0} for i in range(start, start + n)]


def test_files_are_partitioned_by_pipeline_and_date_and_named_by_offsets(tmp_path) -> None:
    store = OfflineStore(tmp_path)
    path = store.write(
        "predictions", "phishing", "phishing.predictions", 0, [10, 11], [DAY_MS, DAY_MS], _rows(2)
    )
    rel = path.relative_to(tmp_path).as_posix()
    assert rel == (
        "predictions/pipeline=phishing/date=2026-11-18/phishing.predictions+0+10-11.parquet"
    )
    assert pq.read_table(path).column("event_id").to_pylist() == ["e0", "e1"]


def test_rewriting_a_range_replaces_instead_of_duplicating(tmp_path) -> None:
    store = OfflineStore(tmp_path)
    for _ in range(2):  # a crash made the sink write the same batch twice
        store.write("events", "p", "p.events", 0, [0, 1, 2], [DAY_MS] * 3, _rows(3))
    store.write("events", "p", "p.events", 0, [3, 4], [DAY_MS] * 2, _rows(2, 3))
    table = store.read("events", "p")
    assert sorted(table.column("_offset").to_pylist()) == [0, 1, 2, 3, 4]
    assert set(table.column("pipeline").to_pylist()) == {"p"}


def test_read_filters_by_pipeline(tmp_path) -> None:
    store = OfflineStore(tmp_path)
    store.write("labels", "a", "a.labels", 0, [0], [DAY_MS], _rows(1))
    store.write("labels", "b", "b.labels", 0, [0], [DAY_MS], _rows(1, 5))
    assert store.read("labels", "b").column("event_id").to_pylist() == ["e5"]
    assert store.read("labels").num_rows == 2
    assert store.read("features").num_rows == 0


def test_unknown_kind_and_empty_batches_are_refused(tmp_path) -> None:
    store = OfflineStore(tmp_path)
    with pytest.raises(RiverlineError, match="unknown offline-store kind"):
        store.write("models", "p", "t", 0, [0], [DAY_MS], _rows(1))
    with pytest.raises(RiverlineError, match="needs rows"):
        store.write("events", "p", "t", 0, [], [], [])
