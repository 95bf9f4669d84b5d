"""The learner learns the learning log as River learns the same inputs offline, in order."""

from __future__ import annotations

import random
from typing import Any

import pytest
from river import datasets, linear_model, preprocessing

from streams.messages import InMessage
from streams.models.learner import Learner
from streams.models.lifecycle import ModelLifecycle
from streams.models.records import LearningRecord, RecordWriter
from streams.models.registry import ModelRegistry
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import load_spec
from streams.state.checkpoint import CheckpointError

CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")
PHISHING = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
WRITER = RecordWriter(
    CATALOG,
    "phishing",
    predictions_topic="p.predictions",
    shadow_topic="p.predictions.shadow",
    alerts_topic="alerts",
    audit_topic="audit",
    learning_topic="p.learn",
)


def _log(n: int = 600, seed: int = 3) -> list[LearningRecord]:
    """Serving workers' appends: odd events get their label 30 events later; some records
    are appended twice (a serving worker's repeats after a crash)."""
    rng = random.Random(seed)
    rows = list(datasets.Phishing())[:n]
    log: list[LearningRecord] = []
    for i, (x, y) in enumerate(rows):
        labelled = i % 2 == 0
        log.append(
            LearningRecord(
                "VECTOR",
                f"e{i}",
                1_700_000_000_000 + i,
                f"p.raw:0:{i}",
                dict(x),
                y if labelled else None,
                "phishing-lr@1",
            )
        )
        if i >= 30 and (i - 30) % 2 == 1:
            j = i - 30
            log.append(LearningRecord("LABEL", f"e{j}", 0, f"p.labels:0:{j}", {}, rows[j][1]))
        if rng.random() < 0.05:
            log.append(log[-1])  # appended again
    return log


def _messages(log: list[LearningRecord]) -> list[InMessage]:
    return [
        InMessage("p.learn", 0, i, None, WRITER.learning(r, []).value, 0) for i, r in enumerate(log)
    ]


def _learner(tmp_path: Any) -> Learner:
    registry = ModelRegistry(tmp_path, "phishing", b"key")
    return Learner(
        PHISHING,
        CATALOG,
        learning_topic="p.learn",
        dlq_topic="dlq",
        lifecycle=ModelLifecycle(PHISHING, registry),
    )


def _offline(log: list[LearningRecord]) -> Any:
    """River learning the same inputs in the same order, each record once."""
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    waiting: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for r in log:
        if r.source in seen:
            continue
        seen.add(r.source)
        if r.kind == "VECTOR" and r.label is not None:
            model.learn_one(r.x, r.label)
        elif r.kind == "VECTOR":
            waiting[r.event_id] = r.x
        else:
            model.learn_one(waiting.pop(r.event_id), r.label)
    return model


def test_the_learner_learns_what_river_learns_offline_each_record_once(tmp_path) -> None:
    log = _log()
    learner = _learner(tmp_path)
    msgs = _messages(log)
    for start in range(0, len(msgs), 64):
        learner.process(msgs[start : start + 64])
    offline = _offline(log)
    unique = len({r.source for r in log})
    assert learner.repeats == len(log) - unique > 0
    assert learner.learning.model.samples_seen == 585  # the last 15 labels are still to come
    assert learner.position == len(log)
    for x, _ in list(datasets.Phishing())[600:700]:
        assert learner.learning.model.estimator.predict_proba_one(x) == pytest.approx(
            offline.predict_proba_one(x), abs=1e-12
        )


def test_a_restored_learner_continues_like_the_uninterrupted_one(tmp_path) -> None:
    msgs = _messages(_log())
    whole = _learner(tmp_path / "a")
    whole.learning.register_fresh()
    whole.process(msgs)
    first = _learner(tmp_path / "b")
    first.learning.register_fresh()
    first.process(msgs[:250])
    for served in first.lifecycle.served:
        first.learning.save(served, "checkpoint")
    state = first.state_bytes()
    second = _learner(tmp_path / "b")
    assert second.restore(state) == []
    second.process(msgs[200:])  # the consumer resumes at or before the checkpoint
    assert second.position == whole.position
    assert second.repeats == whole.repeats
    for x, _ in list(datasets.Phishing())[600:650]:
        assert second.learning.model.estimator.predict_proba_one(
            x
        ) == whole.learning.model.estimator.predict_proba_one(x)
    assert second.learning.model.metric_values() == whole.learning.model.metric_values()


def test_a_malformed_record_is_a_dead_letter_and_the_log_goes_on(tmp_path) -> None:
    msgs = _messages(_log(10))
    bad = InMessage("p.learn", 0, len(msgs), None, b"not avro", 0)
    learner = _learner(tmp_path)
    result = learner.process([*msgs, bad])
    assert dict(result.dead) == {"invalid_avro": 1}
    assert learner.position == len(msgs) + 1


def test_a_control_record_promotes_in_the_logs_order(tmp_path) -> None:
    import copy

    from streams.spec import parse_spec

    source = copy.deepcopy(PHISHING.source)
    source["shadow"] = [{"name": "nb", "steps": [{"estimator": "naive_bayes.GaussianNB"}]}]
    spec = parse_spec(source)
    registry = ModelRegistry(tmp_path, "phishing", b"key")
    learner = Learner(
        spec,
        CATALOG,
        learning_topic="p.learn",
        dlq_topic="dlq",
        lifecycle=ModelLifecycle(spec, registry),
    )
    learner.learning.register_fresh()
    control = LearningRecord(
        "CONTROL", "a1", 0, "alice", control={"action": "promote", "model": "nb", "why": "test"}
    )
    result = learner.process(_messages([*_log(20), control]))
    assert learner.lifecycle.champion.model.spec.name == "nb"
    assert [e.action for e in learner.learning.audits] == ["promote"]
    assert any(s.topic == "riverline.audit" for s in result.sends)


def test_another_format_is_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError):
        _learner(tmp_path).restore(b'{"format": "riverline.predict_state", "version": 2}')
