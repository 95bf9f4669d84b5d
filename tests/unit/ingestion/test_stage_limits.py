"""Ingestion's bounds on what it writes: ids, event times, the re-encoded size (no broker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.ingestion.stage import Ingestion
from streams.messages import InMessage
from streams.pipeline.lineage import Lineage
from streams.pipeline.stage import StageResult
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import (
    DEFAULT_MAX_EVENT_TIME_AHEAD,
    DEFAULT_MAX_ID_BYTES,
    decode_single_object,
)
from streams.settings import Settings
from streams.spec import PipelineSpec, parse_spec

NOW = 1_767_225_600_000
SCHEMA = {
    "type": "record",
    "name": "Blob",
    "namespace": "test",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "device", "type": "string"},
        {"name": "xs", "type": {"type": "array", "items": "double"}, "default": []},
    ],
}


@pytest.fixture
def catalog(tmp_path: Path) -> SchemaCatalog:
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "v1.avsc").write_text(json.dumps(SCHEMA))
    return SchemaCatalog.load(tmp_path)


def spec() -> PipelineSpec:
    source = {
        "pipeline": {"name": "blobs", "subject": "blobs", "key_field": "device"},
        "features": {"name": "blob_features"},
        "model": {
            "name": "m",
            "task": "regression",
            "target": "",
            "inputs": ["xs"],
            "steps": [{"estimator": "linear_model.LinearRegression"}],
        },
    }
    return parse_spec(source)


def ingest(stage: Ingestion, event: dict[str, Any] | bytes) -> StageResult:
    value = event if isinstance(event, bytes) else json.dumps(event).encode()
    result = StageResult()
    stage.ingest(InMessage("blobs.raw", 0, 0, None, value, NOW), NOW, result)
    return result


def blob(**overrides: Any) -> dict[str, Any]:
    return {"event_id": "e1", "event_time": NOW, "device": "d1"} | overrides


def error_class(result: StageResult) -> str:
    (dead,) = result.sends
    return dict(dead.headers)["rl.error.class"].decode()


def test_an_event_its_avro_encoding_makes_too_large_is_a_dead_letter(
    catalog: SchemaCatalog,
) -> None:
    """JSON ``0,`` is 2 bytes; the same double in Avro is 8."""
    stage = Ingestion(spec(), catalog, events_topic="e", dlq_topic="dlq", max_bytes=500_000)
    fits = ingest(stage, blob(xs=[0] * 60_000))
    grows = json.dumps(blob(xs=[0] * 100_000)).encode()
    assert len(grows) < 500_000

    result = ingest(stage, grows)

    assert (fits.ok, len(fits.sends[0].value) < 500_000) == (1, True)
    assert (result.ok, dict(result.dead), error_class(result)) == (0, {"too_large": 1}, "too_large")
    assert "as blobs/v1" in dict(result.sends[0].headers)["rl.error.message"].decode()
    assert result.sends[0].value == grows  # the original bytes, unchanged


def test_ids_and_keys_are_bounded_by_the_setting(catalog: SchemaCatalog) -> None:
    stage = Ingestion(
        spec(), catalog, events_topic="e", dlq_topic="dlq", max_bytes=1 << 20, max_id_bytes=4
    )

    assert ingest(stage, blob(event_id="1234", device="d123")).ok == 1
    assert error_class(ingest(stage, blob(event_id="12345"))) == "id_too_long"
    assert error_class(ingest(stage, blob(device="d1234"))) == "id_too_long"


def test_event_times_are_checked_against_the_ingest_time(catalog: SchemaCatalog) -> None:
    stage = Ingestion(
        spec(), catalog, events_topic="e", dlq_topic="dlq", max_bytes=1 << 20,
        max_event_time_ahead=10.0,
    )  # fmt: skip

    ok = ingest(stage, blob(event_time=NOW + 10_000))
    ahead = ingest(stage, blob(event_time=NOW + 10_001))
    before_1970 = ingest(stage, blob(event_time=-1))

    (event,) = ok.sends
    assert Lineage.from_headers(event.headers).event_ts == NOW + 10_000
    assert event.key == b"d1"
    assert decode_single_object(catalog, event.value)[1]["event_time"] == NOW + 10_000
    assert (error_class(ahead), error_class(before_1970)) == ("bad_event_time", "bad_event_time")


def test_settings_default_to_the_decoders_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings.from_env()
    monkeypatch.setenv("RIVERLINE_MAX_ID_BYTES", "16")
    monkeypatch.setenv("RIVERLINE_MAX_EVENT_TIME_AHEAD", "60.5")

    assert (defaults.max_id_bytes, defaults.max_event_time_ahead) == (
        DEFAULT_MAX_ID_BYTES,
        DEFAULT_MAX_EVENT_TIME_AHEAD,
    )
    assert (Settings.from_env().max_id_bytes, Settings.from_env().max_event_time_ahead) == (
        16,
        60.5,
    )
