from __future__ import annotations

import pytest
from river import datasets, tree

from streams.errors import SpecError
from streams.models.drift import DriftMonitor


def test_agrawal_drift_is_detected_where_it_happens() -> None:
    """Agrawal function 0 drifting to 4 at 10,000 (width 1,000), learned by a Hoeffding tree."""
    stream = datasets.synth.ConceptDriftStream(
        stream=datasets.synth.Agrawal(classification_function=0, seed=42),
        drift_stream=datasets.synth.Agrawal(classification_function=4, seed=42),
        seed=1,
        position=10_000,
        width=1_000,
    )
    model = tree.HoeffdingTreeClassifier()
    monitor = DriftMonitor()
    detections = []
    for i, (x, y) in enumerate(stream.take(13_000)):
        wrong = float(model.predict_one(x) != y)
        if monitor.update(wrong) is not None:
            detections.append(i)
        model.learn_one(x, y)
    assert detections, "no drift detected"
    assert not [i for i in detections if i < 9_000]
    assert 9_500 <= detections[0] <= 11_000


def test_a_falling_error_rate_is_not_drift() -> None:
    monitor = DriftMonitor()
    events = [monitor.update(1.0 if i < 1000 else 0.0) for i in range(3000)]
    assert not any(events)


def test_unknown_detector_lists_valid_ones() -> None:
    with pytest.raises(SpecError, match="Valid: ADWIN"):
        DriftMonitor("Magic")
