"""Model versions as records of the artifacts topic: split, reassembled, verified."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import pytest
from river import datasets, linear_model, preprocessing

from streams.models.artifacts import (
    ArtifactError,
    VersionAssembler,
    version_keys,
    version_records,
)
from streams.models.registry import (
    ArtifactIntegrityError,
    ModelRegistry,
    PendingVersion,
    canonical_pickle,
)

KEY = b"artifact-test-key"


def _pending(tmp_path: Path, n: int = 200) -> tuple[ModelRegistry, PendingVersion, str]:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in datasets.Phishing().take(n):
        model.learn_one(x, y)
    registry = ModelRegistry(tmp_path / "learner", "phishing", KEY)
    pending = registry.prepare(
        "lr",
        model,
        parent=None,
        offsets={"phishing.learn:0": n},
        samples_seen=n,
        metrics={"accuracy": 0.9},
        spec_hash="abc",
    )
    return registry, pending, registry.signature(pending.manifest)


@pytest.mark.parametrize("chunk_bytes", [1, 64, 1 << 20])
def test_a_version_comes_back_whole_from_its_records_in_any_order(tmp_path, chunk_bytes) -> None:
    _, pending, signature = _pending(tmp_path)
    records = version_records(pending, signature, chunk_bytes=chunk_bytes)
    assert len(records) == -(-len(pending.artifact) // chunk_bytes) + 1
    random.Random(7).shuffle(records)
    assembler = VersionAssembler()
    done = [v for v in (assembler.add(k, val) for k, val in records) if v is not None]
    assert len(done) == 1
    assert done[0].artifact == pending.artifact
    assert done[0].manifest == pending.manifest
    assert done[0].signature == signature
    assert list(assembler.pending()) == []


def test_a_changed_chunk_is_refused(tmp_path) -> None:
    _, pending, signature = _pending(tmp_path)
    records = version_records(pending, signature, chunk_bytes=256)
    key, value = records[1]
    records[1] = (key, bytes([value[0] ^ 1]) + value[1:])
    assembler = VersionAssembler()
    for k, v in records[:-1]:
        assert assembler.add(k, v) is None
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        assembler.add(*records[-1])


def test_a_manifest_under_another_versions_key_is_refused(tmp_path) -> None:
    _, pending, signature = _pending(tmp_path)
    records = version_records(pending, signature)
    moved = [(k.replace("/v1/", "/v9/"), v) for k, v in records]
    assembler = VersionAssembler()
    for k, v in moved[:-1]:
        assert assembler.add(k, v) is None
    with pytest.raises(ArtifactError, match="the manifest names"):
        assembler.add(*moved[-1])


def test_a_tombstone_drops_what_was_collected(tmp_path) -> None:
    _, pending, signature = _pending(tmp_path)
    records = version_records(pending, signature, chunk_bytes=256)
    assembler = VersionAssembler()
    for k, v in records[:-1]:
        assembler.add(k, v)
    assert list(assembler.pending()) == [("phishing", "lr", 1)]
    assembler.add(records[0][0], None)
    assert list(assembler.pending()) == []
    keys = version_keys("phishing", "lr", 1, len(records) - 1)
    assert keys == [k for k, _ in records]


@pytest.mark.parametrize("key", ["phishing/lr", "phishing/lr/1/manifest", "a/b/vx/chunk/0", ""])
def test_keys_that_are_not_artifact_keys_are_refused(key) -> None:
    with pytest.raises(ArtifactError, match="is not a key of the artifacts topic"):
        VersionAssembler().add(key, b"x")


def test_another_registry_imports_a_published_version_and_loads_the_same_model(tmp_path) -> None:
    learner, pending, signature = _pending(tmp_path)
    learner.write(pending)
    cache = ModelRegistry(tmp_path / "elsewhere", "phishing", KEY)
    assert cache.import_version(pending, signature) is True
    assert cache.import_version(pending, signature) is False  # once
    estimator, manifest = cache.load("lr", 1)
    assert manifest == pending.manifest
    assert canonical_pickle(estimator) == pending.artifact


def test_a_version_signed_with_another_key_is_not_imported(tmp_path) -> None:
    _, pending, _ = _pending(tmp_path)
    forged = ModelRegistry(tmp_path / "x", "phishing", b"another-key").signature(pending.manifest)
    cache = ModelRegistry(tmp_path / "elsewhere", "phishing", KEY)
    with pytest.raises(ArtifactIntegrityError, match="signature does not match"):
        cache.import_version(pending, forged)
    assert not cache.has("lr", 1)


def test_the_canonical_pickle_does_not_depend_on_a_round_trip_on_the_way() -> None:
    data = list(datasets.Phishing().take(300))
    straight = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in data:
        straight.learn_one(x, y)
    restarted = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in data[:150]:
        restarted.learn_one(x, y)
    restarted = pickle.loads(pickle.dumps(restarted))
    for x, y in data[150:]:
        restarted.learn_one(x, y)
    assert canonical_pickle(straight) == canonical_pickle(restarted)
    assert canonical_pickle(pickle.loads(canonical_pickle(straight))) == canonical_pickle(straight)


def test_a_published_version_never_passes_for_another_one_under_its_number(tmp_path) -> None:
    _, pending, signature = _pending(tmp_path)
    cache = ModelRegistry(tmp_path / "elsewhere", "phishing", KEY)
    local = cache.prepare(  # e.g. a candidate trained here, numbered 1 as well
        "lr",
        linear_model.LogisticRegression(),
        parent=None,
        offsets={},
        samples_seen=0,
        metrics={},
        spec_hash="abc",
    )
    cache.write(local)
    with pytest.raises(ArtifactIntegrityError, match="holds another version under that number"):
        cache.import_version(pending, signature)
