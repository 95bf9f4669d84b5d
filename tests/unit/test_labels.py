from __future__ import annotations

from river import datasets, evaluate, linear_model, metrics, preprocessing

from streams.labels import LabelJoin, Pending
from streams.model import OnlineModel, Prediction
from streams.settings import REPO_ROOT
from streams.spec import load_spec


def _pending(event_id: str, ts: int = 0) -> Pending:
    return Pending(event_id, {"a": 1.0}, Prediction(True, {"True": 0.9}, None), "m@1", ts)


def test_label_after_prediction_joins_with_what_was_seen() -> None:
    join = LabelJoin(ttl_ms=1000)
    p = _pending("e1")
    assert join.add_prediction(p) is None
    assert join.add_label("e1", False, now_ms=5) == [p]
    assert len(join) == 0
    assert join.joined == 1


def test_label_before_prediction_waits_for_it() -> None:
    join = LabelJoin(ttl_ms=1000)
    assert join.add_label("e1", True, now_ms=0) == []
    p = _pending("e1")
    assert join.add_prediction(p) == (p, True)


def test_entries_past_the_ttl_expire_and_are_counted() -> None:
    join = LabelJoin(ttl_ms=100)
    join.add_prediction(_pending("old", ts=0))
    join.add_prediction(_pending("new", ts=150))
    assert join.expire(now_ms=160) == 1
    assert join.expired == 1
    assert join.add_label("old", True, now_ms=170) == []
    assert len(join.add_label("new", True, now_ms=170)) == 1


def test_state_survives_a_round_trip() -> None:
    join = LabelJoin(ttl_ms=100)
    join.add_prediction(_pending("e1"))
    join.add_label("e9", True, now_ms=3)
    again = LabelJoin.from_bytes(join.to_bytes())
    assert len(again.add_label("e1", True, now_ms=4)) == 1
    assert again.add_prediction(_pending("e9")) is not None


def test_delay_50_parity_with_river_offline() -> None:
    """Labels 50 events late, joined with what was predicted: River's delay=50 result."""
    spec = load_spec(REPO_ROOT / "pipelines" / "phishing.toml").model
    model = OnlineModel(spec)
    join = LabelJoin(ttl_ms=10**12)
    rows = list(datasets.Phishing())
    for i, (x, _) in enumerate(rows):
        join.add_prediction(Pending(str(i), x, model.predict(x), model.label, i))
        if i >= 50:
            for p in join.add_label(str(i - 50), rows[i - 50][1], now_ms=i):
                model.learn(p.x, rows[int(p.event_id)][1], p.said)
    reference = evaluate.progressive_val_score(
        datasets.Phishing(),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.Accuracy(),
        delay=50,
    )
    assert f"{reference.get():.2%}" == "88.00%"
    # River also scores the last 50 (labels revealed at the end); we have not seen them yet.
    assert abs(model.metric_values()["accuracy"] - reference.get()) < 0.01
