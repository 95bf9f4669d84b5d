from __future__ import annotations

import pytest

from streams.features.stage import Featurization
from streams.models.registry import ModelRegistry
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import load_spec
from streams.store.offline import OfflineStore
from streams.store.training import TrainingError, load_training_set, train_candidate

SPEC = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
FEATURES = Featurization(
    SPEC, SchemaCatalog.load(REPO_ROOT / "schemas"), features_topic="f", dlq_topic="d"
).feature_set.label
DAY = 86_400_000
TS = 1_795_000_000_000


def _row(i: int, label: bool | None, feature_set: str = FEATURES) -> dict:
    row = {"event_id": f"e{i}", "rl_features": feature_set, "label": label}
    row.update(
        {f"value.{name}": float((i * 7 + j) % 3) for j, name in enumerate(SPEC.model.inputs)}
    )
    return row


def _store(tmp_path, n: int = 40) -> OfflineStore:
    store = OfflineStore(tmp_path / "store")
    rows = [_row(i, i % 3 == 0 if i < 30 else None) for i in range(n)]
    half = n // 2
    for first, stamp in ((0, TS), (half, TS + DAY)):  # two days
        offsets = list(range(first, first + half))
        store.write(
            "features",
            "phishing",
            "phishing.features",
            0,
            offsets,
            [stamp] * half,
            rows[first : first + half],
        )
    # Two delayed labels; one overrides the label the event carried.
    store.write(
        "labels",
        "phishing",
        "phishing.labels",
        0,
        [0, 1],
        [TS + DAY] * 2,
        [{"event_id": "e35", "label": True}, {"event_id": "e0", "label": False}],
    )
    return store


def test_training_set_joins_labels_in_offset_order(tmp_path) -> None:
    data = load_training_set(_store(tmp_path), SPEC)
    assert len(data.rows) == 31  # 30 labelled in the event + e35 from the labels topic
    assert data.rows[0][1] is False  # e0: the labels topic wins
    assert data.data_range["first_offset"] == 0
    assert data.data_range["last_offset"] == 35
    assert data.data_range["first_date"] < data.data_range["last_date"]


def test_rows_of_another_feature_set_are_left_out(tmp_path) -> None:
    store = OfflineStore(tmp_path)
    store.write("features", "phishing", "phishing.features", 0, [0], [TS], [_row(0, True, "old@1")])
    with pytest.raises(TrainingError, match="no labelled events"):
        load_training_set(store, SPEC)


def test_train_registers_a_warm_started_candidate(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "registry", "phishing", b"k")
    first = train_candidate(_store(tmp_path), registry, SPEC)
    assert (first.version, first.parent, first.note) == (1, None, "candidate")
    assert first.samples_seen == 31
    assert first.extra["data_range"]["events"] == 31
    second = train_candidate(_store(tmp_path), registry, SPEC)
    assert (second.version, second.parent, second.samples_seen) == (2, 1, 62)
    registry.load(SPEC.model.name, 2)


def test_an_empty_store_says_what_to_do(tmp_path) -> None:
    registry = ModelRegistry(tmp_path / "registry", "phishing", b"k")
    with pytest.raises(TrainingError, match="run the worker"):
        train_candidate(OfflineStore(tmp_path), registry, SPEC)
