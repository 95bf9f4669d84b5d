"""The model gauges (agents.pipeline.predict_recorder): set when scraped, for served versions;
the guarantee settings a pipeline agent accepts."""

from __future__ import annotations

import faust
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.pipeline import add_pipeline_agent, predict_recorder
from streams.errors import ConfigError
from streams.models.stage import Predictor
from streams.observability.metrics import WorkerMetrics
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec
from streams.trust.records import RecordSigner

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


def test_a_decoupled_pipeline_refuses_exactly_once_with_what_to_do(tmp_path) -> None:

    text = (REPO_ROOT / "pipelines" / "transactions.toml").read_text()
    path = tmp_path / "transactions.toml"
    path.write_text(text.replace("[pipeline]\n", '[pipeline]\nmode = "decoupled"\n', 1))
    spec = load_spec(path)
    settings = Settings(home=tmp_path, dev_mode=True, guarantee="exactly_once")
    app = faust.App("t", broker="kafka://127.0.0.1:1")
    signer = RecordSigner(settings.signing_key_bytes())
    with pytest.raises(ConfigError, match='mode = "single"'):
        add_pipeline_agent(app, settings, spec, CATALOG, WorkerMetrics(), signer)


def test_exactly_once_checkpoints_at_least_every_commit_interval() -> None:

    assert Settings(checkpoint_interval=300.0).effective_checkpoint_interval == 300.0
    eos = Settings(guarantee="exactly_once", checkpoint_interval=300.0, commit_interval=0.5)
    assert eos.effective_checkpoint_interval == 0.5
    assert (
        Settings(guarantee="exactly_once", checkpoint_interval=0.2).effective_checkpoint_interval
        == 0.2
    )
