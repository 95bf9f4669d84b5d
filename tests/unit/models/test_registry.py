from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from collections import Counter
from pathlib import Path

import pytest
from river import datasets, linear_model, preprocessing

from streams.errors import ConfigError
from streams.models.registry import ArtifactIntegrityError, ModelRegistry, RegistryError
from streams.settings import Settings

KEY = b"test-key"


def _trained():
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for x, y in datasets.Phishing().take(100):
        model.learn_one(x, y)
    return model


def _save(registry: ModelRegistry, model, parent=None):
    return registry.save(
        "lr",
        model,
        parent=parent,
        offsets={"phishing.features:0": 100},
        samples_seen=100,
        metrics={"accuracy": 0.9},
        spec_hash="abc",
    )


def test_save_then_load_gives_the_same_model(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    model = _trained()
    manifest = _save(registry, model)
    loaded, again = registry.load("lr", manifest.version)
    assert again == manifest
    assert manifest.label == "lr@1"
    assert manifest.offsets == {"phishing.features:0": 100}
    x = next(iter(datasets.Phishing()))[0]
    assert loaded.predict_proba_one(x) == model.predict_proba_one(x)


def test_versions_count_up_and_record_their_parent(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    first = _save(registry, _trained())
    second = _save(registry, _trained(), parent=first.version)
    assert (first.version, second.version) == (1, 2)
    assert second.parent == 1
    assert registry.versions("lr") == [1, 2]
    assert registry.latest("lr") == 2


def test_a_tampered_artifact_is_refused_before_unpickling(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    manifest = _save(registry, _trained())
    path = tmp_path / "phishing" / "lr" / "v1" / "artifact.pkl"
    # A pickle that would run code if it were ever loaded.
    path.write_bytes(pickle.dumps(Exploding()))
    with pytest.raises(ArtifactIntegrityError, match="Refusing to unpickle"):
        registry.load("lr", manifest.version)


def test_a_tampered_manifest_is_refused(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _save(registry, _trained())
    path = tmp_path / "phishing" / "lr" / "v1" / "manifest.json"
    raw = json.loads(path.read_text())
    raw["metrics"]["accuracy"] = 0.99
    path.write_text(json.dumps(raw))
    with pytest.raises(ArtifactIntegrityError, match="signature does not match"):
        registry.load("lr", 1)


def test_another_key_cannot_load(tmp_path) -> None:
    _save(ModelRegistry(tmp_path, "phishing", KEY), _trained())
    with pytest.raises(ArtifactIntegrityError, match="another RIVERLINE_SIGNING_KEY"):
        ModelRegistry(tmp_path, "phishing", b"other").load("lr", 1)


def test_unknown_version_names_the_known_ones(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _save(registry, _trained())
    with pytest.raises(RegistryError, match=r"lr@7 is not in the registry.*versions: v1"):
        registry.load("lr", 7)


class Exploding:
    def __reduce__(self):
        return (pytest.fail, ("unpickled an unverified artifact",))


def test_a_prepared_version_keeps_its_number_while_another_is_saved(tmp_path) -> None:
    """A worker prepares a snapshot, then writes it off the event loop; an admin action
    saving meanwhile gets the next number, not the one the snapshot holds."""
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _save(registry, _trained())
    pending = registry.prepare(
        "lr",
        _trained(),
        parent=1,
        offsets={"phishing.features:0": 200},
        samples_seen=200,
        metrics={},
        spec_hash="abc",
    )
    assert pending.manifest.version == 2
    assert registry.versions("lr") == [1]  # prepared is not on disk
    meanwhile = _save(registry, _trained(), parent=1)
    assert meanwhile.version == 3
    written = registry.write(pending)
    assert written == pending.manifest
    assert registry.versions("lr") == [1, 2, 3]
    loaded, manifest = registry.load("lr", 2)
    assert manifest.offsets == {"phishing.features:0": 200}
    x = next(iter(datasets.Phishing()))[0]
    assert loaded.predict_proba_one(x) == _trained().predict_proba_one(x)
    assert registry.latest("lr") == 3  # the late write did not move LATEST back
    assert (tmp_path / "phishing" / "lr" / "LATEST").read_text() == "3\n"


# Identity: a signed manifest is only good in the folder it was signed for.


@pytest.mark.parametrize(
    ("pipeline", "model", "version", "found"),
    [
        ("phishing", "lr", 2, "phishing/lr@1"),
        ("phishing", "nb", 1, "phishing/lr@1"),
        ("other", "lr", 1, "phishing/lr@1"),
    ],
    ids=["another-version", "another-model", "another-pipeline"],
)
def test_a_signed_version_copied_elsewhere_is_refused(
    tmp_path, pipeline: str, model: str, version: int, found: str
) -> None:
    _save(ModelRegistry(tmp_path, "phishing", KEY), _trained())
    shutil.copytree(
        tmp_path / "phishing" / "lr" / "v1", tmp_path / pipeline / model / f"v{version}"
    )
    registry = ModelRegistry(tmp_path, pipeline, KEY)
    expected = rf"expected the manifest of {pipeline}/{model}@{version}, found .* of {found}"
    with pytest.raises(ArtifactIntegrityError, match=expected):
        registry.manifest(model, version)
    with pytest.raises(ArtifactIntegrityError, match=expected):
        registry.load(model, version)
    _, manifest = ModelRegistry(tmp_path, "phishing", KEY).load("lr", 1)
    assert manifest.label == "lr@1"


# Finding the latest version without listing the model folder.


class FsOps:
    """Counts filesystem calls (listings, stats, opens) made inside ``with ops:``, and
    keeps the folders listed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: Counter[str] = Counter()
        self.listed: list[Path | int] = []
        self.opened: list[Path] = []

    def __enter__(self) -> FsOps:
        self._context = self.monkeypatch.context()
        patch = self._context.__enter__()
        for module, name in [
            (os, "scandir"),
            (os, "listdir"),
            (os, "stat"),
            (os, "open"),
            (io, "open"),
        ]:
            patch.setattr(module, name, self._counting(name, getattr(module, name)))
        return self

    def __exit__(self, *exc: object) -> None:
        self._context.__exit__(None, None, None)

    @property
    def listings(self) -> int:
        return sum(self.calls[name] for name in ("scandir", "listdir"))

    def _counting(self, name: str, function):
        def counted(*args, **kwargs):
            self.calls[name] += 1
            if args and name in ("scandir", "listdir"):
                folder = args[0]  # a descriptor when shutil.rmtree lists
                self.listed.append(folder if isinstance(folder, int) else Path(folder))
            if args and name == "open" and not isinstance(args[0], int):
                self.opened.append(Path(args[0]))
            return function(*args, **kwargs)

        return counted


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Durability is not what these tests check, and a thousand versions would fsync
    thousands of times on a disk other people share."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def _snapshots(registry: ModelRegistry, count: int, **prune) -> list[int]:
    """``count`` versions of a small estimator, each followed by ``prune(**prune)`` if
    given, as a worker snapshots; returns the versions pruned."""
    model = preprocessing.StandardScaler()
    removed = []
    for i in range(count):
        model.learn_one({"x": float(i)})
        _save(registry, model)
        if prune:
            removed += registry.prune("lr", **prune)
    return removed


PROTECTED = {3, 7, 500}
KEPT = [3, 7, 500, *range(951, 1001)]


@pytest.fixture(scope="module")
def thousand(tmp_path_factory) -> tuple[Path, list[int]]:
    """A registry after 1,000 snapshots, each followed by ``prune(keep=50,
    protect=PROTECTED)``, and the versions pruned. Tests only read it."""
    root = tmp_path_factory.mktemp("thousand")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: None)  # as no_fsync
        removed = _snapshots(ModelRegistry(root, "phishing", KEY), 1000, keep=50, protect=PROTECTED)
    return root, removed


def _start(root, monkeypatch) -> tuple[int | None, FsOps]:
    """Open the registry and find the latest version, as a worker does at start."""
    with FsOps(monkeypatch) as ops:
        latest = ModelRegistry(root, "phishing", KEY).latest("lr")
    return latest, ops


@pytest.mark.usefixtures("no_fsync")
def test_starting_costs_the_same_after_one_version_as_after_a_thousand(
    tmp_path, monkeypatch, thousand
) -> None:
    root, _ = thousand
    _snapshots(ModelRegistry(tmp_path, "phishing", KEY), 1)
    one, one_ops = _start(tmp_path, monkeypatch)
    latest, ops = _start(root, monkeypatch)
    assert (one, latest) == (1, 1000)
    assert ops.calls == one_ops.calls
    assert ops.listings == 0
    registry = ModelRegistry(root, "phishing", KEY)
    with FsOps(monkeypatch) as ops:
        pending = registry.prepare(
            "lr", None, parent=1000, offsets={}, samples_seen=0, metrics={}, spec_hash="abc"
        )
    assert pending.manifest.version == 1001
    assert ops.listings == 0


@pytest.mark.parametrize(
    "pointer",
    [None, "", "garbage\n", "-3\n", "7 8\n", "900\n", "\xff"],
    ids=["missing", "empty", "text", "negative", "two", "not-a-version", "not-ascii"],
)
@pytest.mark.usefixtures("no_fsync")
def test_a_missing_or_damaged_latest_file_costs_one_listing_and_is_rewritten(
    tmp_path, monkeypatch, pointer: str | None
) -> None:
    _snapshots(ModelRegistry(tmp_path, "phishing", KEY), 12)
    path = tmp_path / "phishing" / "lr" / "LATEST"
    if pointer is None:
        path.unlink()
    else:
        path.write_bytes(pointer.encode("latin-1"))
    latest, ops = _start(tmp_path, monkeypatch)
    assert latest == 12
    assert ops.listed == [tmp_path / "phishing" / "lr"]
    assert path.read_text() == "12\n"
    latest, ops = _start(tmp_path, monkeypatch)
    assert latest == 12
    assert ops.listings == 0


def test_latest_sees_versions_another_writer_saved(tmp_path) -> None:
    ours = ModelRegistry(tmp_path, "phishing", KEY)
    theirs = ModelRegistry(tmp_path, "phishing", KEY)
    _save(ours, _trained())
    assert ours.latest("lr") == 1
    _save(theirs, _trained())
    _save(theirs, _trained())
    assert ours.latest("lr") == 3
    assert _save(ours, _trained()).version == 4


def test_two_writers_racing_for_a_number_cannot_both_have_it(tmp_path) -> None:
    ours = ModelRegistry(tmp_path, "phishing", KEY)
    theirs = ModelRegistry(tmp_path, "phishing", KEY)
    _save(ours, _trained())
    pending = ours.prepare(
        "lr", _trained(), parent=1, offsets={}, samples_seen=0, metrics={}, spec_hash="abc"
    )
    saved = _save(theirs, _trained())
    assert saved.version == pending.manifest.version == 2
    with pytest.raises(RegistryError, match=r"lr@2 already exists .* another writer"):
        ours.write(pending)
    assert ours.load("lr", 2)[1] == saved  # theirs, untouched
    assert _save(ours, _trained()).version == 3
    assert [p.name for p in (tmp_path / "phishing" / "lr").iterdir() if p.name[0] == "."] == []


def test_latest_never_names_a_version_that_failed_to_write(tmp_path, monkeypatch) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _save(registry, _trained())

    def disk_full(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", disk_full)
    with pytest.raises(OSError, match="No space left"):
        _save(registry, _trained())
    monkeypatch.undo()
    assert (tmp_path / "phishing" / "lr" / "LATEST").read_text() == "1\n"
    assert ModelRegistry(tmp_path, "phishing", KEY).latest("lr") == 1
    assert registry.versions("lr") == [1]


# Retention.


def test_a_thousand_snapshots_keep_the_newest_and_the_protected(thousand) -> None:
    root, removed = thousand
    assert removed == [v for v in range(1, 1001) if v not in KEPT]
    folder = root / "phishing" / "lr"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["LATEST", *(f"v{v}" for v in KEPT)])
    reopened = ModelRegistry(root, "phishing", KEY)
    assert reopened.latest("lr") == 1000
    assert reopened.versions("lr") == KEPT
    for version in KEPT:
        assert reopened.load("lr", version)[1].version == version


def test_prune_returns_what_it_removed_and_keeps_the_newest_even_with_keep_one(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _snapshots(registry, 6)
    assert registry.prune("lr", keep=1, protect={2, 99}) == [1, 3, 4, 5]
    assert registry.versions("lr") == [2, 6]
    assert registry.prune("lr", keep=1, protect={2}) == []
    assert registry.latest("lr") == 6
    assert registry.prune("nb", keep=1) == []  # a model with no versions


@pytest.mark.usefixtures("no_fsync")
def test_prune_lists_once_and_reads_no_manifest(tmp_path, monkeypatch) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _snapshots(registry, 100)
    with FsOps(monkeypatch) as ops:
        removed = registry.prune("lr", keep=50, protect=())
    assert removed == list(range(1, 51))
    folder = tmp_path / "phishing" / "lr"
    # The model folder once, and each removed version's own folder to delete its files.
    assert ops.listed.count(folder) == 1
    assert len(ops.listed) == 1 + len(removed)
    assert not [p for p in ops.opened if p.name in ("manifest.json", "artifact.pkl", "signature")]


def test_keeping_fewer_than_one_version_is_refused(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _save(registry, _trained())
    with pytest.raises(RegistryError, match=r"keep at least 1.*RIVERLINE_REGISTRY_KEEP"):
        registry.prune("lr", keep=0)
    assert registry.versions("lr") == [1]


def test_registry_keep_is_a_setting_of_at_least_one(monkeypatch) -> None:
    monkeypatch.delenv("RIVERLINE_REGISTRY_KEEP", raising=False)
    assert Settings.from_env().registry_keep == 50
    monkeypatch.setenv("RIVERLINE_REGISTRY_KEEP", "3")
    assert Settings.from_env().registry_keep == 3
    monkeypatch.setenv("RIVERLINE_REGISTRY_KEEP", "0")
    with pytest.raises(ConfigError, match="registry_keep"):
        Settings.from_env()


class Crash(Exception):
    """The process dies here."""


def _crash_after_renaming(path, *args, **kwargs):
    raise Crash


def _crash_after_deleting_the_artifact(path, *args, **kwargs):
    os.unlink(os.path.join(path, "artifact.pkl"))
    raise Crash


@pytest.mark.parametrize(
    "crash",
    [_crash_after_renaming, _crash_after_deleting_the_artifact],
    ids=["after-rename", "mid-delete"],
)
def test_a_crash_mid_prune_leaves_only_complete_versions(tmp_path, monkeypatch, crash) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _snapshots(registry, 5)
    monkeypatch.setattr(shutil, "rmtree", crash)
    with pytest.raises(Crash):
        registry.prune("lr", keep=2)
    monkeypatch.undo()
    folder = tmp_path / "phishing" / "lr"
    assert not (folder / "v1").exists()  # out of the registry before any file went
    assert len([p for p in folder.iterdir() if p.name.startswith(".removing-v1-")]) == 1
    reopened = ModelRegistry(tmp_path, "phishing", KEY)
    assert reopened.versions("lr") == [2, 3, 4, 5]
    assert reopened.latest("lr") == 5
    for version in reopened.versions("lr"):
        assert reopened.load("lr", version)[1].version == version
    with pytest.raises(RegistryError, match="lr@1 is not in the registry"):
        reopened.load("lr", 1)
    assert reopened.prune("lr", keep=2) == [2, 3]
    assert sorted(p.name for p in folder.iterdir()) == ["LATEST", "v4", "v5"]


def test_discarded_versions_are_gone_and_their_numbers_never_come_back(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", KEY)
    _snapshots(registry, 5)
    registry.discard("lr", [4, 5])
    assert registry.versions("lr") == [1, 2, 3]
    assert registry.latest("lr") == 3
    assert _save(registry, _trained()).version == 6
    # Another process (a restarted worker) numbers past them too.
    reopened = ModelRegistry(tmp_path, "phishing", KEY)
    reopened.discard("lr", [6])
    assert ModelRegistry(tmp_path, "phishing", KEY).versions("lr") == [1, 2, 3]
    assert _save(ModelRegistry(tmp_path, "phishing", KEY), _trained()).version == 7
