from __future__ import annotations

import pytest
from river import datasets

from streams.model import OnlineModel
from streams.plots import Marker, learning_curve, plot_latency, plot_learning_curve
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
