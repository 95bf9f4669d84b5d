from __future__ import annotations

import json

import pytest

from streams.features.stage import Featurization
from streams.models.learning import load_verified
from streams.models.model import OnlineModel
from streams.models.registry import ModelRegistry
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import load_spec, parse_spec
from streams.state.checkpoint import CheckpointError

SPEC = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")


def _changed(**features: object):
    source = json.loads(json.dumps(SPEC.source))
    source["features"]["derived"][0].update(features)
    return parse_spec(source)


def _save(registry: ModelRegistry, spec_hash: str) -> None:
    model = OnlineModel(SPEC.model)
    registry.save(
        SPEC.model.name,
        model.estimator,
        parent=None,
        offsets={},
        samples_seen=0,
        metrics={},
        spec_hash=spec_hash,
    )


def test_a_changed_spec_has_another_hash_and_feature_set() -> None:
    changed = _changed(half_life=30.0)
    assert changed.hash != SPEC.hash
    old = Featurization(SPEC, CATALOG, features_topic="f", dlq_topic="d")
    new = Featurization(changed, CATALOG, features_topic="f", dlq_topic="d")
    assert old.feature_set.label != new.feature_set.label
    assert old.feature_set.label.split("@")[0] == new.feature_set.label.split("@")[0]


def test_a_feature_checkpoint_of_the_old_spec_is_refused() -> None:
    old = Featurization(SPEC, CATALOG, features_topic="f", dlq_topic="d")
    old.start(0)
    new = Featurization(_changed(half_life=30.0), CATALOG, features_topic="f", dlq_topic="d")
    with pytest.raises(CheckpointError, match=r"the \[features\] table changed"):
        new.restore(old.checkpoint(0))


def test_a_model_continues_only_under_its_own_spec(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, SPEC.name, b"k")
    load = load_verified
    loaded, problems = load(registry, SPEC.model.name, 1, SPEC.hash)
    assert loaded is None
    _save(registry, SPEC.hash)
    loaded, problems = load(registry, SPEC.model.name, 1, SPEC.hash)
    assert loaded is not None
    assert (loaded[1].version, problems) == (1, [])
    changed = _changed(half_life=30.0)
    loaded, problems = load(registry, SPEC.model.name, 1, changed.hash)
    assert loaded is None
    assert problems == [f"{SPEC.model.name}@1 was made by another spec."]
