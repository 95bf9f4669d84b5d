"""Replay: rebuild a pipeline from its raw topic and check it against what ran live.

``riverline replay --pipeline FILE --verify`` reads ``P.raw`` from offset 0 up to the end
it sees at start, in a consumer group of its own that commits nothing, and runs the same
stage code in process (:class:`~streams.pipeline.onepass.OnePass`: ingest, features, predict).
It writes nothing to Kafka. It then compares every prediction, by event id (prediction,
probabilities, model name), with the live ``P.predictions``, and the sha256 of the final
pickled estimator with the registry's latest manifest of that model.

Raw partitions are replayed one after the other. The live worker reads its partitions in
arrival order, so with more than one partition the live learning order (and so the model)
is not reproducible; the bundled pipelines use one partition.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import DecodeError, RiverlineError
from streams.features.stage import Featurization
from streams.ingestion.stage import Ingestion
from streams.kafka.auth import client_kwargs
from streams.messages import InMessage, OutMessage
from streams.models.registry import ModelRegistry, RegistryError, canonical_pickle
from streams.models.stage import Predictor
from streams.pipeline.onepass import OnePass
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import Settings
from streams.spec import PipelineSpec
from streams.trust.records import RecordSigner

__all__ = [
    "Difference",
    "ReplayError",
    "ReplayReport",
    "compare_predictions",
    "estimator_sha256",
    "live_model_hash",
    "read_topic",
    "replay",
]


class ReplayError(RiverlineError):
    """A replay that cannot run as asked."""


@dataclass(frozen=True)
class Difference:
    """The first place replay and live disagree."""

    event_id: str
    what: str
    live: Any
    replayed: Any

    def __str__(self) -> str:
        return f"event {self.event_id}: {self.what} live={self.live!r} replayed={self.replayed!r}"


@dataclass
class ReplayReport:
    """What a replay rebuilt and how it compares with the live run."""

    raw_read: int = 0
    predictions: int = 0
    dead_letters: int = 0
    live_predictions: int = 0
    compared: int = 0
    difference: Difference | None = None
    model: str = ""
    model_sha256: str = ""
    live_sha256: str | None = None
    hash_note: str = ""

    @property
    def identical(self) -> bool:
        hash_ok = self.live_sha256 is None or self.live_sha256 == self.model_sha256
        return self.difference is None and hash_ok


def estimator_sha256(estimator: Any) -> str:
    """sha256 of the estimator's canonical pickle, as the registry computes it for a
    manifest (:func:`streams.models.registry.canonical_pickle`)."""
    return hashlib.sha256(canonical_pickle(estimator)).hexdigest()


def _in(out: OutMessage, partition: int, offset: int) -> InMessage:
    return InMessage(out.topic, partition, offset, out.key, out.value, 0, tuple(out.headers))


async def read_topic(
    settings: Settings,
    topic: str,
    partitions: int,
    group: str,
    progress: Callable[[int], None] | None = None,
) -> list[InMessage]:
    """Every message of ``topic`` from offset 0 to the end seen at start; commits nothing."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **client_kwargs(settings),
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            raise ReplayError(
                f"topic {topic} does not exist on {settings.effective_bootstrap}: check "
                "RIVERLINE_NAMESPACE and RIVERLINE_BOOTSTRAP, and that the pipeline has run."
            )
        # Riverline creates a pipeline's topics with the spec's partition count.
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[InMessage] = []
        todo = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        while todo:
            records = await consumer.getmany(*todo, timeout_ms=1000, max_records=5000)
            for tp, msgs in records.items():
                for m in msgs:
                    if m.offset >= ends[tp]:
                        break
                    out.append(
                        InMessage(
                            m.topic,
                            m.partition,
                            m.offset,
                            m.key,
                            m.value,
                            int(m.timestamp),
                            tuple((str(k), bytes(v)) for k, v in (m.headers or ())),
                        )
                    )
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            if progress is not None:
                progress(len(out))
        return out
    finally:
        await consumer.stop()


def _predictions(
    catalog: SchemaCatalog, messages: Sequence[InMessage], signer: RecordSigner
) -> dict[str, dict[str, Any]]:
    """Prediction records by event id (the first one of duplicates after a crash); only
    records whose MAC verifies (written by this deployment) count."""
    schema = catalog.record("prediction")
    found: dict[str, dict[str, Any]] = {}
    for msg in messages:
        if not signer.verify(msg.topic, msg.key, msg.value, msg.headers):
            continue
        try:
            _, record = decode_single_object(catalog, msg.value or b"", schema)
        except DecodeError:
            continue
        found.setdefault(record["event_id"], record)
    return found


def _model_name(label: str) -> str:
    return label.rpartition("@")[0] or label


def compare_predictions(
    live: dict[str, dict[str, Any]], replayed: Sequence[dict[str, Any]]
) -> tuple[int, Difference | None]:
    """Compare in replay order; returns how many matched and the first difference."""
    compared = 0
    seen: set[str] = set()
    for rec in replayed:
        eid = rec["event_id"]
        seen.add(eid)
        other = live.get(eid)
        if other is None:
            return compared, Difference(eid, "no live prediction", None, rec["prediction"])
        for what, a, b in (
            ("prediction", other["prediction"], rec["prediction"]),
            ("proba", other["proba"], rec["proba"]),
            ("model", _model_name(other["model"]), _model_name(rec["model"])),
        ):
            if a != b:
                return compared, Difference(eid, what, a, b)
        compared += 1
    for eid in live:
        if eid not in seen:
            return compared, Difference(
                eid, "no replayed prediction", live[eid]["prediction"], None
            )
    return compared, None


def live_model_hash(
    settings: Settings, spec: PipelineSpec, name: str, samples_seen: int
) -> tuple[str | None, str]:
    """The live final model's sha256 from the registry, or None and why it is not known.

    The live final model is the registry's latest version of ``name`` if it was made by
    this spec and has seen as many samples as the replay; a version saved earlier (the
    fresh one of a worker start, an older snapshot) is not compared.
    """
    registry = ModelRegistry(settings.registry_dir, spec.name, settings.signing_key_bytes())
    latest = registry.latest(name)
    if latest is None:
        return None, (
            f"model hash not compared: the registry at {settings.registry_dir} has no version "
            f"of {name} (the worker saves one at a clean shutdown once model snapshots are on)."
        )
    try:
        manifest = registry.manifest(name, latest)
    except RegistryError as exc:
        return None, f"model hash not compared: {exc}"
    if manifest.spec_hash != spec.hash:
        return None, (
            f"model hash not compared: {name}@{latest} was made by spec {manifest.spec_hash}, "
            f"this spec is {spec.hash}."
        )
    if manifest.samples_seen != samples_seen:
        return None, (
            f"model hash not compared: the registry's latest {name}@{latest} "
            f"({manifest.note or 'no note'}) has seen {manifest.samples_seen:,} samples, the "
            f"replayed model {samples_seen:,}; it is not a snapshot of the live final model "
            "(the worker saves one at a clean shutdown once model snapshots are on)."
        )
    return manifest.sha256, f"model hash identical to {name}@{latest} in the registry"


def _one_pass(settings: Settings, spec: PipelineSpec, catalog: SchemaCatalog, dlq: str) -> OnePass:
    """The worker's own one-pass stage, holding each partition from its first event."""
    topics = spec.topics(settings.namespace)
    return OnePass(
        Ingestion(
            spec,
            catalog,
            events_topic=topics.events,
            dlq_topic=dlq,
            max_bytes=settings.max_message_bytes,
            max_id_bytes=settings.max_id_bytes,
            max_event_time_ahead=settings.max_event_time_ahead,
        ),
        Featurization(spec, catalog, features_topic=topics.features, dlq_topic=dlq),
        Predictor(spec, catalog, predictions_topic=topics.predictions, dlq_topic=dlq),
        raw_topic=topics.raw,
        max_output_bytes=settings.output_max_bytes,
    )


async def replay(
    settings: Settings,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    *,
    progress: Callable[[str, int], None] | None = None,
    compare_hash: bool = True,
) -> ReplayReport:
    """Rebuild from ``P.raw`` and compare with the live ``P.predictions``."""
    topics = spec.topics(settings.namespace)
    group = settings.topic(f"riverline-replay.{spec.name}.{secrets.token_hex(4)}")

    def say(stage: str) -> Callable[[int], None]:
        return lambda n: progress(stage, n) if progress else None

    report = ReplayReport()
    raw = await read_topic(settings, topics.raw, spec.partitions, group, say("raw read"))
    raw.sort(key=lambda m: (m.partition, m.offset))
    report.raw_read = len(raw)
    dlq = "replay.dlq"
    stage = _one_pass(settings, spec, catalog, dlq)
    predictor = stage.predictor
    replayed: list[dict[str, Any]] = []
    schema = catalog.record("prediction")
    step = max(1, settings.batch_size)
    for start in range(0, len(raw), step):
        for out in stage.process(raw[start : start + step]).sends:
            if out.topic == dlq:
                report.dead_letters += 1
            elif out.topic == topics.predictions:
                replayed.append(decode_single_object(catalog, out.value, schema)[1])
        if progress:
            progress("replayed", min(start + step, len(raw)))
    report.predictions = len(replayed)
    model = predictor.model
    report.model = model.label
    report.model_sha256 = estimator_sha256(model.estimator)

    live_msgs = await read_topic(
        settings, topics.predictions, spec.partitions, group, say("live read")
    )
    live = _predictions(catalog, live_msgs, RecordSigner(settings.signing_key_bytes()))
    report.live_predictions = len(live)
    report.compared, report.difference = compare_predictions(live, replayed)
    if compare_hash:
        report.live_sha256, report.hash_note = live_model_hash(
            settings, spec, model.spec.name, model.samples_seen
        )
    else:
        report.hash_note = "model hash not compared (asked not to)"
    return report
