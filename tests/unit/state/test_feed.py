"""What a serving worker reads of the learner's publications, without a broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from river import linear_model

from streams.models.artifacts import version_records
from streams.models.registry import ModelRegistry
from streams.state.feed import (
    Progress,
    ServedModel,
    ServedSet,
    VersionFeed,
    progress_key,
    served_key,
)
from streams.trust.records import RecordSigner

KEY = b"feed-test-key"


def _feed(tmp_path: Path) -> VersionFeed:
    registry = ModelRegistry(tmp_path / "cache", "p", KEY)
    return VersionFeed("127.0.0.1:1", {}, RecordSigner(KEY), registry, "p", "arts", "models")


def _version(tmp_path: Path, version: int) -> list[tuple[str, bytes]]:
    learner = ModelRegistry(tmp_path / "learner", "p", KEY)
    pending = None
    for _ in range(version):
        pending = learner.prepare(
            "lr",
            linear_model.LogisticRegression(),
            parent=None,
            offsets={"p.learn:0": 0},
            samples_seen=0,
            metrics={},
            spec_hash="h",
        )
        learner.write(pending)
    assert pending is not None
    return version_records(pending, learner.signature(pending.manifest), chunk_bytes=64)


def _served(version: int, samples: int = 10) -> ServedSet:
    return ServedSet((ServedModel("lr", version, "champion", samples),), samples, 1_000, "h:1")


def test_records_read_back_as_written() -> None:
    served = _served(3)
    assert ServedSet.from_bytes(served.to_bytes()) == served
    progress = Progress({"lr": 12}, 5, "h:1")
    assert Progress.from_bytes(progress.to_bytes()) == progress
    for malformed in (b"{}", b"[]", b'{"models": [{"name": "lr"}], "learned": 1, "ts": 1}'):
        with pytest.raises(ValueError, match=r"not a served set"):
            ServedSet.from_bytes(malformed)


def test_a_served_set_is_served_once_all_its_versions_are_here(tmp_path) -> None:
    feed = _feed(tmp_path)
    records = _version(tmp_path, 2)

    async def run() -> None:
        feed._model_record(served_key("p"), _served(2).to_bytes())
        feed._settle()
        assert feed.served is None  # the version has not come yet
        for key, value in records:
            await feed._artifact(key, value)
        feed._settle()

    asyncio.run(run())
    assert feed.served == _served(2)
    assert feed.changed.is_set()
    assert feed.registry.has("lr", 2)


def test_a_malformed_record_is_counted_and_changes_nothing(tmp_path) -> None:
    feed = _feed(tmp_path)
    feed._model_record(served_key("p"), b"not json")
    feed._model_record(progress_key("p"), b'{"samples": 3}')
    feed._settle()
    assert feed.refused == 2
    assert feed.served is None
    assert feed.progress is None


def test_staleness_is_what_the_learner_learned_since_the_served_version(tmp_path) -> None:
    feed = _feed(tmp_path)
    assert feed.staleness("lr", 10) is None
    feed.served = ServedSet(
        (ServedModel("lr", 2, "champion", 10),), 10, int(time.time() * 1000) - 5_000
    )
    ahead, age = feed.staleness("lr", 10) or (None, None)
    assert ahead == 0  # no progress heard yet
    assert age == pytest.approx(5.0, abs=2.0)
    feed.progress = Progress({"lr": 35}, int(time.time() * 1000))
    assert (feed.staleness("lr", 10) or (None,))[0] == 25
    feed.progress = Progress({"lr": 4}, int(time.time() * 1000))  # an older learner's word
    assert (feed.staleness("lr", 10) or (None,))[0] == 0
