from __future__ import annotations

import copy

import pytest
from river import datasets

from streams.models.lifecycle import LifecycleError, ModelLifecycle
from streams.models.registry import ModelRegistry
from streams.settings import REPO_ROOT
from streams.spec import PipelineSpec, load_spec, parse_spec

PHISHING = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")


def _spec(promotion: dict | None = None, drift: dict | None = None) -> PipelineSpec:
    source = copy.deepcopy(PHISHING.source)
    # A weak champion (no scaling, a tiny learning rate) and a strong shadow.
    source["model"]["name"] = "weak"
    source["model"]["steps"] = [
        {"estimator": "linear_model.LogisticRegression", "params": {"l2": 1.0}},
    ]
    source["shadow"] = [
        {
            "name": "strong",
            "steps": [
                {"estimator": "preprocessing.StandardScaler"},
                {"estimator": "linear_model.LogisticRegression"},
            ],
        }
    ]
    if promotion is not None:
        source["promotion"] = promotion
    if drift is not None:
        source["drift"] = drift
    return parse_spec(source)


def _run(lifecycle: ModelLifecycle, rows) -> list:
    audits = []
    for x, y in rows:
        said = lifecycle.predict(x)
        _, new_audits = lifecycle.learn(x, y, said)
        audits += new_audits
    return audits


def test_champion_predicts_first_and_shadows_follow() -> None:
    lifecycle = ModelLifecycle(_spec())
    x, _ = next(iter(datasets.Phishing()))
    said = lifecycle.predict(x)
    assert [s.label for s, _ in said] == ["weak@1", "strong@1"]
    assert [s.stage for s in lifecycle.served] == ["champion", "shadow"]


def test_policy_promotes_the_shadow_that_beats_the_champion(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", b"k")
    lifecycle = ModelLifecycle(_spec({"window": 200, "margin": 0.02}), registry)
    audits = _run(lifecycle, datasets.Phishing())
    assert audits, "the strong shadow was never promoted"
    first = audits[0]
    assert (first.who, first.action, first.model) == ("policy", "promote", "strong")
    assert first.before == "weak@1"
    assert first.after == "strong@1"
    assert "beat weak@1" in first.why
    assert lifecycle.champion.model.spec.name == "strong"
    # Written later, off the batch path (before any prediction naming it is sent).
    assert registry.versions("strong") == []
    assert [m.label for m in lifecycle.write_pending()] == ["strong@1"]
    assert registry.versions("strong") == [1]


def test_rollback_brings_back_the_previous_champion_as_a_new_version(tmp_path) -> None:
    registry = ModelRegistry(tmp_path, "phishing", b"k")
    lifecycle = ModelLifecycle(_spec(), registry)
    rows = list(datasets.Phishing())
    _run(lifecycle, rows[:300])
    lifecycle.snapshot({"phishing.features:0": 300})  # weak@1, strong@1
    promoted = lifecycle.promote("strong", "alice", "looks better")
    assert promoted.after == "strong@2"
    audit = lifecycle.rollback("bob", "customers complained")
    assert (audit.who, audit.action, audit.before) == ("bob", "rollback", "strong@2")
    assert lifecycle.champion.model.spec.name == "weak"
    assert lifecycle.champion.label == "weak@2"
    lifecycle.write_pending()
    manifest = registry.manifest("weak", 2)
    assert manifest.parent == 1
    assert "rollback to weak@1 by bob" in manifest.note


def test_unknown_model_and_empty_history_are_clear_errors() -> None:
    lifecycle = ModelLifecycle(_spec())
    with pytest.raises(LifecycleError, match=r"no model 'x'.*models: weak, strong"):
        lifecycle.promote("x", "alice", "")
    with pytest.raises(LifecycleError, match="already the champion"):
        lifecycle.promote("weak", "alice", "")
    with pytest.raises(LifecycleError, match="no earlier champion"):
        lifecycle.rollback("alice", "")


def test_drift_on_the_champion_raises_an_alert_and_resets_it() -> None:
    source = copy.deepcopy(PHISHING.source)
    source["model"]["steps"] = [{"estimator": "tree.HoeffdingTreeClassifier"}]
    source["model"]["inputs"] = []  # all features of the Agrawal rows
    source["drift"] = {"action": "reset"}
    spec = parse_spec(source)
    lifecycle = ModelLifecycle(spec)
    stream = datasets.synth.ConceptDriftStream(
        stream=datasets.synth.Agrawal(classification_function=0, seed=42),
        drift_stream=datasets.synth.Agrawal(classification_function=4, seed=42),
        seed=1,
        position=10_000,
        width=1_000,
    )
    alerts, audits = [], []
    for i, (x, y) in enumerate(stream.take(11_000)):
        said = lifecycle.predict(x)
        a, b = lifecycle.learn(x, y, said)
        alerts += [(i, alert) for alert in a]
        audits += b
    assert alerts
    first_at, first = alerts[0]
    assert 9_500 <= first_at <= 11_000
    assert first.kind == "drift"
    assert "action: reset" in first.message
    assert audits[0].action == "reset"
    assert lifecycle.champion.model.version > 1
