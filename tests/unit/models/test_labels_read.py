"""read_label: one P.labels message to (event id, label), or a dead letter's reason."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import ConfigError, DecodeError
from streams.models.labels import LABEL_REASONS, read_label
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import encode_single_object
from streams.settings import REPO_ROOT

CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")
LABEL = CATALOG.record("label")


def read(value: bytes | None, key: bytes | None = None, task: str = "binary") -> tuple[str, Any]:
    return read_label(value, key, catalog=CATALOG, label_schema=LABEL, task=task)


def refusal(value: bytes | None, key: bytes | None = None, task: str = "binary") -> str:
    with pytest.raises(DecodeError) as info:
        read(value, key, task)
    str(info.value).encode("utf-8")  # a dead letter's rl.error.message header holds it
    return info.value.reason


def labelled(label: str, event_id: str = '"e1"') -> bytes:
    """A JSON label message whose label (and event id) are JSON text as given."""
    return f'{{"event_id": {event_id}, "label": {label}}}'.encode()


def avro(label: Any, event_id: str = "e1") -> bytes:
    return encode_single_object(LABEL, {"event_id": event_id, "label": label, "label_ts": 0})


@pytest.mark.parametrize(
    ("task", "label", "expected"),
    [
        ("binary", "true", True),
        ("binary", "false", False),
        ("binary", "1", True),
        ("binary", "0", False),
        ("multiclass", '"cat"', "cat"),
        ("multiclass", '"\\ud83d\\ude00"', "\U0001f600"),
        ("multiclass", "3", 3),
        ("multiclass", "-9223372036854775808", -(2**63)),
        ("multiclass", "true", True),
        ("regression", "2.5", 2.5),
        ("regression", "3", 3.0),
        ("regression", "-0.0", -0.0),
        ("regression", "1e308", 1e308),
    ],
)
def test_labels_that_fit_the_task(task: str, label: str, expected: Any) -> None:
    event_id, value = read(labelled(label), task=task)

    assert (event_id, value, type(value)) == ("e1", expected, type(expected))


@pytest.mark.parametrize(
    ("task", "label", "reason"),
    [
        ("binary", "2", "label_type"),
        ("binary", "1.0", "label_type"),
        ("binary", '"true"', "label_type"),
        ("binary", "null", "label_type"),
        ("binary", "[true]", "label_type"),
        ("binary", '{"label": true}', "label_type"),
        ("binary", "NaN", "non_finite"),
        ("multiclass", "1.5", "label_type"),
        ("multiclass", "9223372036854775808", "label_type"),
        ("multiclass", json.dumps("x" * 1025), "label_type"),
        ("multiclass", '"a\\ud800"', "bad_string"),
        ("multiclass", "[]", "label_type"),
        ("regression", "true", "label_type"),
        ("regression", '"1.5"', "label_type"),
        ("regression", "NaN", "non_finite"),
        ("regression", "-Infinity", "non_finite"),
        ("regression", "1e309", "non_finite"),
        ("regression", "1" + "0" * 400, "non_finite"),
        ("regression", "[1.0]", "label_type"),
        ("anomaly", "true", "label_type"),
        ("anomaly", "0.5", "label_type"),
    ],
)
def test_labels_that_do_not_fit_the_task(task: str, label: str, reason: str) -> None:
    assert refusal(labelled(label), task=task) == reason


def test_refusals_say_what_the_task_takes() -> None:
    with pytest.raises(DecodeError) as info:
        read(labelled('"yes"'))

    assert str(info.value) == (
        "field 'label': a binary model takes a boolean (or 0 or 1); got string \"yes\""
    )


@pytest.mark.parametrize(
    ("event_id", "key", "outcome"),
    [
        ('"e1"', None, "e1"),
        ('"e1"', b"ignored", "e1"),
        ("null", b"from-key", "from-key"),
        ('""', b"from-key", "from-key"),
        ('"\\u00e9"', None, "é"),
        (json.dumps("é" * 512), None, "é" * 512),  # 1024 bytes of UTF-8
        ("null", None, "missing_event_id"),
        ('""', b"", "missing_event_id"),
        ("12", None, "bad_event_id"),
        ("false", b"k", "bad_event_id"),
        ('["e1"]', None, "bad_event_id"),
        ("null", b"\xff\xfe", "bad_event_id"),
        ('"e\\udc00"', None, "bad_string"),
        (json.dumps("é" * 513), None, "id_too_long"),
        (json.dumps("x" * 400_000), None, "id_too_long"),
        ("null", b"x" * 1025, "id_too_long"),
    ],
)
def test_event_ids(event_id: str, key: bytes | None, outcome: str) -> None:
    value = labelled("true", event_id)
    if outcome in LABEL_REASONS:
        assert refusal(value, key) == outcome
    else:
        assert read(value, key) == (outcome, True)


def test_a_missing_event_id_field_falls_back_to_the_key() -> None:
    assert read(b'{"label": false}', b"e7") == ("e7", False)
    assert refusal(b'{"label": false}') == "missing_event_id"


def test_the_id_limit_is_a_parameter() -> None:
    value = labelled("true", '"abcd"')

    assert read_label(
        value, None, catalog=CATALOG, label_schema=LABEL, task="binary", max_id_bytes=4
    )
    with pytest.raises(DecodeError, match="over the limit of 3 "):
        read_label(value, None, catalog=CATALOG, label_schema=LABEL, task="binary", max_id_bytes=3)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"{nope",
        b"\xff{}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"event_id": "e1", "label": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"7" * 5000,
        b'{"event_id": "e1", "label": ' + b"7" * 5000 + b"}",
        b"[1, 2]",
        b'"e1"',
        b'{"event_id": "e1"}',
        b"\xc3\x01\x00",  # Avro single-object, truncated
    ],
)
def test_messages_that_are_not_labels(value: bytes | None) -> None:
    assert refusal(value) == "bad_label"


def test_avro_labels() -> None:
    assert read(avro(True)) == ("e1", True)
    assert read(avro(1), task="binary") == ("e1", True)
    assert read(avro("cat"), task="multiclass") == ("e1", "cat")
    assert read(avro(2.5), task="regression") == ("e1", 2.5)
    assert read(avro(True, event_id=""), b"from-key") == ("from-key", True)
    assert refusal(avro(math.nan), task="regression") == "non_finite"
    assert refusal(avro(None)) == "label_type"
    assert refusal(avro(True, event_id="x" * 1025)) == "id_too_long"
    assert refusal(avro("x"), task="binary") == "label_type"


def test_avro_that_is_not_a_label_names_the_codec_reason() -> None:
    prediction = CATALOG.record("prediction")
    with pytest.raises(DecodeError) as info:
        read(avro(True)[:-3])

    assert info.value.reason == "bad_label"
    assert f"not a readable {LABEL.label} message (truncated: " in str(info.value)
    assert prediction.fingerprint != LABEL.fingerprint
    assert refusal(b"\xc3\x01" + prediction.fingerprint + b"\x00") == "bad_label"


def test_an_unknown_task_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="task 'clustering' is not one of binary"):
        read(labelled("true"), task="clustering")


def test_every_label_reason_is_raised_by_some_case() -> None:
    raised = {
        refusal(labelled("2")),
        refusal(labelled("NaN"), task="regression"),
        refusal(labelled('"\\ud800"'), task="multiclass"),
        refusal(labelled("true", "12")),
        refusal(labelled("true", "null")),
        refusal(labelled("true", json.dumps("x" * 2000))),
        refusal(b"{"),
    }

    assert raised == set(LABEL_REASONS)
    assert len(LABEL_REASONS) == len(set(LABEL_REASONS))


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters() | st.sampled_from(["\ud800", "\udfff"]), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=8,
)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    event_id=_json,
    label=_json,
    key=st.none() | st.binary(max_size=6),
    task=st.sampled_from(["binary", "multiclass", "regression", "anomaly"]),
)
def test_any_label_message_is_read_or_refused_with_a_label_reason(
    event_id: Any, label: Any, key: bytes | None, task: str
) -> None:
    value = json.dumps({"event_id": event_id, "label": label}).encode()
    try:
        got_id, got_label = read(value, key, task)
    except DecodeError as exc:
        reason, message = exc.reason, str(exc)
    else:
        reason, message = "", ""
        assert type(got_id) is str
        assert 0 < len(got_id.encode("utf-8")) <= 1024
        assert (
            type(got_label)
            in {"binary": (bool,), "multiclass": (str, int, bool), "regression": (float,)}[task]
        )
        assert type(got_label) is not float or math.isfinite(got_label)
    assert reason in LABEL_REASONS or reason == ""
    message.encode("utf-8")
