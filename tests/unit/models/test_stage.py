"""The predict stage without a broker: champion and shadows, delayed labels joined by id."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from river import datasets

from streams.features.stage import Vector
from streams.messages import InMessage, OutMessage
from streams.models.stage import Predictor
from streams.pipeline.lineage import Lineage
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object, encode_single_object
from streams.settings import REPO_ROOT
from streams.spec import PipelineSpec, load_spec, parse_spec
from streams.state.checkpoint import CheckpointError
from streams.store.outputs import score_predictions

PHISHING = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")


def _with_shadow() -> PipelineSpec:
    source = copy.deepcopy(PHISHING.source)
    source["shadow"] = [
        {"name": "nb", "steps": [{"estimator": "naive_bayes.GaussianNB"}]},
    ]
    return parse_spec(source)


def _vector(i: int, x: dict[str, Any], label: Any) -> Vector:
    """The feature vector of raw event ``i``, as the features stage hands it over."""
    schema = CATALOG.record("feature_vector")
    vector = {
        "event_id": f"e{i:05d}",
        "event_ts": 1_700_000_000_000 + i * 1000,
        "entity_key": "",
        "label": label,
        "values": dict(x),
    }
    lineage = Lineage(f"e{i:05d}", "phishing/v1/x", f"raw:0:{i}", "p@h", 0, 0, 0, "f@h")
    out = OutMessage("p.features", b"", encode_single_object(schema, vector), lineage.to_headers())
    raw = InMessage("raw", 0, i, b"", b"{}", 0, ())
    return Vector(raw, vector, lineage, out)


def _label(i: int, y: Any, avro: bool) -> InMessage:
    if avro:
        record = {"event_id": f"e{i:05d}", "label": y, "label_ts": 0}
        value = encode_single_object(CATALOG.record("label"), record)
    else:
        value = json.dumps({"event_id": f"e{i:05d}", "label": y}).encode()
    return InMessage("p.labels", 0, i, f"e{i:05d}".encode(), value, 0, ())


def _predictor(spec: PipelineSpec = PHISHING) -> Predictor:
    return Predictor(
        spec,
        CATALOG,
        predictions_topic="p.predictions",
        dlq_topic="dlq",
        labels_topic="p.labels",
        alerts_topic="alerts",
        audit_topic="audit",
    )


def _records(
    predictor: Predictor, batch: list[InMessage | Vector], topic: str
) -> list[dict[str, Any]]:
    result = predictor.process(batch)
    schema = CATALOG.record("prediction")
    return [
        decode_single_object(CATALOG, s.value, schema)[1] for s in result.sends if s.topic == topic
    ]


def test_delayed_labels_50_events_late_match_river_offline() -> None:
    predictor = _predictor()
    rows = list(datasets.Phishing())
    said: list[dict[str, Any]] = []
    for i, (x, _) in enumerate(rows):
        batch = [_vector(i, x, None)]
        if i >= 50:
            batch.insert(0, _label(i - 50, rows[i - 50][1], avro=i % 2 == 0))
        said += _records(predictor, batch, "p.predictions")
    for i, record in enumerate(said):
        record["label"] = rows[i][1]
    # River: progressive_val_score(Phishing, StandardScaler | LogisticRegression, delay=50)
    assert f"{score_predictions('binary', said)['accuracy']:.2%}" == "88.00%"
    assert predictor.join.joined == len(rows) - 50
    assert len(predictor.join) == 50


def test_labels_in_the_event_keep_the_undelayed_parity() -> None:
    predictor = _predictor()
    said = []
    for i, (x, y) in enumerate(datasets.Phishing()):
        said += _records(predictor, [_vector(i, x, y)], "p.predictions")
    assert f"{score_predictions('binary', said)['accuracy']:.2%}" == "89.28%"
    assert {r["model"] for r in said} == {"phishing-lr@1"}


def test_shadow_predictions_go_to_the_shadow_topic() -> None:
    predictor = _predictor(_with_shadow())
    x, y = next(iter(datasets.Phishing()))
    result = predictor.process([_vector(0, x, y)])
    topics = sorted((s.topic, s.headers[4][1].decode()) for s in result.sends)
    assert topics == [("p.predictions", "phishing-lr@1"), ("p.predictions.shadow", "nb@1")]


def test_bad_labels_are_dead_letters_and_late_labels_expire() -> None:
    predictor = _predictor()
    x, _ = next(iter(datasets.Phishing()))
    bad = InMessage("p.labels", 0, 0, b"k", b"{not json", 0, ())
    result = predictor.process([bad, _vector(0, x, None)])
    assert result.dead["bad_label"] == 1
    # Two days of event time later, the first prediction's label is too late.
    predictor.process([_vector(2 * 86_400, x, None)])
    assert predictor.join.expired == 1
    assert len(predictor.join) == 1  # only the second prediction waits


def _registered(tmp_path: Any) -> Predictor:
    from streams.models.lifecycle import ModelLifecycle
    from streams.models.registry import ModelRegistry

    registry = ModelRegistry(tmp_path, "phishing", b"key")
    return Predictor(
        PHISHING,
        CATALOG,
        predictions_topic="p.predictions",
        dlq_topic="dlq",
        labels_topic="p.labels",
        lifecycle=ModelLifecycle(PHISHING, registry),
    )


def _snapshot(predictor: Predictor) -> bytes:
    for served in predictor.lifecycle.served:
        predictor.save(served, "snapshot", {"p.features:0": 7})
    return predictor.state_bytes()


def test_a_restored_snapshot_continues_like_the_uninterrupted_model(tmp_path) -> None:
    rows = list(datasets.Phishing())
    first = _registered(tmp_path)
    first.register_fresh()
    for i, (x, _) in enumerate(rows[:600]):
        batch = [_vector(i, x, None)] + ([_label(i - 50, rows[i - 50][1], True)] if i >= 50 else [])
        first.process(batch)
    state = _snapshot(first)
    second = _registered(tmp_path)
    assert second.restore(state) == []
    assert second.model.label == first.model.label == "phishing-lr@2"
    assert len(second.join) == len(first.join) == 50
    for i, (x, _) in enumerate(rows[600:], start=600):
        batch = [_vector(i, x, None), _label(i - 50, rows[i - 50][1], False)]
        first.process(batch)
        second.process(batch)
    for x, _ in rows[:100]:
        assert second.model.estimator.predict_proba_one(
            x
        ) == first.model.estimator.predict_proba_one(x)
    assert second.model.metric_values() == first.model.metric_values()


def test_the_snapshot_state_is_json_data_not_a_pickle(tmp_path) -> None:
    rows = list(datasets.Phishing())
    first = _registered(tmp_path)
    first.register_fresh()
    for i, (x, _) in enumerate(rows[:80]):
        batch = [_vector(i, x, None)] + ([_label(i - 50, rows[i - 50][1], True)] if i >= 50 else [])
        first.process(batch)
    state = json.loads(_snapshot(first))
    assert state["format"] == "riverline.predict_state"
    assert [m["name"] for m in state["models"]] == ["phishing-lr"]
    assert set(state["models"][0]["metrics"]) == {"accuracy", "rocauc"}
    assert len(state["join"]["pending"]) == 50


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: b"\x80\x05" + s,  # a pickle's opcodes
        lambda s: s.replace(b'"riverline.predict_state"', b'"something else"'),
        lambda s: s.replace(b'"positions":{', b'"positions":[{', 1),
        lambda s: s.replace(b'"kind":"ROCAUC"', b'"kind":"Pickled"'),
    ],
)
def test_a_malformed_state_is_refused_and_changes_nothing(tmp_path, damage) -> None:
    rows = list(datasets.Phishing())
    first = _registered(tmp_path)
    first.register_fresh()
    for i, (x, y) in enumerate(rows[:20]):
        first.process([_vector(i, x, y)])
    state = _snapshot(first)
    second = _registered(tmp_path)
    second.register_fresh()
    before = second.model.label
    with pytest.raises(CheckpointError):
        second.restore(damage(state))
    assert second.model.label == before
    assert second.model.samples_seen == 0


def test_a_prepared_snapshot_restores_its_versions_and_predictions_keep_the_written_one(
    tmp_path,
) -> None:
    """One-pass writes a snapshot after the next batches ran (agents.onepass): until its
    version is on disk, predictions name the version that is."""
    rows = list(datasets.Phishing())
    first = _registered(tmp_path)
    first.register_fresh()  # phishing-lr@1
    for i, (x, y) in enumerate(rows[:100]):
        first.process([_vector(i, x, y)])
    served = first.lifecycle.champion
    pending = first.prepare(served, "snapshot", {"p.features:0": 100})
    state = first.state_bytes({pending.manifest.name: pending.manifest.version})
    (record,) = _records(first, [_vector(100, rows[100][0], rows[100][1])], "p.predictions")
    assert record["model"] == "phishing-lr@1"  # v2 is prepared, not written
    first.lifecycle.registry.write(pending)
    second = _registered(tmp_path)
    assert second.restore(state) == []
    assert second.model.label == "phishing-lr@2"
    assert second.model.samples_seen == 100  # as prepared, not the 101 learned since


def test_a_tampered_snapshot_is_refused_for_the_previous_verified_version(tmp_path) -> None:
    rows = list(datasets.Phishing())
    first = _registered(tmp_path)
    first.register_fresh()  # phishing-lr@1
    for i, (x, y) in enumerate(rows[:100]):
        first.process([_vector(i, x, y)])
    state = _snapshot(first)  # phishing-lr@2
    artifact = tmp_path / "phishing" / "phishing-lr" / "v2" / "artifact.pkl"
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"\x00")
    second = _registered(tmp_path)
    alerts = second.restore(state)
    assert [a.kind for a in alerts] == ["integrity"]
    assert "does not match the sha256" in alerts[0].message
    assert "previous verified version phishing-lr@1" in alerts[0].message
    assert second.model.label == "phishing-lr@1"
    assert second.model.samples_seen == 0


def test_drift_sends_an_alert_and_applies_the_spec_action() -> None:
    source = copy.deepcopy(PHISHING.source)
    source["drift"] = {"action": "reset"}
    predictor = _predictor(parse_spec(source))
    rows = list(datasets.Phishing())
    # The concept flips after the first pass: every label is inverted.
    stream = [(x, y) for x, y in rows] + [(x, not y) for x, y in rows]
    sends = []
    for i, (x, y) in enumerate(stream):
        sends += predictor.process([_vector(i, x, y)]).sends
    alerts = [
        decode_single_object(CATALOG, s.value, CATALOG.record("alert"))[1]
        for s in sends
        if s.topic == "alerts"
    ]
    audits = [
        decode_single_object(CATALOG, s.value, CATALOG.record("audit"))[1]
        for s in sends
        if s.topic == "audit"
    ]
    assert alerts
    assert alerts[0]["kind"] == "drift"
    assert alerts[0]["model"].startswith("phishing-lr@")
    assert "action: reset" in alerts[0]["message"]
    assert audits[0]["action"] == "reset"
    assert audits[0]["actor"] == "worker:drift"


def test_tracked_labels_skip_what_was_taken_but_not_a_transactions_gap() -> None:
    """With tracking, a P.labels message below its partition's position was taken already
    (a repeat after a restore) and is skipped; one above it is taken: users may write
    P.labels with transactions, whose markers take offsets."""
    predictor = _predictor()
    predictor.tracking = True
    predictor.positions = {"p.labels:0": 1}
    rows = list(datasets.Phishing())[:3]
    predictor.process([_vector(i, rows[i][0], None) for i in range(3)])
    predictor.process([_label(0, True, avro=True)])  # offset 0: taken before the restore
    assert predictor.join.joined == 0
    assert predictor.skipped == 1
    predictor.process([_label(2, True, avro=True)])  # offset 2 after 1: a marker's gap
    assert predictor.positions["p.labels:0"] == 3
    assert predictor.join.joined == 1
    predictor.process([_label(1, True, avro=True)])  # below the position again
    assert predictor.join.joined == 1
