from __future__ import annotations

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

from streams.errors import SpecError
from streams.models.model import OnlineModel, build_estimator
from streams.settings import REPO_ROOT
from streams.spec import ModelSpec, load_spec


def test_phishing_model_matches_progressive_val_score() -> None:
    spec = load_spec(REPO_ROOT / "pipelines" / "phishing.toml").model
    model = OnlineModel(spec)
    for x, y in datasets.Phishing():
        model.learn(x, y, model.predict(x))
    reference = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    accuracy = evaluate.progressive_val_score(datasets.Phishing(), reference, metrics.Accuracy())
    assert model.metric_values()["accuracy"] == pytest.approx(accuracy.get())
    assert f"{model.metric_values()['accuracy']:.2%}" == "89.28%"
    assert f"{model.metric_values()['rocauc']:.2%}" == "95.07%"
    assert model.samples_seen == 1250
    assert model.label == "phishing-lr@1"


def _spec(*steps: dict) -> ModelSpec:
    return ModelSpec("m", "binary", "y", ("a",), tuple(steps))


def test_unknown_estimator_lists_the_valid_ones() -> None:
    with pytest.raises(SpecError, match=r"unknown estimator 'os\.system'.*linear_model"):
        build_estimator(_spec({"estimator": "os.system"}))


def test_unknown_parameter_lists_the_valid_ones() -> None:
    step = {"estimator": "linear_model.LogisticRegression", "params": {"lr": 1}}
    with pytest.raises(SpecError, match=r"has no parameter 'lr'.*optimizer"):
        build_estimator(_spec(step))


def test_non_scalar_parameter_is_refused() -> None:
    with pytest.raises(SpecError, match="must be a number"):
        build_estimator(
            _spec({"estimator": "tree.HoeffdingTreeClassifier", "params": {"grace_period": [1]}})
        )


def test_predicting_does_not_learn() -> None:
    model = OnlineModel(_spec({"estimator": "linear_model.LogisticRegression"}))
    first = model.predict({"a": 1.0})
    model.predict({"a": 1.0})
    assert model.predict({"a": 1.0}) == first
    assert model.samples_seen == 0
