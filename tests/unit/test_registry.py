from __future__ import annotations

import json
import pickle

import pytest
from river import datasets, linear_model, preprocessing

from streams.registry import ArtifactIntegrityError, ModelRegistry, RegistryError

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
