from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agents.sink import _child_setup
from streams.messages import InMessage
from streams.pipeline.lineage import Lineage
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import encode_single_object
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec
from streams.store.offline import OfflineStore
from streams.store.sink import OfflineSink, sink_topics

CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")
SPEC = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
TS = 1_795_000_000_000


def _prediction(offset: int) -> InMessage:
    event_id = f"e{offset}"
    lineage = Lineage(event_id, "phishing/v1/x", f"phishing.raw:0:{offset}", "p@1", TS, TS, TS)
    record = {
        "event_id": event_id,
        "pipeline": "phishing",
        "model": "phishing-lr@1",
        "schema": lineage.schema,
        "source": lineage.source,
        "features": "fs@1",
        "spec": "p@1",
        "event_ts": TS,
        "ingest_ts": TS,
        "predict_ts": TS,
        "prediction": offset % 2 == 0,
        "proba": {"False": 0.25, "True": 0.75},
        "score": None,
        "label": None if offset < 3 else True,
    }
    value = encode_single_object(CATALOG.record("prediction"), record)
    return InMessage(
        "phishing.predictions",
        0,
        offset,
        event_id.encode(),
        value,
        TS,
        tuple(lineage.with_model("phishing-lr@1").to_headers()),
    )


def _sink(tmp_path) -> OfflineSink:
    return OfflineSink(
        SPEC,
        CATALOG,
        OfflineStore(tmp_path),
        kinds={"phishing.predictions": "predictions"},
        block_size=4,
    )


def test_blocks_are_files_named_by_offset_range(tmp_path) -> None:
    sink = _sink(tmp_path)
    sink.add([_prediction(o) for o in range(6)])
    sink.flush()
    names = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert names == ["phishing.predictions+0+0-3.parquet", "phishing.predictions+0+4-7.parquet"]
    table = OfflineStore(tmp_path).read("predictions", "phishing")
    assert sorted(table.column("event_id").to_pylist()) == [f"e{o}" for o in range(6)]
    assert table.column("proba.True").to_pylist() == [0.75] * 6
    assert set(table.column("rl_model").to_pylist()) == {"phishing-lr@1"}


def test_a_completed_block_is_written_by_the_flush_not_by_add(tmp_path) -> None:
    sink = _sink(tmp_path)
    sink.add([_prediction(o) for o in range(10)])  # blocks 0-3 and 4-7 complete, 8-11 open
    assert list(tmp_path.rglob("*.parquet")) == []  # add() runs on the event loop: no I/O
    written = sink.flush()
    assert sorted(Path(p).name for p in written) == [
        "phishing.predictions+0+0-3.parquet",
        "phishing.predictions+0+4-7.parquet",
        "phishing.predictions+0+8-11.parquet",
    ]
    assert sink.flush() == []  # nothing changed since


def test_a_restart_that_rereads_offsets_does_not_duplicate_rows(tmp_path) -> None:
    first = _sink(tmp_path)
    first.add([_prediction(o) for o in range(6)])
    first.flush()
    # Crash: the new sink resumes from an older committed offset, with other batch edges.
    second = _sink(tmp_path)
    assert second.add([_prediction(o) for o in range(2, 5)]) == 0
    assert second.add([_prediction(o) for o in range(5, 9)]) == 3
    second.flush()
    table = OfflineStore(tmp_path).read("predictions")
    offsets = table.column("_offset").to_pylist()
    assert sorted(offsets) == list(range(9))
    assert len(list(tmp_path.rglob("*.parquet"))) == 3


def test_files_are_plain_parquet(tmp_path) -> None:
    sink = _sink(tmp_path)
    sink.add([_prediction(0)])
    (path,) = sink.flush()
    assert pq.read_table(path).column("event_id").to_pylist() == ["e0"]


def _dead_letter(offset: int, from_topic: str) -> InMessage:
    headers = (
        ("rl.error.topic", from_topic.encode()),
        ("rl.error.partition", b"0"),
        ("rl.error.offset", str(offset).encode()),
        ("rl.error.stage", b"ingest"),
        ("rl.error.class", b"not_json"),
        ("rl.error.message", b"not JSON"),
        ("rl.error.schema", b"phishing/v1"),
    )
    return InMessage("riverline.dlq", 0, offset, b"k", b"{", TS, headers)


def test_only_dead_letters_of_the_pipelines_topics_are_kept(tmp_path) -> None:
    sink = OfflineSink(
        SPEC,
        CATALOG,
        OfflineStore(tmp_path),
        kinds=sink_topics(SPEC, "", "riverline.dlq"),
        dead_letter_sources={"phishing.raw", "phishing.features"},
    )
    batch = [_dead_letter(0, "phishing.raw"), _dead_letter(1, "cards.raw")]
    assert sink.add([*batch, _dead_letter(2, "phishing.features")]) == 2
    sink.flush()
    table = OfflineStore(tmp_path).read("dead_letters", "phishing")
    assert table.column("source").to_pylist() == ["phishing.raw:0:0", "phishing.features:0:2"]
    assert table.column("value").to_pylist() == [b"{", b"{"]


def test_a_shared_topics_blocks_are_kept_apart_per_pipeline(tmp_path) -> None:
    store = OfflineStore(tmp_path)
    other = SPEC.renamed("other")
    for spec, source in ((other, "other.raw"), (SPEC, "phishing.raw")):
        sink = OfflineSink(
            spec,
            CATALOG,
            store,
            kinds={"riverline.dlq": "dead_letters"},
            block_size=4,
            dead_letter_sources={source},
        )
        sink.add([_dead_letter(0, "other.raw"), _dead_letter(1, "phishing.raw")])
        sink.flush()
    # A restarted phishing sink resumes its own block, not the other pipeline's.
    again = OfflineSink(
        SPEC,
        CATALOG,
        store,
        kinds={"riverline.dlq": "dead_letters"},
        block_size=4,
        dead_letter_sources={"phishing.raw"},
    )
    assert again.add([_dead_letter(0, "other.raw"), _dead_letter(1, "phishing.raw")]) == 0
    assert store.read("dead_letters", "phishing").num_rows == 1
    assert store.read("dead_letters", "other").num_rows == 1


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_sink_process_gets_idle_cpu_time_and_lower_priority() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], preexec_fn=_child_setup(3, True)
    )
    try:
        assert os.sched_getscheduler(proc.pid) == os.SCHED_IDLE
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, proc.pid) == min(19, ours + 3)
    finally:
        proc.kill()
        proc.wait()


def _machine(tmp_path, name: str, store_url: str) -> tuple[Settings, OfflineSink]:
    """A sink "on another machine": its own RIVERLINE_HOME, the deployment's store URL."""
    settings = Settings.from_env(home=tmp_path / name, bootstrap=None, store_url=store_url)
    sink = OfflineSink(
        SPEC,
        CATALOG,
        OfflineStore.from_settings(settings),
        kinds={"phishing.predictions": "predictions"},
        block_size=4,
    )
    return settings, sink


def test_a_partition_moving_to_another_machine_resumes_its_block_from_the_shared_store(
    tmp_path,
) -> None:
    url = (tmp_path / "shared").as_uri()
    _, first = _machine(tmp_path, "machine-a", url)
    first.add([_prediction(o) for o in range(6)])
    first.flush()  # then commits offset 6 and loses the partition
    _, second = _machine(tmp_path, "machine-b", url)
    assert second.add([_prediction(o) for o in range(6, 10)]) == 4
    written = second.flush()
    assert sorted(Path(p).name for p in written) == [
        "phishing.predictions+0+4-7.parquet",
        "phishing.predictions+0+8-11.parquet",
    ]
    table = OfflineStore(url).read("predictions")
    assert sorted(table.column("_offset").to_pylist()) == list(range(10))
    # Nothing a sink needs lives on its machine.
    for home in ("machine-a", "machine-b"):
        assert [p for p in (tmp_path / home).rglob("*") if p.is_file()] == []


def test_a_sink_that_lost_its_partition_unnoticed_drops_none_of_the_new_owners_rows(
    tmp_path,
) -> None:
    url = (tmp_path / "shared").as_uri()
    _, stale = _machine(tmp_path, "machine-a", url)
    stale.add([_prediction(o) for o in range(6)])
    stale.flush()
    stale.add([_prediction(6)])  # read, not flushed: then paused past its session
    _, owner = _machine(tmp_path, "machine-b", url)
    owner.add([_prediction(o) for o in range(6, 10)])
    owner.flush()  # block 4-7 is complete: the new owner will not write it again
    stale.flush()  # the paused sink wakes up and flushes what it holds of block 4-7
    table = OfflineStore(url).read("predictions")
    assert sorted(table.column("_offset").to_pylist()) == list(range(10))


def test_verified_topics_store_the_same_rows_and_still_refuse_a_short_record(tmp_path) -> None:
    messages = [_prediction(o) for o in range(4)]
    cut = messages[3].value[:-3]
    messages[3] = InMessage(*[cut if f == "value" else getattr(messages[3], f) for f in _FIELDS])
    rows = {}
    for verified in ((), ("phishing.predictions",)):
        folder = tmp_path / str(len(verified))
        sink = OfflineSink(
            SPEC,
            CATALOG,
            OfflineStore(folder),
            kinds={"phishing.predictions": "predictions"},
            verified=verified,
        )
        sink.add(messages)
        sink.flush()
        rows[verified] = OfflineStore(folder).read("predictions").to_pylist()
    assert rows[()] == rows[("phishing.predictions",)]
    # The short one is stored by its lineage alone: its fields could not be read.
    assert [r["predict_ts"] for r in rows[()]] == [TS, TS, TS, None]


_FIELDS = ("topic", "partition", "offset", "key", "value", "timestamp_ms", "headers")
