"""Feature state survives SIGKILL: every event's features equal an uninterrupted run's.

A keyed pipeline (``card``; window mean, EWM mean, time since last, z-score of ``amount``)
over 2 partitions. Events flow while the worker is SIGKILLed twice at seeded points of its
progress and restarted; then every event's feature values on ``P.features`` must equal
``FeatureSet.compute`` run offline over the same events in per-partition order. Outputs may
repeat (at-least-once) but every repeat carries the same values.

Size: 10,000 events over 1,000 keys; ``RIVERLINE_CHECKPOINT_TEST_EVENTS=50000`` runs the
issue's full size (keys are a tenth of the events).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import signal
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faultkit import Producer, Read, read_all

from streams.cli.workerproc import WorkerProcess
from streams.features.engine import FeatureSet
from streams.ingestion.stage import epoch_ms
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.state.checkpoint import Checkpoint

pytestmark = pytest.mark.integration

N_EVENTS = int(os.environ.get("RIVERLINE_CHECKPOINT_TEST_EVENTS", "10000"))
N_KEYS = max(1, N_EVENTS // 10)
SEED = 20261126

SCHEMA = {
    "type": "record",
    "name": "CardEvent",
    "namespace": "riverline.cards",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "card", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "is_big", "type": ["null", "boolean"], "default": None},
    ],
}

SPEC = """
[pipeline]
name = "cards"
subject = "cards"
partitions = 2
key_field = "card"

[features]
name = "card_features"
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
[[features.derived]]
name = "since_last"
kind = "since_last"
[[features.derived]]
name = "amount_z"
kind = "zscore"
field = "amount"

[model]
name = "cards-lr"
task = "binary"
target = "is_big"
inputs = ["amount", "amount_mean", "amount_ewm"]
[[model.steps]]
estimator = "preprocessing.StandardScaler"
[[model.steps]]
estimator = "linear_model.LogisticRegression"
"""


def _events(n: int, keys: int, seed: int) -> list[dict[str, Any]]:
    """Seeded events, 100 ms apart in event time with up to 5 s of disorder."""
    rng = random.Random(seed)
    start = 1_790_000_000_000
    out = []
    for i in range(n):
        amount = round(rng.lognormvariate(3.0, 1.0), 2)
        out.append(
            {
                "event_id": f"e{i:07d}",
                "event_time": start + i * 100 - rng.randrange(5000),
                "card": f"card-{rng.randrange(keys):05d}",
                "amount": amount,
                "is_big": amount > 60.0,
            }
        )
    return out


@dataclass
class Outcome:
    spec: PipelineSpec
    catalog: SchemaCatalog
    settings: Settings
    events: list[dict[str, Any]]
    kills: list[int]
    events_topic: list[Read]
    features_topic: list[Read]
    dead_letters: list[Read]


def _processed(worker: WorkerProcess) -> int:
    try:
        status: Any = worker.get_json("/status.json", timeout=1.0)
        return sum(status["pipelines"]["cards"]["feature_partitions"].values())
    except (OSError, ValueError, KeyError):
        return -1


def _wait_for(worker: WorkerProcess, done: Any, what: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if worker.proc is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker died while waiting for {what}:\n{worker.log_path}")
        if time.monotonic() > deadline:
            tail = worker.log_path.read_text(errors="replace")[-4000:]
            raise AssertionError(f"timed out waiting for {what}; the end of its log:\n{tail}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def outcome(settings_factory, tmp_path_factory) -> Outcome:
    root = Path(tmp_path_factory.mktemp("checkpoints"))
    shutil.copytree(REPO_ROOT / "schemas" / "riverline", root / "schemas" / "riverline")
    (root / "schemas" / "cards").mkdir()
    (root / "schemas" / "cards" / "v1.avsc").write_text(json.dumps(SCHEMA))
    spec_path = root / "cards.toml"
    spec_path.write_text(SPEC)
    settings = settings_factory(
        web_port=free_port(),
        schemas_dir=root / "schemas",
        batch_size=200,
        checkpoint_every=1500,
        checkpoint_interval=0.5,
        session_timeout=6.0,  # a restarted worker gets the killed one's partitions sooner
    )
    spec = load_spec(spec_path)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    topics = spec.topics(settings.namespace)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    events = _events(N_EVENTS, N_KEYS, SEED)
    rng = random.Random(SEED)
    # Two kills at seeded points of the features stage's progress, while events flow.
    kills = [rng.randrange(N_EVENTS // 10, N_EVENTS * 4 // 10)]
    kills.append(rng.randrange(N_EVENTS // 2, N_EVENTS * 8 // 10))
    worker = WorkerProcess(settings, [spec_path], root / "worker.log")
    producer = Producer(settings, topics.raw, events, rate=N_EVENTS / 10.0)
    try:
        worker.start()
        worker.wait_ready()
        producer.start()
        for at in kills:
            _wait_for(worker, lambda at=at: _processed(worker) >= at, f"{at} events")
            assert worker.proc is not None
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait()
            worker.start()
            worker.wait_ready()
        producer.join(timeout=120)
        assert producer.error is None, producer.error
        assert producer.sent == N_EVENTS
        # Done when ingest has written every event and the features stage has caught up
        # with what it reads: P.raw.
        read = topics.raw
        ends = -1
        while ends != (ends := asyncio.run(_end_total(settings, read))) or ends < N_EVENTS:
            _wait_for(worker, lambda: _processed(worker) >= max(ends, 1), "the events topic")
            time.sleep(1.0)
    finally:
        code = worker.stop()
    assert code == 0, (root / "worker.log").read_text()[-3000:]
    return Outcome(
        spec,
        catalog,
        settings,
        events,
        kills,
        read_all(settings, topics.events),
        read_all(settings, topics.features),
        read_all(settings, settings.topic("riverline.dlq")),
    )


async def _ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.effective_bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in (0, 1)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def _end_total(settings: Settings, topic: str) -> int:
    return sum((await _ends(settings, topic)).values())


def _reference(o: Outcome) -> dict[str, dict[str, float | None]]:
    """FeatureSet.compute offline, per partition of P.events in offset order, each event once."""
    fs = FeatureSet.from_spec(o.spec.features)
    reader = o.catalog.latest("cards")
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    seen: set[str] = set()
    for r in sorted(o.events_topic, key=lambda r: (r.partition, r.offset)):
        _, record = decode_single_object(o.catalog, r.value, reader)
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


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def test_every_event_has_features_equal_to_an_uninterrupted_run(
    outcome: Outcome, record_property: Any
) -> None:
    fs = FeatureSet.from_spec(outcome.spec.features)
    schema = outcome.catalog.record("feature_vector")
    first: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for r in outcome.features_topic:
        _, vector = decode_single_object(outcome.catalog, r.value, schema)
        got = {name: vector["values"][name] for name in fs.outputs}
        if vector["event_id"] in first:
            duplicates += 1
            assert got == first[vector["event_id"]], f"a repeat of {vector['event_id']} differs"
            continue
        first[vector["event_id"]] = got
    want = _reference(outcome)
    assert set(first) == {e["event_id"] for e in outcome.events}
    wrong = [
        (eid, first[eid], want[eid])
        for eid in sorted(want)
        if not all(_same(first[eid][n], want[eid][n]) for n in fs.outputs)
    ]
    assert not wrong, f"{len(wrong)} events differ from the reference, e.g. {wrong[:3]}"
    ingest_repeats = len(outcome.events_topic) - len(outcome.events)
    record_property("feature_duplicates", duplicates)
    record_property("ingest_duplicates", ingest_repeats)
    print(
        f"\n{N_EVENTS} events, {N_KEYS} keys, killed at {outcome.kills}: "
        f"{duplicates} repeated feature vectors, {ingest_repeats} events ingested twice"
    )


def test_no_dead_letters(outcome: Outcome) -> None:
    assert outcome.dead_letters == []


def test_checkpoints_are_on_the_compacted_topic(outcome: Outcome) -> None:
    records = read_all(outcome.settings, outcome.settings.topic("riverline.checkpoints"))
    latest = {}
    for r in records:
        cp = Checkpoint.from_bytes(r.value)
        latest[cp.key] = cp
    # The predict state shares the topic under "<p>/predict".
    features = {k: v for k, v in latest.items() if "/features/" in k}
    assert set(features) == {"cards/features/0", "cards/features/1"}
    latest = features
    # The clean stop at the end checkpointed everything the features stage reads.
    settings = outcome.settings
    topics = outcome.spec.topics(settings.namespace)
    read = topics.raw
    ends = asyncio.run(_ends(settings, read))
    assert {cp.partition: cp.offset for cp in latest.values()} == ends


# --------------------------------------------------------------------------------------
# Late events through a real worker
# --------------------------------------------------------------------------------------

LATE_SPEC = SPEC.replace('name = "cards"', 'name = "late"').replace(
    'name = "card_features"',
    'name = "card_features"\nallowed_lateness = 10.0\nlate_policy = "dead_letter"',
)
#: (event id, card, seconds): "l2" is 15 s before card-a's latest event time, "l3" only 5 s.
LATE_EVENTS = [("l0", "card-a", 100), ("l1", "card-a", 200), ("l2", "card-a", 185)]
LATE_EVENTS += [("l3", "card-a", 195), ("l4", "card-b", 150)]


async def _send_in_order(settings: Settings, topic: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.effective_bootstrap, acks="all")
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(topic, json.dumps(e).encode(), key=e["card"].encode())
    finally:
        await producer.stop()


def test_late_events_go_to_the_dead_letter_topic(settings_factory, tmp_path_factory) -> None:
    root = Path(tmp_path_factory.mktemp("late"))
    shutil.copytree(REPO_ROOT / "schemas" / "riverline", root / "schemas" / "riverline")
    (root / "schemas" / "cards").mkdir()
    (root / "schemas" / "cards" / "v1.avsc").write_text(json.dumps(SCHEMA))
    spec_path = root / "late.toml"
    spec_path.write_text(LATE_SPEC)
    settings = settings_factory(web_port=free_port(), schemas_dir=root / "schemas")
    spec = load_spec(spec_path)
    topics = spec.topics(settings.namespace)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    events = [
        {"event_id": eid, "event_time": s * 1000, "card": card, "amount": 1.0, "is_big": False}
        for eid, card, s in LATE_EVENTS
    ]
    worker = WorkerProcess(settings, [spec_path], root / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(_send_in_order(settings, topics.raw, events))
        deadline = time.monotonic() + 60
        while True:
            status: Any = worker.get_json("/status.json")
            if sum(status["pipelines"]["late"]["feature_partitions"].values()) >= len(events):
                break
            assert time.monotonic() < deadline, "the features stage did not see every event"
            time.sleep(0.2)
    finally:
        assert worker.stop() == 0, (root / "worker.log").read_text()[-3000:]
    catalog = SchemaCatalog.load(settings.schemas_dir)
    schema = catalog.record("feature_vector")
    features = read_all(settings, topics.features)
    ids = {decode_single_object(catalog, r.value, schema)[1]["event_id"] for r in features}
    assert ids == {"l0", "l1", "l3", "l4"}
    dead = read_all(settings, settings.topic("riverline.dlq"))
    assert len(dead) == 1
    headers = dead[0].headers
    assert headers["rl.error.class"] == "late"
    assert headers["rl.error.stage"] == "features"
    # The message the features stage read, on P.raw.
    read = topics.raw
    assert headers["rl.error.topic"] == read
    assert headers["rl.event_id"] == "l2"
    by_offset = {(r.partition, r.offset): r.value for r in read_all(settings, read)}
    where = (int(headers["rl.error.partition"]), int(headers["rl.error.offset"]))
    assert dead[0].value == by_offset[where]  # the original bytes


# --------------------------------------------------------------------------------------
# Partitions moving between workers (rebalance), then a crash
# --------------------------------------------------------------------------------------


def test_partitions_moving_between_workers_keep_features_exact(
    settings_factory, tmp_path_factory
) -> None:
    """Worker A alone, then B joins (partitions split), then A is SIGKILLed (B takes all).

    Serving workers of a decoupled pipeline (single mode runs on one worker only); each
    worker starts a learner beside it, one active and one standby.
    """
    root = Path(tmp_path_factory.mktemp("rebalance"))
    shutil.copytree(REPO_ROOT / "schemas" / "riverline", root / "schemas" / "riverline")
    (root / "schemas" / "cards").mkdir()
    (root / "schemas" / "cards" / "v1.avsc").write_text(json.dumps(SCHEMA))
    spec_path = root / "cards.toml"
    spec_path.write_text(SPEC.replace("[pipeline]\n", '[pipeline]\nmode = "decoupled"\n', 1))
    settings = settings_factory(
        web_port=free_port(),
        schemas_dir=root / "schemas",
        batch_size=200,
        checkpoint_every=1500,
        checkpoint_interval=0.5,
        session_timeout=6.0,
    )
    other = settings.model_copy(update={"web_port": free_port(), "home": root / "home-b"})
    spec = load_spec(spec_path)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    topics = spec.topics(settings.namespace)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    n = N_EVENTS // 2
    events = _events(n, max(1, n // 10), SEED + 1)
    a = WorkerProcess(settings, [spec_path], root / "worker-a.log")
    b = WorkerProcess(other, [spec_path], root / "worker-b.log")
    # Two halves: the second is produced only once B has joined, so that A has events
    # left to process after the rebalance however long B takes to start.
    half = n // 2
    producer = Producer(settings, topics.raw, events[:half], rate=half / 4.0)
    second = Producer(settings, topics.raw, events[half:], rate=(n - half) / 8.0)
    schema = catalog.record("feature_vector")

    def feature_ids() -> set[str]:
        reads = read_all(settings, topics.features)
        return {decode_single_object(catalog, r.value, schema)[1]["event_id"] for r in reads}

    try:
        a.start()
        a.wait_ready()
        producer.start()
        _wait_for(a, lambda: _processed(a) >= n // 5, "worker A's progress")
        b.start()  # a rebalance: A checkpoints and gives up a partition, B restores it
        b.wait_ready()
        producer.join(timeout=120)
        assert producer.error is None, producer.error
        second.start()
        _wait_for(b, lambda: _processed(b) > 0, "worker B's first events")
        # A goes on with the partition it kept, past its last checkpoint, then dies.
        kept = _processed(a)
        _wait_for(a, lambda: _processed(a) >= kept + 100, "worker A's progress after it")
        assert a.proc is not None
        children = psutil.Process(a.proc.pid).children()  # its sink and its learner
        assert len(children) == 2, children
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        _, alive = psutil.wait_procs(children, timeout=60)
        assert alive == [], f"children of the killed worker still run: {alive}"
        second.join(timeout=120)
        assert second.error is None, second.error
        deadline = time.monotonic() + 180
        while len(feature_ids()) < n:
            assert time.monotonic() < deadline, "not every event reached P.features"
            time.sleep(1.0)
    finally:
        a.kill()
        assert b.stop() == 0, (root / "worker-b.log").read_text()[-3000:]
    outcome = Outcome(
        spec,
        catalog,
        settings,
        events,
        [],
        read_all(settings, topics.events),
        read_all(settings, topics.features),
        [],
    )
    want = _reference(outcome)
    fs = FeatureSet.from_spec(spec.features)
    seen: dict[str, dict[str, Any]] = {}
    for r in outcome.features_topic:
        _, vector = decode_single_object(catalog, r.value, schema)
        got = {name: vector["values"][name] for name in fs.outputs}
        assert seen.setdefault(vector["event_id"], got) == got, "a repeat differs"
    wrong = [eid for eid in want if not all(_same(seen[eid][k], want[eid][k]) for k in fs.outputs)]
    assert not wrong, f"{len(wrong)} events differ from the reference, e.g. {wrong[:3]}"
    print(f"\nrebalance: {len(outcome.features_topic) - n} repeated feature vectors")
