"""Featurization: per-partition state, checkpoint/restore, replays, late events (no broker)."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from kit import featurize_events

from streams.errors import SpecError
from streams.features.engine import FeatureSet, warm_up
from streams.features.stage import Featurization
from streams.ingestion.stage import Ingestion
from streams.messages import InMessage
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import REPO_ROOT
from streams.spec import PipelineSpec, parse_spec
from streams.state.checkpoint import Checkpoint, CheckpointError

SCHEMA = {
    "type": "record",
    "name": "CardEvent",
    "namespace": "riverline.cards",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "card", "type": "string"},
        {"name": "amount", "type": "double"},
    ],
}

FEATURES: dict[str, Any] = {
    "name": "card_features",
    "derived": [
        {"name": "mean", "kind": "window_mean", "field": "amount", "window": 60.0},
        {"name": "ewm", "kind": "ewm_mean", "field": "amount", "half_life": 30.0},
        {"name": "gap", "kind": "since_last"},
        {"name": "z", "kind": "zscore", "field": "amount"},
    ],
}


def _spec(**features: Any) -> PipelineSpec:
    source = {
        "pipeline": {"name": "cards", "subject": "cards", "partitions": 2, "key_field": "card"},
        "features": {**FEATURES, **features},
        "model": {
            "name": "m",
            "task": "regression",
            "target": "",
            "inputs": ["amount"],
            "steps": [{"estimator": "linear_model.LinearRegression"}],
        },
    }
    return parse_spec(json.loads(json.dumps(source)))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> SchemaCatalog:
    warm_up()
    root = Path(tmp_path_factory.mktemp("schemas"))
    shutil.copytree(REPO_ROOT / "schemas" / "riverline", root / "riverline")
    (root / "cards").mkdir()
    (root / "cards" / "v1.avsc").write_text(json.dumps(SCHEMA))
    return SchemaCatalog.load(root)


def _events(
    catalog: SchemaCatalog, spec: PipelineSpec, rows: list[tuple[str, float, float]]
) -> list[InMessage]:
    """P.events messages (partition 0, offsets 0..) for (card, seconds, amount) rows."""
    ingest = Ingestion(
        spec, catalog, events_topic="cards.events", dlq_topic="dlq", max_bytes=1 << 20
    )
    raw = [
        InMessage(
            "cards.raw",
            0,
            i,
            card.encode(),
            json.dumps(
                {"event_id": f"e{i}", "event_time": int(t * 1000), "card": card, "amount": a}
            ).encode(),
            0,
        )
        for i, (card, t, a) in enumerate(rows)
    ]
    sent = ingest.process(raw).sends
    return [
        InMessage("cards.events", 0, i, m.key, m.value, 0, tuple(m.headers))
        for i, m in enumerate(sent)
    ]


ROWS = [(f"c{i % 3}", 1000.0 + i * 7.0, float(i % 5) + 0.5) for i in range(40)]


def _stage(catalog: SchemaCatalog, spec: PipelineSpec, **kw: Any) -> Featurization:
    return Featurization(spec, catalog, features_topic="cards.features", dlq_topic="dlq", **kw)


def _values(catalog: SchemaCatalog, stage: Featurization, batch: list[InMessage]) -> list[Any]:
    schema = catalog.record("feature_vector")
    out = []
    for m in featurize_events(catalog, stage, batch).sends:
        if m.topic == "dlq":
            continue
        _, v = decode_single_object(catalog, m.value, schema)
        out.append((v["event_id"], v["values"]))
    return out


def test_a_checkpoint_taken_now_and_serialized_later_is_the_state_it_was_taken_at(
    catalog: SchemaCatalog,
) -> None:
    """A worker takes a checkpoint between batches and zips it in a thread while the next
    batches change the state (agents.checkpoints)."""
    spec = _spec()
    events = _events(catalog, spec, ROWS)
    stage = _stage(catalog, spec)
    _values(catalog, stage, events[:17])
    now = stage.checkpoint(0)
    later = stage.checkpoint_later(0)
    _values(catalog, stage, events[17:])  # the state and the offset move on
    built = later()
    assert (built.offset, built.state) == (now.offset, now.state)
    assert stage.checkpoint(0).state != now.state


def test_restored_checkpoint_continues_like_an_uninterrupted_run(catalog: SchemaCatalog) -> None:
    spec = _spec()
    events = _events(catalog, spec, ROWS)
    whole = _values(catalog, _stage(catalog, spec), events)

    first = _stage(catalog, spec)
    before = _values(catalog, first, events[:17])
    cp = Checkpoint.from_bytes(first.checkpoint(0).to_bytes())
    assert cp.offset == 17

    again = _stage(catalog, spec, hold_new_partitions=False)
    again.restore(cp)
    # The consumer resumes at or before the checkpoint: replayed events are skipped.
    after = _values(catalog, again, events[10:25]) + _values(catalog, again, events[25:])
    assert before + after == whole
    assert again.replayed == 7


def test_partitions_not_held_produce_nothing(catalog: SchemaCatalog) -> None:
    spec = _spec()
    stage = _stage(catalog, spec, hold_new_partitions=False)
    assert _values(catalog, stage, _events(catalog, spec, ROWS[:5])) == []
    assert stage.unowned == 5
    stage.start(0)
    assert len(_values(catalog, stage, _events(catalog, spec, ROWS[:5]))) == 5
    stage.release(0)
    assert stage.positions() == {}


def test_a_checkpoint_of_another_feature_set_is_refused(catalog: SchemaCatalog) -> None:
    other = _stage(catalog, _spec(name="other_features"))
    other.start(0)
    stage = _stage(catalog, _spec(), hold_new_partitions=False)
    with pytest.raises(CheckpointError, match="feature set other_features@"):
        stage.restore(other.checkpoint(0))
    assert stage.positions() == {}


LATE_ROWS = [("a", 100.0, 1.0), ("a", 200.0, 2.0), ("a", 189.0, 3.0), ("a", 191.0, 4.0)]


def test_late_events_go_to_the_dead_letter_topic(catalog: SchemaCatalog) -> None:
    spec = _spec(allowed_lateness=10, late_policy="dead_letter")
    events = _events(catalog, spec, LATE_ROWS)
    result = featurize_events(catalog, _stage(catalog, spec), events)
    assert result.ok == 3
    assert dict(result.dead) == {"late": 1}
    (dead,) = [m for m in result.sends if m.topic == "dlq"]
    headers = dict(dead.headers)
    assert headers["rl.error.class"] == b"late"
    assert headers["rl.error.stage"] == b"features"
    assert headers["rl.error.offset"] == b"2"
    assert dead.value == events[2].value
    assert dead.key == events[2].key


def test_late_events_change_no_state(catalog: SchemaCatalog) -> None:
    spec = _spec(allowed_lateness=10, late_policy="dead_letter")
    events = _events(catalog, spec, LATE_ROWS)
    got = dict(_values(catalog, _stage(catalog, spec), events))
    without = [
        InMessage(m.topic, 0, i, m.key, m.value, 0, m.headers)
        for i, m in enumerate([events[0], events[1], events[3]])
    ]
    assert got == dict(_values(catalog, _stage(catalog, spec), without))


def test_late_events_are_computed_with_the_process_policy(catalog: SchemaCatalog) -> None:
    spec = _spec(allowed_lateness=10, late_policy="process")
    result = featurize_events(catalog, _stage(catalog, spec), _events(catalog, spec, LATE_ROWS))
    assert result.ok == 4
    assert not result.dead


# --------------------------------------------------------------------------------------
# The [features] lateness keys
# --------------------------------------------------------------------------------------


def test_lateness_is_part_of_the_feature_set_hash() -> None:
    plain = FeatureSet.from_spec(FEATURES)
    late = FeatureSet.from_spec({**FEATURES, "allowed_lateness": 10, "late_policy": "dead_letter"})
    process = FeatureSet.from_spec({**FEATURES, "allowed_lateness": 10})
    assert len({plain.hash, late.hash, process.hash}) == 3
    assert late.to_spec()["allowed_lateness"] == 10.0
    assert "allowed_lateness" not in plain.to_spec()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"allowed_lateness": -1}, "allowed_lateness must be seconds >= 0"),
        ({"allowed_lateness": "5s"}, "allowed_lateness must be seconds >= 0"),
        ({"allowed_lateness": True}, "allowed_lateness must be seconds >= 0"),
        ({"allowed_lateness": 5, "late_policy": "drop"}, "late_policy must be one of"),
        ({"late_policy": "dead_letter"}, "needs allowed_lateness"),
    ],
)
def test_bad_lateness(section: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        FeatureSet.from_spec({**FEATURES, **section})


def test_lateness_in_a_toml_spec() -> None:
    text = """
    [features]
    name = "f"
    allowed_lateness = 30.0     # seconds of event time
    late_policy = "dead_letter"
    """
    fs = FeatureSet.from_spec(tomllib.loads(text)["features"])
    assert (fs.allowed_lateness, fs.late_policy, fs.drops_late) == (30.0, "dead_letter", True)
