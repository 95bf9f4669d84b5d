"""A keyed pipeline with per-key sequence numbers, and a verifier of everything it wrote.

Shared by the fault tests (``tests/integration/test_sigterm.py``, ``test_broker_fault.py``,
``tests/chaos/``). Events: ``event_id`` is ``<card>:<seq>`` with ``seq`` counting 0, 1, 2,
... per card, so a gap in a card's sequence on ``P.predictions`` is a lost event.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.cli.workerproc import WorkerProcess
from streams.features.engine import FeatureSet
from streams.ingestion.stage import epoch_ms
from streams.kafka.broker import free_port
from streams.kafka.topics import (
    ensure_topics,
    pipeline_topic_configs,
    shared_topic_configs,
    topic_partitions,
)
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.state.checkpoint import Checkpoint
from streams.trust.records import RecordSigner

SCHEMA = {
    "type": "record",
    "name": "SeqEvent",
    "namespace": "riverline.faults",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "card", "type": "string"},
        {"name": "seq", "type": "long"},
        {"name": "amount", "type": "double"},
        {"name": "is_big", "type": ["null", "boolean"], "default": None},
    ],
}

SPEC = """
[pipeline]
name = "seqs"
subject = "seqs"
partitions = 2
key_field = "card"

[features]
name = "seq_features"
[[features.derived]]
name = "amount_mean"
kind = "window_mean"
field = "amount"
window = 600.0
max_events = 16
[[features.derived]]
name = "amount_ewm"
kind = "ewm_mean"
field = "amount"
half_life = 300.0

[model]
name = "seqs-lr"
task = "binary"
target = "is_big"
inputs = ["amount", "amount_mean", "amount_ewm"]
[[model.steps]]
estimator = "preprocessing.StandardScaler"
[[model.steps]]
estimator = "linear_model.LogisticRegression"

# Counts of (feature > 40, class): its state does not depend on the order it learns in,
# so the chaos test can compare it exactly with a run that never stopped.
[[shadow]]
name = "seqs-nb"
[[shadow.steps]]
estimator = "naive_bayes.BernoulliNB"
params = { true_threshold = 40.0 }
"""

NAME = "seqs"


def make_events(n: int, keys: int, seed: int) -> list[dict[str, Any]]:
    """Seeded events 100 ms apart in event time; per card, ``seq`` counts from 0."""
    rng = random.Random(seed)
    start = 1_790_000_000_000
    seqs: Counter[str] = Counter()
    out = []
    for i in range(n):
        card = f"card-{rng.randrange(keys):05d}"
        seq = seqs[card]
        seqs[card] += 1
        amount = round(rng.lognormvariate(3.0, 1.0), 2)
        out.append(
            {
                "event_id": f"{card}:{seq}",
                "event_time": start + i * 100,
                "card": card,
                "seq": seq,
                "amount": amount,
                "is_big": amount > 60.0,
            }
        )
    return out


@dataclass
class Rig:
    """A pipeline's settings, spec and worker process in a fresh namespace."""

    root: Path
    settings: Settings
    spec: PipelineSpec
    spec_path: Path
    catalog: SchemaCatalog
    worker: WorkerProcess

    @property
    def raw(self) -> str:
        return self.spec.topics(self.settings.namespace).raw

    def topic(self, stage: str) -> str:
        return str(getattr(self.spec.topics(self.settings.namespace), stage))

    def processed(self) -> int:
        """Events the features stage has processed (its partitions' next offsets), or -1."""
        try:
            status: Any = self.worker.get_json("/status.json", timeout=1.0)
            return int(sum(status["pipelines"][NAME]["feature_partitions"].values()))
        except (OSError, ValueError, KeyError, TypeError):
            return -1

    def wait_for(self, done: Callable[[], bool], what: str, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            proc = self.worker.proc
            if proc is not None and proc.poll() is not None:
                raise AssertionError(
                    f"worker died while waiting for {what}: {self.worker.log_path}"
                )
            if time.monotonic() >= deadline:
                self.worker.dump()  # what it waits on, into its log
                try:
                    status: Any = self.worker.get_json("/status.json", timeout=2.0)
                except (OSError, ValueError):
                    status = "(no status)"
                ends = {
                    stage: end_total(self.settings, self.topic(stage))
                    for stage in ("raw", "events", "features", "predictions")
                }
                raise AssertionError(
                    f"timed out waiting for {what}; end offsets {ends}; worker status "
                    f"{json.dumps(status)[:1500]}; log {self.worker.log_path}"
                )
            time.sleep(0.05)

    def count(self, stage: str) -> int:
        """Messages on a pipeline topic: its end offsets, or in exactly-once mode (where
        transaction markers take offsets too) its committed records, counted."""
        if not self.settings.exactly_once:
            return end_total(self.settings, self.topic(stage))
        try:
            return len(read_all(self.settings, self.topic(stage)))
        except Exception:  # the broker may be down in a fault test: "not yet"
            return -1

    def wait_drained(self, n_events: int, timeout: float = 240.0) -> None:
        """Until ingest has written every raw event and features caught up with P.events."""
        self.wait_for(lambda: end_total(self.settings, self.raw) >= n_events, "raw", timeout)

        def caught_up() -> bool:
            ends = self.count("events")
            dlq = len(read_all(self.settings, self.settings.topic("riverline.dlq")))
            read = end_total(self.settings, self.raw)
            return ends + dlq >= n_events and self.processed() >= read

        self.wait_for(caught_up, "the features stage to catch up", timeout)
        # P.events holds an event twice when ingest wrote it again after a kill.
        valid = self.count("events") - self.ingest_repeats()

        def predicted() -> bool:
            if self.count("predictions") < valid:
                time.sleep(0.5)
                return False
            ids = {
                r.headers.get("rl.event_id")
                for r in read_all(self.settings, self.topic("predictions"))
            }
            if len(ids) < valid:
                time.sleep(0.5)
                return False
            return True

        self.wait_for(predicted, "every event's prediction", timeout)

    def ingest_repeats(self) -> int:
        events = read_all(self.settings, self.topic("events"))
        return len(events) - len({r.headers["rl.event_id"] for r in events})


def make_rig(
    settings_factory: Callable[..., Settings],
    root: Path,
    *,
    spec_text: str = SPEC,
    **overrides: Any,
) -> Rig:
    shutil.copytree(REPO_ROOT / "schemas" / "riverline", root / "schemas" / "riverline")
    (root / "schemas" / NAME).mkdir()
    (root / "schemas" / NAME / "v1.avsc").write_text(json.dumps(SCHEMA))
    spec_path = root / f"{NAME}.toml"
    spec_path.write_text(spec_text)
    values: dict[str, Any] = {
        "web_port": free_port(),
        "schemas_dir": root / "schemas",
        "batch_size": 200,
        "session_timeout": 6.0,  # a restarted worker gets the killed one's partitions sooner
    }
    values.update(overrides)
    settings = settings_factory(**values)
    spec = load_spec(spec_path)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    worker = WorkerProcess(settings, [spec_path], root / "worker.log")
    return Rig(root, settings, spec, spec_path, SchemaCatalog.load(root / "schemas"), worker)


@dataclass
class Read:
    partition: int
    offset: int
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    key: bytes | None = None
    #: Its ``rl.mac`` verifies under the settings' signing key.
    signed: bool = False


async def _read_all(settings: Settings, topic: str) -> list[Read]:
    numbers = await topic_partitions(settings.effective_bootstrap, topic)
    signer = RecordSigner(settings.signing_key_bytes())
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap,
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in numbers]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[Read] = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for tp, msgs in (await consumer.getmany(timeout_ms=500, max_records=5000)).items():
                for m in msgs:
                    if m.offset >= ends[tp]:
                        continue
                    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in m.headers or ()}
                    signed = signer.verify(topic, m.key, m.value, m.headers or ())
                    out.append(Read(tp.partition, m.offset, m.value, headers, m.key, signed))
        return out
    finally:
        await consumer.stop()


def read_all(settings: Settings, topic: str) -> list[Read]:
    """Every committed message on ``topic`` up to its end offsets now (as a
    ``read_committed`` consumer sees them: no aborted transaction's records)."""
    return asyncio.run(_read_all(settings, topic))


async def _end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    numbers = await topic_partitions(settings.effective_bootstrap, topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.effective_bootstrap, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in numbers]
        return {tp.partition: off for tp, off in (await consumer.end_offsets(parts)).items()}
    finally:
        await consumer.stop()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    return asyncio.run(_end_offsets(settings, topic))


def end_total(settings: Settings, topic: str) -> int:
    try:
        return sum(end_offsets(settings, topic).values())
    except Exception:  # the broker may be down in a fault test: "not yet"
        return -1


async def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def committed(settings: Settings, topic: str) -> dict[int, int]:
    """The offsets the worker's group has committed on ``topic``, by partition."""
    return asyncio.run(_committed(settings.effective_bootstrap, settings.topic("riverline"), topic))


class Producer(threading.Thread):
    """Produces events as JSON to ``P.raw`` at ``rate`` per second, in its own loop."""

    def __init__(
        self, settings: Settings, topic: str, events: list[dict[str, Any]], rate: float
    ) -> None:
        super().__init__(daemon=True)
        self.settings, self.topic, self.events, self.rate = settings, topic, events, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc

    async def _run(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.effective_bootstrap, acks="all", linger_ms=5
        )
        await producer.start()
        started = time.monotonic()
        try:
            pending = []
            for e in self.events:
                ahead = started + self.sent / self.rate - time.monotonic()
                if ahead > 0:
                    await asyncio.gather(*pending)
                    pending = []
                    await asyncio.sleep(ahead)
                value = json.dumps(e).encode()
                pending.append(await producer.send(self.topic, value, key=e["card"].encode()))
                self.sent += 1
            await asyncio.gather(*pending)
        finally:
            await producer.stop()


def produce_all(settings: Settings, topic: str, events: list[dict[str, Any]]) -> None:
    """Produce every event as fast as the broker takes them (before a worker runs)."""
    p = Producer(settings, topic, events, rate=1e9)
    p.run()
    if p.error is not None:
        raise p.error


@dataclass
class Verdict:
    """What a run wrote, checked against what was produced."""

    events: int
    lost: list[str]
    """Valid events without a prediction."""
    gaps: dict[str, list[int]]
    """Per card, the sequence numbers missing from its predictions."""
    unaccounted_raw: list[tuple[int, int]]
    """Raw (partition, offset) in neither ``P.events`` nor the dead-letter topic."""
    prediction_duplicates: int
    feature_duplicates: int
    ingest_duplicates: int
    features_differ: list[str]
    """Events whose features differ from an uninterrupted run's (offline reference)."""
    checkpoints: dict[int, int]
    """Latest checkpoint offset per ``P.events`` partition."""

    @property
    def duplicate_rate(self) -> float:
        return self.prediction_duplicates / max(1, self.events)

    def summary(self) -> str:
        return (
            f"{self.events} events: lost {len(self.lost)}, sequence gaps "
            f"{sum(len(g) for g in self.gaps.values())}, unaccounted raw offsets "
            f"{len(self.unaccounted_raw)}; duplicates: {self.prediction_duplicates} predictions "
            f"({self.duplicate_rate:.2%}), {self.feature_duplicates} feature vectors, "
            f"{self.ingest_duplicates} ingested twice; features differing "
            f"{len(self.features_differ)}"
        )


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def verify(rig: Rig, events: list[dict[str, Any]]) -> Verdict:
    """Read every output of the run and compare with the produced events."""
    settings, catalog = rig.settings, rig.catalog
    raw_ends = end_offsets(settings, rig.raw)
    events_topic = read_all(settings, rig.topic("events"))
    features_topic = read_all(settings, rig.topic("features"))
    predictions_topic = read_all(settings, rig.topic("predictions"))
    dlq = read_all(settings, settings.topic("riverline.dlq"))

    accounted: set[tuple[int, int]] = set()
    for r in events_topic:
        _, part, off = r.headers["rl.source"].rsplit(":", 2)
        accounted.add((int(part), int(off)))
    for r in dlq:
        if r.headers.get("rl.error.topic") == rig.raw:
            accounted.add((int(r.headers["rl.error.partition"]), int(r.headers["rl.error.offset"])))
    unaccounted = [
        (p, o) for p, end in raw_ends.items() for o in range(end) if (p, o) not in accounted
    ]

    pred_schema = catalog.record("prediction")
    predicted: Counter[str] = Counter()
    for r in predictions_topic:
        _, record = decode_single_object(catalog, r.value, pred_schema)
        predicted[record["event_id"]] += 1
    wanted = {e["event_id"] for e in events}
    lost = sorted(wanted - set(predicted))
    by_card: dict[str, set[int]] = defaultdict(set)
    for eid in predicted:
        card, seq = eid.rsplit(":", 1)
        by_card[card].add(int(seq))
    expected: Counter[str] = Counter(e["card"] for e in events)
    gaps = {
        card: sorted(set(range(n)) - by_card.get(card, set()))
        for card, n in expected.items()
        if by_card.get(card, set()) != set(range(n))
    }

    fs = FeatureSet.from_spec(rig.spec.features)
    fv_schema = catalog.record("feature_vector")
    first: dict[str, dict[str, Any]] = {}
    feature_duplicates = 0
    for r in features_topic:
        _, vector = decode_single_object(catalog, r.value, fv_schema)
        got = {name: vector["values"][name] for name in fs.outputs}
        if vector["event_id"] in first:
            feature_duplicates += 1
            assert got == first[vector["event_id"]], f"a repeat of {vector['event_id']} differs"
            continue
        first[vector["event_id"]] = got
    reference = _reference(rig, events_topic)
    differ = sorted(
        eid
        for eid, want in reference.items()
        if eid not in first or not all(_same(first[eid][n], want[n]) for n in fs.outputs)
    )

    latest: dict[str, Checkpoint] = {}
    for r in read_all(settings, settings.topic("riverline.checkpoints")):
        cp = Checkpoint.from_bytes(r.value)
        latest[cp.key] = cp
    checkpoints = feature_checkpoints(latest.values())
    return Verdict(
        events=len(events),
        lost=lost,
        gaps=gaps,
        unaccounted_raw=unaccounted,
        prediction_duplicates=sum(predicted.values()) - len(predicted),
        feature_duplicates=feature_duplicates,
        ingest_duplicates=len(events_topic) - len({r.headers["rl.event_id"] for r in events_topic}),
        features_differ=differ,
        checkpoints=checkpoints,
    )


def feature_checkpoints(checkpoints: Iterable[Checkpoint]) -> dict[int, int]:
    """Offset per ``P.events`` partition of the features stage's checkpoints (the same
    topic holds other stages' snapshots, e.g. ``<pipeline>/predict``)."""
    return {cp.partition: cp.offset for cp in checkpoints if cp.key.startswith(f"{NAME}/features/")}


def _reference(rig: Rig, events_topic: list[Read]) -> dict[str, dict[str, float | None]]:
    """FeatureSet.compute offline, per partition of P.events in offset order, each event once."""
    fs = FeatureSet.from_spec(rig.spec.features)
    reader = rig.catalog.latest(NAME)
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    seen: set[str] = set()
    for r in sorted(events_topic, key=lambda r: (r.partition, r.offset)):
        _, record = decode_single_object(rig.catalog, r.value, reader)
        if record["event_id"] in seen:  # ingest wrote it again after a kill
            continue
        seen.add(record["event_id"])
        by_partition[r.partition].append(record)
    want: dict[str, dict[str, float | None]] = {}
    for records in by_partition.values():
        out = fs.compute(
            fs.new_state(),
            [r["card"] for r in records],
            np.array([epoch_ms(r["event_time"]) / 1000.0 for r in records]),
            {"amount": [r["amount"] for r in records]},
        )
        for i, r in enumerate(records):
            want[r["event_id"]] = {
                name: (float(out[name][i]) if math.isfinite(out[name][i]) else None)
                for name in fs.outputs
            }
    return want
