"""The model gauges (agents.learn.predict_recorder): set when scraped, for served versions."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agents.pipeline import predict_recorder
from streams.models.stage import Predictor
from streams.observability.metrics import WorkerMetrics
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import load_spec

CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")
SPEC = load_spec(REPO_ROOT / "pipelines" / "transactions.toml")


def _series(metrics: WorkerMetrics, family: str) -> set[tuple[str, ...]]:
    found = set()
    for fam in text_string_to_metric_families(metrics.exposition().decode()):
        if fam.name == family:
            for s in fam.samples:
                found.add((s.labels["model"], s.labels["version"], s.labels.get("metric", "")))
    return found


def _predictor() -> Predictor:
    t = SPEC.topics("")
    return Predictor(
        SPEC, CATALOG, predictions_topic=t.predictions, dlq_topic="dlq", labels_topic=t.labels
    )


def test_gauges_are_set_at_scrape_time_not_per_batch() -> None:
    metrics, stage = WorkerMetrics(), _predictor()
    record = predict_recorder(metrics, SPEC, stage)
    model = stage.lifecycle.served[0].model
    record()  # a batch: no gauge is set by it
    assert not any(m.samples for m in metrics.model_samples.collect())
    model.samples_seen = 7
    samples = {
        s.value
        for fam in text_string_to_metric_families(metrics.exposition().decode())
        if fam.name == "riverline_model_samples_seen"
        for s in fam.samples
    }
    assert samples == {7.0}


def test_a_new_version_replaces_the_last_ones_series() -> None:
    metrics, stage = WorkerMetrics(), _predictor()
    predict_recorder(metrics, SPEC, stage)
    model = stage.lifecycle.served[0].model
    name, first = model.spec.name, str(model.version)
    assert _series(metrics, "riverline_model_metric") == {
        (name, first, "accuracy"),
        (name, first, "rocauc"),
    }
    model.version += 1  # a checkpoint serves the version it registered
    after = _series(metrics, "riverline_model_metric")
    assert after == {(name, str(model.version), "accuracy"), (name, str(model.version), "rocauc")}
    assert {v for _, v, _ in _series(metrics, "riverline_model_info")} == {str(model.version)}
    assert {v for _, v, _ in _series(metrics, "riverline_model_samples_seen")} == {
        str(model.version)
    }
