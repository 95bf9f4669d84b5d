"""Replay of a decoupled pipeline: the learner's models rebuilt from the learning log.

In decoupled mode every learning input (feature vector and label, delayed label, an
operator's action) is a record of the one-partition log ``P.learn``, learned in offset
order by one learner, whatever the number of raw partitions and serving workers. So a
replay is exact for any number of partitions: :func:`replay_learning` reads the latest
versions the learner published (:func:`streams.state.feed.sync_versions`), the log offset
their manifests name, and learns ``P.learn`` from offset 0 up to it with a fresh learner in
process, writing nothing to Kafka. It then compares each model's pickled estimator
(sha256) and prequential metrics with the published version's manifest, and reproduces
every live prediction on ``P.predictions`` from the model version it names (``rl.model``)
and the inputs the serving worker logged for that event.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import DecodeError
from streams.messages import InMessage
from streams.models.learner import Learner
from streams.models.lifecycle import ModelLifecycle
from streams.models.model import OnlineModel
from streams.models.records import LearningRecord
from streams.models.registry import Manifest, ModelRegistry, RegistryError
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import Settings
from streams.spec import ModelSpec, PipelineSpec
from streams.state.feed import sync_versions
from streams.store.replay import Difference, ReplayError, estimator_sha256, read_topic
from streams.trust.records import RecordSigner

__all__ = ["LearningReplay", "ModelCheck", "replay_learning"]


@dataclass(frozen=True)
class ModelCheck:
    """One model as the learner published it and as the replay rebuilt it."""

    published: str
    samples_published: int
    samples_replayed: int
    sha256_published: str
    sha256_replayed: str
    metrics_published: dict[str, float]
    metrics_replayed: dict[str, float]

    @property
    def identical(self) -> bool:
        return (
            self.sha256_published == self.sha256_replayed
            and self.samples_published == self.samples_replayed
            and self.metrics_published == self.metrics_replayed
        )


@dataclass
class LearningReplay:
    """What a replay of the learning log rebuilt and how it compares with the learner."""

    position: int = 0
    records: int = 0
    learned: int = 0
    dead_letters: int = 0
    models: list[ModelCheck] = field(default_factory=list)
    predictions: int = 0
    reproduced: int = 0
    #: Predictions naming a version the learner has since pruned (RIVERLINE_REGISTRY_KEEP).
    pruned: int = 0
    difference: Difference | None = None

    @property
    def identical(self) -> bool:
        return self.difference is None and all(m.identical for m in self.models)


async def replay_learning(
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    *,
    progress: Callable[[str, int], None] | None = None,
) -> LearningReplay:
    """Learn ``P.learn`` again up to the learner's last publication and compare.

    Raises
    ------
    ReplayError
        If the learner has published nothing yet, or its versions do not say where in the
        log they were taken.
    """
    feed = await sync_versions(settings, spec.name)
    served = feed.served
    if served is None:
        raise ReplayError(
            f"no published version of {spec.name} on {feed.models_topic}: start its learner "
            "(riverline worker --role learn) and let it publish once."
        )
    manifests = [feed.registry.manifest(m.name, m.version) for m in served.models]
    topics = spec.topics(settings.namespace)
    position = _position(manifests, topics.learn)
    report = LearningReplay(position=position)
    group = settings.topic(f"riverline-replay.{spec.name}.{secrets.token_hex(4)}")
    log = await read_topic(settings, topics.learn, 1, group, _say(progress, "log read"))
    log = sorted((m for m in log if m.offset < position), key=lambda m: m.offset)
    report.records = len(log)
    with tempfile.TemporaryDirectory(prefix="riverline-replay-") as scratch:
        learner = _learner(settings, spec, catalog, Path(scratch), topics.learn)
        step = max(1, settings.batch_size)
        for start in range(0, len(log), step):
            result = learner.process(log[start : start + step])
            report.dead_letters += sum(result.dead.values())
            if progress:
                progress("relearned", min(start + step, len(log)))
        report.learned = learner.learned
        report.models = _compare(learner, manifests)
    live = await read_topic(
        settings, topics.predictions, spec.partitions, group, _say(progress, "live read")
    )
    signer = RecordSigner(settings.signing_key_bytes())
    _reproduce(report, spec, catalog, feed.registry, log, live, signer)
    return report


def _say(progress: Callable[[str, int], None] | None, stage: str) -> Callable[[int], None]:
    return lambda n: progress(stage, n) if progress else None


def _position(manifests: Sequence[Manifest], learn_topic: str) -> int:
    """The log offset the published versions were taken at (the same for all of them)."""
    where = f"{learn_topic}:0"
    positions = {m.offsets.get(where) for m in manifests}
    if len(positions) != 1 or None in positions:
        raise ReplayError(
            f"the published versions {[m.label for m in manifests]} do not name one offset of "
            f"{where} (they name {sorted(map(str, positions))}); they were not published by a "
            "learner of this pipeline."
        )
    return int(next(iter(positions)) or 0)


def _learner(
    settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog, scratch: Path, topic: str
) -> Learner:
    """A fresh learner as the learner process builds it, with a scratch registry."""
    registry = ModelRegistry(scratch, spec.name, settings.signing_key_bytes())
    learner = Learner(
        spec,
        catalog,
        learning_topic=topic,
        dlq_topic="replay.dlq",
        lifecycle=ModelLifecycle(spec, registry),
        signer=RecordSigner(settings.signing_key_bytes()),
        label_ttl_ms=int(settings.label_ttl * 1000),
        label_max_pending=settings.label_max_pending,
        label_max_bytes=settings.label_max_bytes,
    )
    learner.learning.register_fresh()
    return learner


def _compare(learner: Learner, manifests: Sequence[Manifest]) -> list[ModelCheck]:
    checks = []
    for manifest in manifests:
        served = next(s for s in learner.lifecycle.served if s.model.spec.name == manifest.name)
        model = served.model
        checks.append(
            ModelCheck(
                manifest.label,
                manifest.samples_seen,
                model.samples_seen,
                manifest.sha256,
                estimator_sha256(model.estimator),
                dict(manifest.metrics),
                model.metric_values(),
            )
        )
    return checks


def _reproduce(
    report: LearningReplay,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    registry: ModelRegistry,
    log: Sequence[InMessage],
    live: Sequence[InMessage],
    signer: RecordSigner,
) -> None:
    """Each live prediction of an event in the replayed log, made again from the version
    it names and the inputs logged for it; the first difference is kept."""
    inputs = _vectors(catalog, log)
    models: dict[str, OnlineModel | None] = {}
    schema = catalog.record("prediction")
    for msg in live:
        if not signer.verify(msg.topic, msg.key, msg.value, msg.headers):
            continue
        try:
            _, record = decode_single_object(catalog, msg.value or b"", schema)
        except DecodeError:
            continue
        x = inputs.get(record["event_id"])
        if x is None:
            continue  # not learned before the publication: past the replayed range
        report.predictions += 1
        name, _, version = str(record["model"]).rpartition("@")
        if version.isdigit() and not registry.has(name, int(version)):
            report.pruned += 1
            continue
        model = _model(models, spec, registry, record["model"])
        if model is None:
            report.difference = Difference(
                record["event_id"], "model version", record["model"], "not in the registry"
            )
            return
        again = model.predict(x)
        for what, a, b in (
            ("prediction", record["prediction"], again.prediction),
            ("proba", record["proba"], again.proba),
        ):
            if a != b:
                report.difference = Difference(record["event_id"], what, a, b)
                return
        report.reproduced += 1


def _vectors(catalog: SchemaCatalog, log: Sequence[InMessage]) -> dict[str, dict[str, Any]]:
    """The inputs each event was predicted from, as the serving worker logged them."""
    found: dict[str, dict[str, Any]] = {}
    for msg in log:
        try:
            record = LearningRecord.read(catalog, msg)
        except DecodeError:
            continue
        if record.kind == "VECTOR":
            found.setdefault(record.event_id, record.x)
    return found


def _model(
    cache: dict[str, OnlineModel | None], spec: PipelineSpec, registry: ModelRegistry, label: str
) -> OnlineModel | None:
    """The model version ``name@version`` from the registry (verified), once."""
    if label in cache:
        return cache[label]
    name, _, version = label.rpartition("@")
    model_spec: ModelSpec | None = next(
        (m for m in (spec.model, *spec.shadows) if m.name == name), None
    )
    model = None
    if model_spec is not None and version.isdigit():
        try:
            estimator, manifest = registry.load(name, int(version))
            model = OnlineModel(model_spec, manifest.version)
            model.estimator = estimator
        except RegistryError:
            model = None
    cache[label] = model
    return model
