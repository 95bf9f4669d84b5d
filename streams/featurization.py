"""Featurization: canonical events -> feature vectors (raw fields + derived features).

One call of each Numba kernel per micro-batch; per-key state lives in ``FeatureState``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from streams.catalog import SchemaCatalog
from streams.codec import decode_single_object, encode_single_object
from streams.errors import DecodeError
from streams.features import FeatureSet, FeatureState
from streams.ingestion import epoch_ms
from streams.lineage import Lineage
from streams.messages import InMessage, OutMessage
from streams.spec import PipelineSpec
from streams.stage import DeadLetter, StageResult

__all__ = ["Featurization"]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return epoch_ms(value)
    return value


class Featurization:
    """Compute a pipeline's feature set over micro-batches of events."""

    stage = "features"

    def __init__(
        self,
        spec: PipelineSpec,
        catalog: SchemaCatalog,
        *,
        features_topic: str,
        dlq_topic: str,
        state: FeatureState | None = None,
    ) -> None:
        self.spec = spec
        self.catalog = catalog
        self.reader = catalog.latest(spec.subject)
        self.vector_schema = catalog.record("feature_vector")
        self.feature_set = FeatureSet.from_spec(spec.features)
        self.state = state if state is not None else self.feature_set.new_state()
        self.features_topic = features_topic
        self.dlq_topic = dlq_topic
        self._skip = {spec.id_field, spec.time_field, spec.model.target}

    def process(self, batch: Sequence[InMessage]) -> StageResult:
        result = StageResult()
        good: list[tuple[InMessage, dict[str, Any], Lineage]] = []
        for msg in batch:
            try:
                _, record = decode_single_object(self.catalog, msg.value or b"", self.reader)
            except DecodeError as exc:
                dead = DeadLetter(self.stage, exc.reason, str(exc), self.reader.label)
                result.sends.append(dead.to_message(msg, self.dlq_topic))
                result.dead[exc.reason] += 1
                continue
            good.append((msg, record, Lineage.from_headers(msg.headers)))
        if not good:
            return result

        fs = self.feature_set
        key_field = self.spec.key_field
        keys = [str(r[key_field]) if key_field else "" for _, r, _ in good]
        times = np.array([lin.event_ts / 1000.0 for _, _, lin in good], dtype=np.float64)
        columns = {name: [r.get(name) for _, r, _ in good] for name in fs.inputs}
        derived = fs.compute(self.state, keys, times, columns)

        target = self.spec.model.target
        for i, (_msg, record, lineage) in enumerate(good):
            values: dict[str, Any] = {
                k: _plain(v) for k, v in record.items() if k not in self._skip
            }
            for name in fs.outputs:
                v = float(derived[name][i])
                values[name] = v if math.isfinite(v) else None
            vector = {
                "event_id": lineage.event_id,
                "event_ts": lineage.event_ts,
                "entity_key": keys[i],
                "label": record.get(target) if target else None,
                "values": values,
            }
            out = lineage.with_features(fs.label)
            result.sends.append(
                OutMessage(
                    self.features_topic,
                    (keys[i] or lineage.event_id).encode(),
                    encode_single_object(self.vector_schema, vector),
                    out.to_headers(),
                )
            )
            result.ok += 1
        return result
