from __future__ import annotations

import pytest
from river import datasets

from streams.models.model import OnlineModel
from streams.observability.plots import (
    Marker,
    learning_curve,
    plot_latency,
    plot_learning_curve,
    version_markers,
    write_report,
)
from streams.settings import REPO_ROOT
from streams.spec import load_spec


def _records() -> list[dict]:
    model = OnlineModel(load_spec(REPO_ROOT / "pipelines" / "phishing.toml").model)
    out = []
    for i, (x, y) in enumerate(datasets.Phishing()):
        if i == 600:
            model.version = 2  # as after a promotion
        said = model.predict(x)
        out.append(
            {"model": model.label, "prediction": said.prediction, "proba": said.proba, "label": y}
        )
        model.learn(x, y, said)
    return out


def test_learning_curve_is_per_version_and_ends_at_the_prequential_value() -> None:
    records = _records()
    curves = learning_curve(records, "accuracy", every=1)
    assert set(curves) == {"phishing-lr@1", "phishing-lr@2"}
    xs1, _ = curves["phishing-lr@1"]
    xs2, _ = curves["phishing-lr@2"]
    assert xs1[-1] == 599
    assert xs2[0] == 600
    assert xs2[-1] == 1249
    # Version 1's last point is the accuracy of its 600 predictions alone.
    correct = sum(r["prediction"] == r["label"] for r in records[:600])
    assert curves["phishing-lr@1"][1][-1] == pytest.approx(correct / 600)


def test_plots_are_written_as_png(tmp_path) -> None:
    records = _records()
    curve = plot_learning_curve(
        records, tmp_path / "curve.png", markers=[Marker(600, "promote", "v2 champion")]
    )
    latency = plot_latency([1.0, 2.0, 3.0, 50.0], tmp_path / "latency.png")
    for path in (curve, latency):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 5_000


def test_a_change_of_answering_model_is_marked() -> None:
    markers = version_markers(_records())
    # Same model, new version (as after a snapshot or a reset): a "version" marker.
    assert markers == [Marker(600, "version", "phishing-lr@1 -> phishing-lr@2")]


def test_the_report_has_the_main_metric_accuracy_and_latency(tmp_path) -> None:
    spec = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
    records = [dict(r, ingest_ts=1000 + i, predict_ts=1003 + i) for i, r in enumerate(_records())]
    written = write_report(spec, records, tmp_path)
    assert [p.name for p in written] == [
        "phishing-rocauc.png",
        "phishing-latency.png",
        "phishing-accuracy.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)


def test_drift_alerts_become_markers_at_the_next_prediction() -> None:
    from streams.observability.plots import drift_markers, version_markers

    records = [
        {"model": m, "predict_ts": ts}
        for m, ts in [("a@1", 10), ("a@1", 20), ("a@2", 30), ("b@1", 40), ("b@1", 50)]
    ]
    alerts = [
        {"kind": "drift", "ts": 25, "model": "a@1"},
        {"kind": "integrity", "ts": 35},
        {"kind": "drift", "ts": 99, "model": "b@1"},  # after the last prediction: no marker
    ]
    assert [(m.at, m.kind) for m in drift_markers(records, alerts)] == [(2, "drift")]
    assert [(m.at, m.kind) for m in version_markers(records)] == [(2, "version"), (3, "promote")]
