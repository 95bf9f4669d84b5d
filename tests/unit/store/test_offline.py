from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from streams.errors import RiverlineError
from streams.store.offline import OfflineStore

DAY_MS = 1_795_000_000_000  # 2026-11-18 UTC


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"event_id": f"e{i}", "prediction": i % 2 == 0} for i in range(start, start + n)]


@pytest.fixture(params=["path", "file-url"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same local directory as a plain path and as a ``file://`` URL."""
    return str(tmp_path) if request.param == "path" else tmp_path.as_uri()


def test_files_are_partitioned_by_pipeline_and_date_and_named_by_offsets(
    tmp_path: Path, location: str
) -> None:
    store = OfflineStore(location)
    path = store.write(
        "predictions", "phishing", "phishing.predictions", 0, [10, 11], [DAY_MS, DAY_MS], _rows(2)
    )
    rel = Path(path).relative_to(tmp_path).as_posix()
    assert rel == (
        "predictions/pipeline=phishing/date=2026-11-18/phishing.predictions+0+10-11.parquet"
    )
    assert pq.read_table(path).column("event_id").to_pylist() == ["e0", "e1"]


def test_rewriting_a_range_replaces_instead_of_duplicating(location: str) -> None:
    store = OfflineStore(location)
    for _ in range(2):  # a crash made the sink write the same batch twice
        store.write("events", "p", "p.events", 0, [0, 1, 2], [DAY_MS] * 3, _rows(3))
    store.write("events", "p", "p.events", 0, [3, 4], [DAY_MS] * 2, _rows(2, 3))
    table = store.read("events", "p")
    assert sorted(table.column("_offset").to_pylist()) == [0, 1, 2, 3, 4]
    assert set(table.column("pipeline").to_pylist()) == {"p"}


def test_read_filters_by_pipeline(location: str) -> None:
    store = OfflineStore(location)
    store.write("labels", "a", "a.labels", 0, [0], [DAY_MS], _rows(1))
    store.write("labels", "b", "b.labels", 0, [0], [DAY_MS], _rows(1, 5))
    assert store.read("labels", "b").column("event_id").to_pylist() == ["e5"]
    assert store.read("labels").num_rows == 2
    assert store.read("features").num_rows == 0


def test_file_for_finds_a_range_on_any_date(location: str) -> None:
    store = OfflineStore(location)
    day_two = DAY_MS + 86_400_000
    written = store.write(
        "features", "p", "p.features", 3, [8, 9], [day_two] * 2, _rows(2), offset_range=(0, 9)
    )
    assert store.file_for("features", "p.features", 3, 0, 9, "p") == written
    assert store.file_for("features", "p.features", 3, 0, 9) == written  # any pipeline
    assert store.file_for("features", "p.features", 3, 10, 19, "p") is None
    assert store.file_for("features", "p.features", 2, 0, 9, "p") is None
    assert store.file_for("features", "p.features", 3, 0, 9, "other") is None
    assert store.read_file(written).column("_offset").to_pylist() == [8, 9]


def test_the_same_store_through_a_path_and_a_file_url(tmp_path: Path) -> None:
    OfflineStore(tmp_path).write("events", "p", "p.events", 0, [0, 1], [DAY_MS] * 2, _rows(2))
    through_url = OfflineStore(tmp_path.as_uri())
    assert through_url.read("events", "p").column("event_id").to_pylist() == ["e0", "e1"]
    assert through_url.root == str(tmp_path)
    assert through_url.url == str(tmp_path)


def test_temporary_and_foreign_files_are_not_read(tmp_path: Path) -> None:
    store = OfflineStore(tmp_path)
    path = Path(store.write("events", "p", "p.events", 0, [0], [DAY_MS], _rows(1)))
    # What a writer killed between write and rename leaves, and what others may put there.
    (path.parent / f".{path.name}.0123abcd.tmp").write_bytes(b"half a file")
    (path.parent / "notes.txt").write_text("not the store's")
    (tmp_path / "events" / "stray.parquet").write_bytes(b"not in a partition")
    assert store.read("events").column("event_id").to_pylist() == ["e0"]
    assert [p for p, _, _ in store.files("events")] == [str(path)]


def test_a_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = OfflineStore(tmp_path)
    for _ in range(3):
        store.write("events", "p", "p.events", 0, [0, 1], [DAY_MS] * 2, _rows(2))
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["p.events+0+0-1.parquet"]


def test_version_changes_when_a_file_is_rewritten(tmp_path: Path) -> None:
    store = OfflineStore(tmp_path)
    path = store.write("events", "p", "p.events", 0, [0], [DAY_MS], _rows(1), offset_range=(0, 1))
    before = store.version(path)
    assert before is not None
    store.write("events", "p", "p.events", 0, [0, 1], [DAY_MS] * 2, _rows(2), offset_range=(0, 1))
    assert store.version(path) != before
    assert store.version(path + ".missing") is None


def test_unknown_kind_and_empty_batches_are_refused(tmp_path: Path) -> None:
    store = OfflineStore(tmp_path)
    with pytest.raises(RiverlineError, match="unknown offline-store kind"):
        store.write("models", "p", "t", 0, [0], [DAY_MS], _rows(1))
    with pytest.raises(RiverlineError, match="needs rows"):
        store.write("events", "p", "t", 0, [], [], [])
