"""One pass (streams.pipeline.onepass) against the staged stages, without a broker.

The one-pass topology must write what the staged one writes: the same events, feature
vectors and predictions, byte for byte but for the wall-clock fields (ingest and predict
times). Its state follows the raw offsets, dead letters included.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.events import bench_events, event_keys
from streams.errors import FeatureError
from streams.features.stage import Featurization
from streams.ingestion.stage import Ingestion
from streams.messages import InMessage, OutMessage
from streams.models.stage import Predictor
from streams.pipeline.onepass import OnePass
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import REPO_ROOT
from streams.spec import PipelineSpec, load_spec, parse_spec

CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")
TRANSACTIONS = load_spec(REPO_ROOT / "pipelines" / "transactions.toml")
PHISHING = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
#: Wall-clock fields: the only ones allowed to differ between two runs.
_CLOCK = {"ingest_ts", "predict_ts"}


def _stages(
    spec: PipelineSpec, max_id_bytes: int = 1024
) -> tuple[Ingestion, Featurization, Predictor]:
    t = spec.topics("")
    return (
        Ingestion(
            spec,
            CATALOG,
            events_topic=t.events,
            dlq_topic="dlq",
            max_bytes=1 << 20,
            max_id_bytes=max_id_bytes,
        ),
        Featurization(spec, CATALOG, features_topic=t.features, dlq_topic="dlq"),
        Predictor(
            spec, CATALOG, predictions_topic=t.predictions, dlq_topic="dlq", labels_topic=t.labels
        ),
    )


def _key(spec: PipelineSpec, value: bytes) -> bytes:
    try:
        return event_keys(spec, [value])[0]
    except (ValueError, KeyError):  # the malformed events of a test
        return b"k"


def _raw(spec: PipelineSpec, values: list[bytes]) -> list[InMessage]:
    raw = spec.topics("").raw
    return [InMessage(raw, 0, i, _key(spec, v), v, 1_000 + i) for i, v in enumerate(values)]


def _comparable(sends: list[OutMessage]) -> list[tuple[Any, ...]]:
    out = []
    for o in sends:
        headers = [(k, v) for k, v in o.headers if k != "rl.ingest_ts"]
        body: Any = o.value
        if o.value[:2] == b"\xc3\x01":
            record = decode_single_object(CATALOG, o.value)[1]
            body = {k: v for k, v in record.items() if k not in _CLOCK}
        out.append((o.topic, o.key, repr(body), headers))
    return out


def _one_pass(spec: PipelineSpec) -> OnePass:
    return OnePass(*_stages(spec), raw_topic=spec.topics("").raw)


def test_dead_letters_keep_every_raw_offset_accounted_for_and_the_state_moving() -> None:
    spec = TRANSACTIONS
    good = bench_events(spec, 6, "dl", 0)
    values = [good[0], b"{not json", good[1], json.dumps({"event_id": "x"}).encode(), *good[2:]]
    one = _one_pass(spec)
    result = one.process(_raw(spec, values))
    t = spec.topics("")
    by_topic: dict[str, list[OutMessage]] = {}
    for s in result.sends:
        by_topic.setdefault(s.topic, []).append(s)
    assert len(by_topic[t.events]) == 6
    assert len(by_topic["dlq"]) == 2
    assert len(by_topic[t.predictions]) == 6
    dead = {dict(s.headers)["rl.error.offset"] for s in by_topic["dlq"]}
    assert dead == {b"1", b"3"}
    assert one.counts["ingest"].ok == 6
    assert sum(one.counts["ingest"].dead.values()) == 2
    assert one.counts["features"].ok == 6
    assert one.counts["predict"].ok == 6
    # Both halves of the state are at the next raw offset, past the dead letters.
    assert one.featurization.positions() == {0: 8}
    assert one.predictor.positions == {f"{t.raw}:0": 8}


def test_events_the_models_learned_are_featurized_again_but_not_predicted_again() -> None:
    """After a crash between the models' snapshot and the features' checkpoint."""
    spec = TRANSACTIONS
    raw = _raw(spec, bench_events(spec, 10, "re", 0))
    one = _one_pass(spec)
    one.featurization.start(0, 0)
    one.predictor.positions[f"{spec.topics('').raw}:0"] = 4  # the models learned 0..3
    result = one.process(raw)
    t = spec.topics("")
    assert sum(s.topic == t.features for s in result.sends) == 10
    predicted = [
        decode_single_object(CATALOG, s.value)[1]["source"]
        for s in result.sends
        if s.topic == t.predictions
    ]
    assert predicted == [f"{t.raw}:0:{i}" for i in range(4, 10)]
    # Raw offsets already reflected by the feature state are skipped as repeats.
    again = one.process(raw[:3])
    assert again.sends == []
    assert one.featurization.replayed == 3


def test_a_late_event_is_a_features_dead_letter_of_its_raw_message_with_its_lineage() -> None:
    spec = load_spec(REPO_ROOT / "pipelines" / "transactions.toml")
    source = dict(spec.source)
    source["features"] = {**spec.features, "allowed_lateness": 60.0, "late_policy": "dead_letter"}
    late_spec = parse_spec(source)
    values = bench_events(late_spec, 3, "late", 0)
    first, second = json.loads(values[0]), json.loads(values[1])
    second["card_id"] = first["card_id"]
    second["event_time"] = first["event_time"] - 3_600_000  # an hour before the card's last
    raw = _raw(late_spec, [values[0], json.dumps(second).encode()])
    one = _one_pass(late_spec)
    result = one.process(raw)
    dead = [s for s in result.sends if s.topic == "dlq"]
    assert len(dead) == 1
    headers = dict(dead[0].headers)
    assert headers["rl.error.stage"] == b"features"
    assert headers["rl.error.class"] == b"late"
    assert headers["rl.error.topic"] == late_spec.topics("").raw.encode()
    assert headers["rl.error.offset"] == b"1"
    assert headers["rl.event_id"] == second["event_id"].encode()
    assert dead[0].value == raw[1].value  # the original bytes
    assert one.counts["features"].dead == {"late": 1}


# --------------------------------------------------------------------------------------
# One bad message never costs another
# --------------------------------------------------------------------------------------


def _fates(spec: PipelineSpec, sends: list[OutMessage]) -> dict[int, list[str]]:
    """Raw offset -> the topics its messages went to (dead letters as ``dlq:<stage>``)."""
    t = spec.topics("")
    fates: dict[int, list[str]] = {}
    for s in sends:
        headers = dict(s.headers)
        if s.topic == "dlq":
            offset = int(headers["rl.error.offset"])
            fates.setdefault(offset, []).append(f"dlq:{headers['rl.error.stage'].decode()}")
        elif s.topic in (t.events, t.features, t.predictions):
            offset = int(headers["rl.source"].decode().rsplit(":", 1)[1])
            fates.setdefault(offset, []).append(s.topic.rsplit(".", 1)[1])
    return fates


def _vectors(spec: PipelineSpec, sends: list[OutMessage]) -> dict[str, dict[str, Any]]:
    t = spec.topics("")
    schema = CATALOG.record("feature_vector")
    out = {}
    for s in sends:
        if s.topic == t.features:
            vector = decode_single_object(CATALOG, s.value, schema)[1]
            out[vector["event_id"]] = vector["values"]
    return out


def _fail_for(one: OnePass, stage: str, bad_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make handling the event ``bad_id`` raise in ``stage``, and only that event."""
    if stage == "ingest":
        decode = one.ingestion.decoder.decode

        def refuse(key: bytes | None, value: bytes | None, **kwargs: Any) -> Any:
            if bad_id.encode() in (value or b""):
                raise RuntimeError("decoder fault")
            return decode(key, value, **kwargs)

        monkeypatch.setattr(one.ingestion.decoder, "decode", refuse)
    elif stage == "features":
        fs = one.featurization.feature_set
        check = fs.check_inputs

        def refuse_features(values: Any) -> None:
            if values["amount"] == -1.0:
                raise FeatureError("amount -1.0 refused")
            check(values)

        monkeypatch.setattr(fs, "check_inputs", refuse_features)
    else:
        predict = one.predictor.lifecycle.predict

        def refuse_predict(x: dict[str, Any]) -> Any:
            if x.get("amount") == -1.0:
                raise ValueError("model fault")
            return predict(x)

        monkeypatch.setattr(one.predictor.lifecycle, "predict", refuse_predict)


@pytest.mark.parametrize("stage", ["ingest", "features", "predict"])
def test_a_failure_in_any_stage_makes_one_dead_letter_and_costs_no_other(
    stage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = TRANSACTIONS
    values = [json.loads(v) for v in bench_events(spec, 9, "iso", 0)]
    values[4]["amount"] = -1.0
    bad_id = values[4]["event_id"]
    raw = _raw(spec, [json.dumps(v).encode() for v in values])
    one = _one_pass(spec)
    _fail_for(one, stage, bad_id, monkeypatch)
    result = one.process(raw)
    fates = _fates(spec, result.sends)
    assert fates.pop(4) == [f"dlq:{stage}"]
    assert fates == {i: ["events", "features", "predictions"] for i in range(9) if i != 4}
    (dead,) = [s for s in result.sends if s.topic == "dlq"]
    headers = dict(dead.headers)
    assert dead.value == raw[4].value
    if stage == "features":
        assert headers["rl.error.class"] == b"bad_feature_input"
    else:
        assert headers["rl.error.class"] == b"stage_error"
        assert headers["rl.error.exception"] in (b"RuntimeError", b"ValueError")
    assert one.counts[stage].dead == {headers["rl.error.class"].decode(): 1}
    assert one.featurization.positions() == {0: 9}
    # The others' features are those of a run without the bad event (with it, when it
    # failed after its features were computed).
    kept = values if stage == "predict" else values[:4] + values[5:]
    reference = _one_pass(spec).process(_raw(spec, [json.dumps(v).encode() for v in kept]))
    expected = _vectors(spec, reference.sends)
    expected.pop(bad_id, None)
    assert _vectors(spec, result.sends) == expected


def test_a_late_event_has_no_outputs_only_its_dead_letter() -> None:
    spec = TRANSACTIONS
    source = dict(spec.source)
    source["features"] = {**spec.features, "allowed_lateness": 60.0, "late_policy": "dead_letter"}
    late_spec = parse_spec(source)
    values = [json.loads(v) for v in bench_events(late_spec, 3, "late", 0)]
    values[1]["card_id"] = values[0]["card_id"]
    values[1]["event_time"] = values[0]["event_time"] - 3_600_000
    one = _one_pass(late_spec)
    result = one.process(_raw(late_spec, [json.dumps(v).encode() for v in values]))
    assert _fates(late_spec, result.sends) == {
        0: ["events", "features", "predictions"],
        1: ["dlq:features"],
        2: ["events", "features", "predictions"],
    }


def test_an_output_too_large_for_its_topic_is_a_dead_letter_not_a_failed_send() -> None:
    """An event id repeated in key, value and headers makes outputs larger than the raw."""
    spec = PHISHING
    values = [json.loads(v) for v in bench_events(spec, 3, "big", 0)]
    values[1]["event_id"] = "e" * 1_500
    raw = _raw(spec, [json.dumps(v).encode() for v in values])
    stages = _stages(spec, max_id_bytes=10_000)  # past the id limit: the size net's turn
    one = OnePass(*stages, raw_topic=spec.topics("").raw, max_output_bytes=4_500)
    result = one.process(raw)
    fates = _fates(spec, result.sends)
    assert fates[1] == ["dlq:pipeline"]
    assert fates[0] == fates[2] == ["events", "features", "predictions"]
    (dead,) = [s for s in result.sends if s.topic == "dlq"]
    assert dict(dead.headers)["rl.error.class"] == b"output_too_large"
    assert dead.value == raw[1].value


def test_a_dead_letter_too_large_for_its_topic_says_what_it_left_out() -> None:
    spec = PHISHING
    values = [json.loads(v) for v in bench_events(spec, 2, "huge", 0)]
    values[1]["event_id"] = "e" * 3_000
    raw = _raw(spec, [json.dumps(v).encode() for v in values])
    stages = _stages(spec, max_id_bytes=10_000)
    one = OnePass(*stages, raw_topic=spec.topics("").raw, max_output_bytes=3_000)
    (dead,) = [s for s in one.process(raw).sends if s.topic == "dlq"]
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (None, b"")
    assert headers["rl.error.value_dropped"] == str(len(raw[1].value or b"")).encode()
    assert headers["rl.error.class"] == b"output_too_large"
