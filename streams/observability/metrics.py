"""Prometheus metrics of a worker (prefix ``riverline_``), on a registry of its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["LATENCY_BUCKETS", "FeatureStates", "WorkerMetrics"]

#: Seconds; dense in the millisecond range where a healthy pipeline lives.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)


class FeatureStates(Protocol):
    """What a features stage tells the metrics (``streams.features.stage.Featurization``)."""

    def eviction_totals(self) -> Mapping[str, int]: ...

    def state_bytes(self) -> int: ...


class WorkerMetrics:
    """Every metric family a worker exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._refreshers: list[Callable[[], None]] = []
        self._add_flow(self.registry)
        self._add_models(self.registry)
        self._add_health(self.registry)
        self._add_serving(self.registry)

    def _add_flow(self, r: CollectorRegistry) -> None:
        """Events through the stages: outcomes, dead letters, latencies, lag."""
        self.events = Counter(
            "riverline_events",
            "Events handled, by pipeline, stage and outcome (ok, dead_letter).",
            ["pipeline", "stage", "outcome"],
            registry=r,
        )
        self.dead_letters = Counter(
            "riverline_dead_letters",
            "Messages sent to the dead-letter topic, by pipeline, stage and reason.",
            ["pipeline", "stage", "reason"],
            registry=r,
        )
        self.stage_latency = Histogram(
            "riverline_stage_latency_seconds",
            "Time a stage spends on one micro-batch, per event.",
            ["pipeline", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.end_to_end = Histogram(
            "riverline_end_to_end_latency_seconds",
            "From the raw message's Kafka timestamp to its prediction being sent.",
            ["pipeline"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "riverline_consumer_lag",
            "Messages behind the end of the partition, per topic and partition.",
            ["topic", "partition"],
            registry=r,
        )

    def _add_models(self, r: CollectorRegistry) -> None:
        """The models served: their metrics, stages, samples, drift, registry actions."""
        self.model_metric = Gauge(
            "riverline_model_metric",
            "Prequential metric of a model version.",
            ["pipeline", "model", "version", "metric"],
            registry=r,
        )
        self.model_info = Gauge(
            "riverline_model_info",
            "Models served: 1 per (pipeline, model, version, stage).",
            ["pipeline", "model", "version", "stage"],
            registry=r,
        )
        self.model_samples = Gauge(
            "riverline_model_samples_seen",
            "Labelled samples a model version has learned from.",
            ["pipeline", "model", "version"],
            registry=r,
        )
        self.drift = Counter(
            "riverline_drift_detections",
            "Drift detections on a model's error stream.",
            ["pipeline", "model", "version"],
            registry=r,
        )
        self.registry_actions = Counter(
            "riverline_registry_actions",
            "Model registry actions (snapshot, promote, rollback, reset).",
            ["pipeline", "model", "action"],
            registry=r,
        )

    def _add_health(self, r: CollectorRegistry) -> None:
        """Checkpoints, the label join, whether pipelines run, feature state."""
        self.checkpoint_age = Gauge(
            "riverline_checkpoint_age_seconds",
            "Seconds since a stage's last checkpoint of state and offsets.",
            ["pipeline", "stage"],
            registry=r,
        )
        self.labels_expired = Counter(
            "riverline_labels_expired",
            "Predictions or labels dropped unjoined: past the label TTL or beyond the "
            "label join's bounds (RIVERLINE_LABEL_MAX_PENDING, RIVERLINE_LABEL_MAX_BYTES).",
            ["pipeline"],
            registry=r,
        )
        self.labels_joined = Counter(
            "riverline_labels_joined",
            "Delayed labels joined with the prediction they belong to.",
            ["pipeline"],
            registry=r,
        )
        self.pipeline_up = Gauge(
            "riverline_pipeline_up",
            "1 while a pipeline's agent processes events; 0 while it is down (a failed "
            "batch being recovered, checkpoints failing, state over its limit).",
            ["pipeline"],
            registry=r,
        )
        self.pipeline_failures = Counter(
            "riverline_pipeline_failures",
            "Failures that took a pipeline's agent down, by kind (batch: a batch failed "
            "and the state was restored from the last checkpoint; agent: the agent "
            "crashed and was restarted; checkpoint: a checkpoint could not be written).",
            ["pipeline", "kind"],
            registry=r,
        )
        self.feature_evictions = Counter(
            "riverline_feature_evictions",
            "Entity keys evicted from feature state, by pipeline and cause "
            "(ttl: [features] key_ttl, cap: [features] max_keys).",
            ["pipeline", "cause"],
            registry=r,
        )
        self.feature_state_bytes = Gauge(
            "riverline_feature_state_bytes",
            "Bytes of feature state this worker holds (arrays and keys), per pipeline.",
            ["pipeline"],
            registry=r,
        )

    def _add_serving(self, r: CollectorRegistry) -> None:
        """Decoupled pipelines: how far behind the learner a serving worker's models are."""
        self.model_staleness = Gauge(
            "riverline_model_staleness_samples",
            "Decoupled pipelines: samples the learner has learned since the version this "
            "serving worker serves.",
            ["pipeline", "model"],
            registry=r,
        )
        self.model_age = Gauge(
            "riverline_model_age_seconds",
            "Decoupled pipelines: seconds since the learner published the version this "
            "serving worker serves.",
            ["pipeline", "model"],
            registry=r,
        )

    def watch_features(self, pipeline: str, stage: FeatureStates) -> None:
        """Export a features stage's evictions and state size, read when scraped.

        Both are running totals or sizes the stage keeps anyway, so nothing is done per
        batch; every cause's series exists from the start (at 0).
        """
        evictions = {
            cause: self.feature_evictions.labels(pipeline, cause)
            for cause in stage.eviction_totals()
        }
        size = self.feature_state_bytes.labels(pipeline)
        reported = dict.fromkeys(evictions, 0)

        def refresh() -> None:
            for cause, total in stage.eviction_totals().items():
                if total > reported[cause]:
                    evictions[cause].inc(total - reported[cause])
                    reported[cause] = total
            size.set(stage.state_bytes())

        self.before_scrape(refresh)

    def before_scrape(self, refresh: Callable[[], None]) -> None:
        """Call ``refresh`` before each exposition: gauges read from state when scraped."""
        self._refreshers.append(refresh)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes (after every ``before_scrape`` hook)."""
        for refresh in self._refreshers:
            refresh()
        return generate_latest(self.registry)
