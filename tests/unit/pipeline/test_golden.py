"""The one-pass stage's outputs, byte for byte, for fixed inputs: a golden digest.

Any change to what Riverline writes (values, keys, headers, their order) changes these
digests; a change that means to keep the outputs must keep them. The wall clock is pinned
(ingest and predict times), and alerts and audit entries, which carry random ids, are left
out; dead letters, events, feature vectors and predictions are in.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from benchmarks.events import bench_events, event_keys
from streams.features.stage import Featurization
from streams.ingestion.stage import Ingestion
from streams.messages import InMessage
from streams.models.stage import Predictor
from streams.pipeline.onepass import OnePass
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import load_spec

CATALOG = SchemaCatalog.load(REPO_ROOT / "schemas")
NOW_MS = 1_800_000_000_000
#: sha256 over every output of 1,200 events (with 3 malformed ones) in batches of 250.
GOLDEN = {
    "transactions": "f7f1d946bf6af0282ef7e675d171c590d27bf03eed46d1197053d627260738ac",
    "phishing": "93c4c9c88cf6c3b5b691cbc459b66635ea3bcbe9312b121be2c9fe446557ed68",
}


def _outputs(name: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import streams.models.stage
    import streams.pipeline.onepass

    monkeypatch.setattr(streams.pipeline.onepass, "now_ms", lambda: NOW_MS)
    monkeypatch.setattr(streams.models.stage, "now_ms", lambda: NOW_MS)
    spec = load_spec(REPO_ROOT / "pipelines" / f"{name}.toml")
    t = spec.topics("")
    stage = OnePass(
        Ingestion(spec, CATALOG, events_topic=t.events, dlq_topic="dlq", max_bytes=1 << 20),
        Featurization(spec, CATALOG, features_topic=t.features, dlq_topic="dlq"),
        Predictor(
            spec, CATALOG, predictions_topic=t.predictions, dlq_topic="dlq", labels_topic=t.labels
        ),
        raw_topic=t.raw,
    )
    values = bench_events(spec, 1_200, "golden", 0)
    values[10], values[500], values[900] = b"{not json", b"[]", b'{"event_id": 1}'
    keys = event_keys(spec, [v for i, v in enumerate(values) if i not in (10, 500, 900)])
    keyed = iter(keys)
    raw = [
        InMessage(t.raw, 0, i, b"bad" if i in (10, 500, 900) else next(keyed), v, NOW_MS - 5)
        for i, v in enumerate(values)
    ]
    out = []
    for start in range(0, len(raw), 250):
        for s in stage.process(raw[start : start + 250]).sends:
            if s.topic in (t.events, t.features, t.predictions, "dlq"):
                out.append((s.topic, s.key, s.value, s.headers))
    return out


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_outputs_are_byte_for_byte_the_golden_ones(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hashlib.sha256()
    outputs = _outputs(name, monkeypatch)
    for topic, key, value, headers in outputs:
        digest.update(repr((topic, key, value, headers)).encode())
    assert len(outputs) == 3 * 1_197 + 3
    assert digest.hexdigest() == GOLDEN[name]
