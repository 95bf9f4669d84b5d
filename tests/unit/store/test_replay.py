from __future__ import annotations

from streams.models.model import OnlineModel
from streams.models.registry import ModelRegistry
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec
from streams.store.replay import Difference, compare_predictions, estimator_sha256, live_model_hash

SPEC = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")


def _record(eid: str, prediction: bool = True, p: float = 0.75, model: str = "m@1") -> dict:
    return {
        "event_id": eid,
        "prediction": prediction,
        "proba": {"True": p, "False": 1 - p},
        "model": model,
    }


def test_identical_runs_compare_every_prediction() -> None:
    live = {e: _record(e) for e in "abc"}
    replayed = [_record(e, model="m@7") for e in "abc"]  # versions may differ, names not
    assert compare_predictions(live, replayed) == (3, None)


def test_the_first_difference_is_reported() -> None:
    live = {e: _record(e) for e in "abcd"}
    replayed = [_record("a"), _record("b", p=0.7500001), _record("c", prediction=False)]
    compared, diff = compare_predictions(live, replayed)
    assert compared == 1
    assert diff == Difference("b", "proba", live["b"]["proba"], replayed[1]["proba"])
    assert "event b: proba live=" in str(diff)


def test_missing_predictions_on_either_side_are_differences() -> None:
    live = {e: _record(e) for e in "ab"}
    assert compare_predictions(live, [_record("a")])[1] == Difference(
        "b", "no replayed prediction", True, None
    )
    assert compare_predictions({}, [_record("a")])[1] == Difference(
        "a", "no live prediction", None, True
    )


def test_the_same_learning_gives_the_same_model_hash() -> None:
    a, b = OnlineModel(SPEC.model), OnlineModel(SPEC.model)
    for model in (a, b):
        for i in range(20):
            x = {"https": float(i % 3), "long_url": float(i % 2)}
            model.learn(x, i % 2 == 0, model.predict(x))
    assert estimator_sha256(a.estimator) == estimator_sha256(b.estimator)
    b.learn({"https": 1.0}, True, b.predict({"https": 1.0}))
    assert estimator_sha256(a.estimator) != estimator_sha256(b.estimator)


def test_the_live_hash_is_only_a_final_snapshot_of_the_same_spec(tmp_path) -> None:
    settings = Settings(home=tmp_path)
    key = settings.signing_key_bytes()
    registry = ModelRegistry(settings.registry_dir, SPEC.name, key)
    name = SPEC.model.name
    assert live_model_hash(settings, SPEC, name, 10)[0] is None
    model = OnlineModel(SPEC.model)
    common = {"parent": None, "offsets": {}, "metrics": {}, "note": "snapshot"}
    registry.save(name, model.estimator, samples_seen=0, spec_hash=SPEC.hash, **common)
    sha, why = live_model_hash(settings, SPEC, name, 10)
    assert sha is None
    assert "has seen 0 samples" in why
    saved = registry.save(name, model.estimator, samples_seen=10, spec_hash=SPEC.hash, **common)
    assert live_model_hash(settings, SPEC, name, 10)[0] == saved.sha256
    registry.save(name, model.estimator, samples_seen=10, spec_hash="other", **common)
    sha, why = live_model_hash(settings, SPEC, name, 10)
    assert sha is None
    assert "made by spec other" in why
