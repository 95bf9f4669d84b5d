from __future__ import annotations

import pytest
from river import linear_model

from streams.models.registry import ModelRegistry
from streams.store.offline import OfflineStore
from streams.store.provenance import UnknownEvent, trace

TS = 1_795_000_000_000


def _store(tmp_path) -> OfflineStore:
    store = OfflineStore(tmp_path / "store")
    store.write(
        "events",
        "phishing",
        "phishing.events",
        0,
        [7],
        [TS],
        [{"event_id": "e1", "rl_source": "phishing.raw:0:7", "rl_schema": "phishing/v1/ab"}],
    )
    store.write(
        "features",
        "phishing",
        "phishing.features",
        0,
        [7],
        [TS],
        [{"event_id": "e1", "rl_features": "fs@12", "event_ts": TS, "value.https": 1.0}],
    )
    store.write(
        "predictions",
        "phishing",
        "phishing.predictions",
        0,
        [7],
        [TS],
        [
            {
                "event_id": "e1",
                "pipeline": "phishing",
                "model": "lr@1",
                "prediction": True,
                "proba.True": 0.8,
                "proba.False": 0.2,
                "label": None,
                "event_ts": TS,
                "ingest_ts": TS + 5,
                "source": "phishing.raw:0:7",
                "schema": "phishing/v1/ab",
                "features": "fs@12",
            }
        ],
    )
    store.write(
        "labels", "phishing", "phishing.labels", 0, [3], [TS], [{"event_id": "e1", "label": False}]
    )
    return store


def test_trace_joins_raw_offset_schema_features_model_and_label(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "registry", "phishing", b"k")
    registry.save(
        "lr",
        linear_model.LogisticRegression(),
        parent=None,
        offsets={"phishing.features:0": 7},
        samples_seen=7,
        metrics={},
        spec_hash="s",
    )
    found = trace("e1", _store(tmp_path), {"phishing": registry})
    assert found.raw_source == "phishing.raw:0:7"
    assert found.writer_schema == "phishing/v1/ab"
    assert found.feature_set == "fs@12"
    assert found.feature_values == {"https": 1.0}
    assert found.model == "lr@1"
    assert found.manifest is not None
    assert found.manifest["offsets"] == {"phishing.features:0": 7}
    assert (found.prediction, found.proba) == (True, {"True": 0.8, "False": 0.2})
    assert (found.label, found.label_source) == (False, "labels topic")
    assert found.ingest_ts == TS + 5


def test_unknown_ids_get_a_clear_message(tmp_path) -> None:
    with pytest.raises(UnknownEvent, match="no event with id 'nope'"):
        trace("nope", _store(tmp_path))
