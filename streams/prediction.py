"""Prediction: feature vectors -> a prediction per event, then learning from its label.

Prequential: each event is predicted before the model learns from it, so the prediction
a consumer sees is the one the metrics score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.catalog import SchemaCatalog
from streams.codec import decode_single_object, encode_single_object
from streams.errors import DecodeError
from streams.lineage import Lineage
from streams.messages import InMessage, OutMessage
from streams.model import OnlineModel
from streams.spec import PipelineSpec
from streams.stage import DeadLetter, StageResult, now_ms

__all__ = ["Predictor"]


class Predictor:
    """Predict, publish, learn, for one pipeline's champion model."""

    stage = "predict"

    def __init__(
        self,
        spec: PipelineSpec,
        catalog: SchemaCatalog,
        *,
        predictions_topic: str,
        dlq_topic: str,
        model: OnlineModel | None = None,
    ) -> None:
        self.spec = spec
        self.catalog = catalog
        self.vector_schema = catalog.record("feature_vector")
        self.prediction_schema = catalog.record("prediction")
        self.model = model if model is not None else OnlineModel(spec.model)
        self.predictions_topic = predictions_topic
        self.dlq_topic = dlq_topic
        #: End-to-end latencies (seconds) of the last batch, for the worker's histogram.
        self.latencies: list[float] = []

    def process(self, batch: Sequence[InMessage]) -> StageResult:
        result = StageResult()
        self.latencies = []
        inputs = self.spec.model.inputs
        model = self.model
        for msg in batch:
            try:
                _, vector = decode_single_object(self.catalog, msg.value or b"", self.vector_schema)
                values = vector["values"]
                # A feature with no value yet (a key's first event for since_last, zscore)
                # is left out: River's models treat a missing key as "no information".
                x: dict[str, Any] = {
                    name: values[name] for name in inputs if values[name] is not None
                }
            except (DecodeError, KeyError) as exc:
                reason = exc.reason if isinstance(exc, DecodeError) else "missing_feature"
                dead = DeadLetter(self.stage, reason, str(exc), self.vector_schema.label)
                result.sends.append(dead.to_message(msg, self.dlq_topic))
                result.dead[reason] += 1
                continue
            said = model.predict(x)
            label = vector["label"]
            model_label = model.label  # the version that made this prediction
            model.learn(x, label, said)
            lineage = Lineage.from_headers(msg.headers).with_model(model_label)
            predict_ts = now_ms()
            record = {
                "event_id": lineage.event_id,
                "pipeline": self.spec.name,
                "model": model_label,
                "schema": lineage.schema,
                "source": lineage.source,
                "features": lineage.features,
                "spec": lineage.pipeline,
                "event_ts": lineage.event_ts,
                "ingest_ts": lineage.ingest_ts,
                "predict_ts": predict_ts,
                "prediction": said.prediction,
                "proba": said.proba,
                "score": said.score,
                "label": label,
            }
            result.sends.append(
                OutMessage(
                    self.predictions_topic,
                    lineage.event_id.encode(),
                    encode_single_object(self.prediction_schema, record),
                    lineage.to_headers(),
                )
            )
            if lineage.raw_ts:
                self.latencies.append(max(0.0, (predict_ts - lineage.raw_ts) / 1000.0))
            result.ok += 1
        return result
