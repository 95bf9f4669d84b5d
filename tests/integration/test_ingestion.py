"""Ingestion against the real broker: schema evolution, every dead-letter reason, accounting.

One worker runs four copies of ``pipelines/sensor.toml`` under different names (one per
scenario, so each has its own raw topic) with ``RIVERLINE_MAX_MESSAGE_BYTES`` lowered to
64 KiB: the broker's own limit is about 1 MiB, so ``too_large`` is tested at 100 KiB.
The sensor subject has two versions: v2 drops ``firmware`` and adds ``pressure`` with a
default, and Confluent ids 2 and 3 map to v1 and v2 (``schemas/confluent-ids.toml``).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import struct
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client.parser import text_string_to_metric_families

from streams.cli.workerproc import WorkerProcess
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.codec import decode_single_object, encode_confluent, encode_single_object
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.store.outputs import OutputCollector

pytestmark = pytest.mark.integration

SENSOR = REPO_ROOT / "pipelines" / "sensor.toml"
MAX_MESSAGE_BYTES = 64 * 1024
CONFLUENT_V1, CONFLUENT_V2 = 2, 3  # schemas/confluent-ids.toml
WAIT_S = 90.0


@dataclass
class Env:
    settings: Settings
    catalog: SchemaCatalog
    worker: WorkerProcess
    specs: dict[str, PipelineSpec]

    @property
    def v1(self) -> SchemaVersion:
        return self.catalog.get("sensor", 1)

    @property
    def v2(self) -> SchemaVersion:
        return self.catalog.get("sensor", 2)

    def raw(self, name: str) -> str:
        return self.specs[name].topics(self.settings.namespace).raw

    @property
    def dlq(self) -> str:
        return self.settings.topic("riverline.dlq")


def _renamed_spec(tmp: Path, name: str) -> Path:
    text = SENSOR.read_text()
    assert 'name = "sensor"\n' in text
    path = tmp / f"{name}.toml"
    path.write_text(text.replace('name = "sensor"\n', f'name = "{name}"\n', 1))
    return path


@pytest.fixture(scope="module")
def env(settings_factory, tmp_path_factory) -> Iterator[Env]:
    settings = settings_factory(web_port=free_port(), max_message_bytes=MAX_MESSAGE_BYTES)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    tmp = Path(tmp_path_factory.mktemp("sensor-specs"))
    paths = [SENSOR] + [_renamed_spec(tmp, n) for n in ("sensor_dlq", "sensor_acct", "sensor_cli")]
    specs = {s.name: s for s in (load_spec(p) for p in paths)}
    configs = shared_topic_configs(settings)
    for spec in specs.values():
        configs += pipeline_topic_configs(settings, spec)
    ensure_topics(settings.effective_bootstrap, configs)
    log = tmp / "worker.log"
    worker = WorkerProcess(settings, paths, log)
    worker.start()
    try:
        worker.wait_ready()
        yield Env(settings, catalog, worker, specs)
    finally:
        assert worker.stop() == 0, log.read_text()[-3000:]


# ---------------------------------------------------------------------------------------
# Events and hostile messages.


def reading(i: int, version: int, prefix: str) -> dict[str, Any]:
    """A valid sensor reading in the shape of schema ``version``."""
    event: dict[str, Any] = {
        "event_id": f"{prefix}-{i:06d}",
        "event_time": 1_700_000_000_000 + i * 1000,
        "sensor_id": f"s{i % 7}",
        "status": ("OK", "DEGRADED", "FAULT")[i % 3],
        "temperature": 20.0 + (i % 11) * 0.5,
        "humidity": 40.0 + (i % 13),
        "power": 100.0 + (i % 17) * 2.0 if i % 5 else None,
    }
    if version == 1:
        event["firmware"] = f"1.{i % 4}.0"
    else:
        event["pressure"] = 1000.0 + (i % 9)
    return event


def _body(sv: SchemaVersion, record: dict[str, Any]) -> bytes:
    buf = BytesIO()
    fastavro.schemaless_writer(buf, sv.parsed, record)
    return buf.getvalue()


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_DROP = object()  # a field left out of a JSON event


@dataclass(frozen=True)
class Bad:
    """One malformed raw message and the dead-letter reason it must get."""

    kind: str
    reason: str
    key: bytes | None
    value: bytes


def bad_messages(v1: SchemaVersion, v2: SchemaVersion, n: int) -> list[Bad]:
    """Every kind of malformed message, the ``n``-th variant (ids and keys differ by n)."""
    ok2 = reading(n, 2, f"bad{n}")
    ok1 = reading(n, 1, f"bad{n}")
    key = ok2["event_id"].encode()
    so1 = b"\xc3\x01" + v1.fingerprint
    body1 = _body(v1, ok1)

    def js(**changes: Any) -> bytes:
        event = {**ok2, **changes}
        return json.dumps({k: v for k, v in event.items() if v is not _DROP}).encode()

    # status is the fourth field: encode the three before it, then a negative enum index.
    head = {k: ok1[k] for k in ("event_id", "event_time", "sensor_id")}
    head_schema = {
        "type": "record",
        "name": "Head",
        "fields": [f for f in v1.schema["fields"] if f["name"] in head],
    }
    head_bytes = _body(SchemaVersion.from_schema("head", 1, head_schema), head)
    assert body1.startswith(head_bytes)  # the next byte is status's index (0, 1 or 2)
    neg_enum = head_bytes + _zigzag(-1) + body1[len(head_bytes) + 1 :]
    # power (a ["null", "double"] union) is the last field: null is the single byte 00.
    no_power = _body(v1, {**ok1, "power": None})
    assert no_power.endswith(b"\x00")
    return [
        Bad("not_json", "not_json", key, b"{this is not json"),
        Bad("not_object", "not_object", key, b"[1, 2, 3]"),
        Bad("missing_field", "missing_field", key, js(temperature=_DROP)),
        Bad("wrong_type", "wrong_type", key, js(temperature="hot")),
        Bad("bad_enum", "bad_enum", key, js(status="ON_FIRE")),
        Bad("bad_timestamp", "bad_timestamp", key, js(event_time="yesterday")),
        Bad("json_nan", "non_finite", key, js(humidity=float("nan"))),
        Bad("json_infinity", "non_finite", key, js(temperature=float("-inf"))),
        Bad("avro_nan", "non_finite", key, so1 + _body(v1, {**ok1, "humidity": float("nan")})),
        Bad("unknown_fingerprint", "unknown_fingerprint", key, b"\xc3\x01" + b"\x42" * 8 + body1),
        Bad("unknown_confluent_id", "unknown_confluent_id", key, b"\x00\x00\x00\x03\xe7" + body1),
        # Cut inside the last double (a cut inside a string is a length that claims more
        # bytes than are left: oversized_collection).
        Bad("truncated", "truncated", key, so1 + _body(v1, {**ok1, "power": 42.0})[:-4]),
        Bad("trailing_bytes", "trailing_bytes", key, so1 + body1 + b"\x00\x00"),
        Bad("negative_union_index", "bad_union_index", key, so1 + no_power[:-1] + _zigzag(-1)),
        Bad("negative_enum_index", "bad_enum_index", key, so1 + neg_enum),
        # Eighteen bytes that claim a 10**12-byte event_id string.
        Bad("huge_string", "oversized_collection", key, so1 + _zigzag(10**12) + b"ab"),
        Bad("too_large", "too_large", key, b"{" + b" " * (100 * 1024) + b"}"),
        Bad("empty", "empty", key, b""),
        Bad("bad_key", "bad_key", b"\xff\xfe" + key, encode_single_object(v2, ok2)),
    ]


def good_value(env: Env, i: int, prefix: str, fmt: str) -> tuple[bytes, bytes, str]:
    """(key, value, writer label) of a valid reading in wire format ``fmt``."""
    if fmt == "json-v2":
        event = reading(i, 2, prefix)
        return event["event_id"].encode(), json.dumps(event).encode(), env.v2.label
    if fmt == "json-v1":  # a v1-shaped object: firmware is ignored, pressure defaults
        event = reading(i, 1, prefix)
        return event["event_id"].encode(), json.dumps(event).encode(), env.v2.label
    version = 1 if fmt.endswith("v1") else 2
    sv = env.v1 if version == 1 else env.v2
    event = reading(i, version, prefix)
    if fmt.startswith("single"):
        value = encode_single_object(sv, event)
    else:
        value = encode_confluent(CONFLUENT_V1 if version == 1 else CONFLUENT_V2, sv, event)
    return event["event_id"].encode(), value, sv.label


GOOD_FORMATS = ("json-v2", "json-v1", "single-v1", "single-v2", "confluent-v1", "confluent-v2")


# ---------------------------------------------------------------------------------------
# Kafka helpers.


async def _send(
    settings: Settings, topic: str, messages: list[tuple[bytes | None, bytes]]
) -> list[int]:
    """Send in order; returns each message's offset."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.effective_bootstrap, linger_ms=5, acks="all"
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        return [(await f).offset for f in futures]
    finally:
        await producer.stop()


async def _read(
    settings: Settings,
    topics: list[str],
    done: Callable[[list[ConsumerRecord]], bool],
    wait_s: float = WAIT_S,
) -> list[ConsumerRecord]:
    """Read ``topics`` from the beginning until ``done(records)`` or ``wait_s`` seconds."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.effective_bootstrap,
        enable_auto_commit=False,
        group_id=None,
        max_partition_fetch_bytes=4 << 20,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        parts = [TopicPartition(t, 0) for t in topics]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + wait_s
        while not done(records) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for msgs in batches.values():
                records.extend(msgs)
    finally:
        await consumer.stop()
    return records


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode("utf-8", "replace") for k, v in (record.headers or ())}


def _dead_for(records: list[ConsumerRecord], dlq: str, raw: str) -> list[ConsumerRecord]:
    return [r for r in records if r.topic == dlq and headers(r).get("rl.error.topic") == raw]


async def _predictions(env: Env, name: str, expected: set[str]) -> OutputCollector:
    collector = OutputCollector(env.settings, env.specs[name], env.catalog)
    await collector.start()
    try:
        deadline = time.monotonic() + WAIT_S
        while not expected <= collector.predictions.keys() and time.monotonic() < deadline:
            await collector.poll(300)
    finally:
        await collector.stop()
    return collector


def dead_letter_metrics(env: Env, pipeline: str) -> Counter[str]:
    with urllib.request.urlopen(env.worker.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "riverline_dead_letters_total" and (
                sample.labels.get("pipeline") == pipeline
            ):
                assert sample.labels["stage"] == "ingest"
                counts[sample.labels["reason"]] += int(sample.value)
    return counts


# ---------------------------------------------------------------------------------------
# Evolution.


async def _produce_both_versions(env: Env, raw: str, n: int) -> dict[str, str]:
    """A v1 producer and a v2 producer (each in three formats) at the same time."""

    async def producer(formats: tuple[str, ...], start: int) -> dict[str, str]:
        sent: dict[str, str] = {}
        messages = []
        for i in range(start, start + n):
            key, value, label = good_value(env, i, "evo", formats[i % len(formats)])
            messages.append((key, value))
            sent[key.decode()] = label
        await _send(env.settings, raw, messages)
        return sent

    v1, v2 = await asyncio.gather(
        producer(("single-v1", "confluent-v1", "json-v1"), 0),
        producer(("confluent-v2", "single-v2", "json-v2"), n),
    )
    return {**v1, **v2}


def test_v1_and_v2_producers_share_a_topic_and_predictions_record_the_writer(env: Env) -> None:
    raw = env.raw("sensor")
    expected = asyncio.run(_produce_both_versions(env, raw, 150))
    assert len(expected) == 300
    assert Counter(expected.values()) == {env.v1.label: 100, env.v2.label: 200}

    collector = asyncio.run(_predictions(env, "sensor", set(expected)))
    assert collector.predictions.keys() == expected.keys()
    assert collector.duplicates == 0
    assert not collector.dead_letters
    for event_id, p in collector.predictions.items():
        assert p.headers["rl.schema"] == expected[event_id] == p.record["schema"]
        assert p.record["model"] == "sensor-power@1"
        assert isinstance(p.record["prediction"], float)

    # Both versions were read into v2: v1 readings got pressure's default, firmware is gone.
    events_topic = env.specs["sensor"].topics(env.settings.namespace).events
    records = asyncio.run(_read(env.settings, [events_topic], lambda rs: len(rs) >= 300))
    assert len(records) == 300
    for r in records:
        writer, event = decode_single_object(env.catalog, r.value)
        assert writer == env.v2
        assert list(event) == env.v2.field_names
        i = int(event["event_id"].rsplit("-", 1)[1])
        v1_shaped = i < 150  # the v1 producer's readings, JSON ones included
        assert event["pressure"] == (1013.25 if v1_shaped else 1000.0 + (i % 9))
        assert headers(r)["rl.schema"] == expected[event["event_id"]]


# ---------------------------------------------------------------------------------------
# Dead letters.


@dataclass
class DeadLetterRun:
    bad: list[Bad]
    by_offset: dict[int, Bad]  # raw offset -> the malformed message sent there
    good: dict[str, str]  # event id -> writer label of the valid readings around them
    dead: list[ConsumerRecord]  # what riverline.dlq holds for this raw topic


@pytest.fixture(scope="module")
def dead_letter_run(env: Env) -> DeadLetterRun:
    """Each malformed kind, with a valid reading before and after it, in one worker run."""
    raw, dlq = env.raw("sensor_dlq"), env.dlq
    bad = bad_messages(env.v1, env.v2, 0)
    messages: list[tuple[bytes | None, bytes]] = []
    good: dict[str, str] = {}
    for i, b in enumerate([*bad, None]):
        key, value, label = good_value(env, i, "dlq", GOOD_FORMATS[i % len(GOOD_FORMATS)])
        messages.append((key, value))
        good[key.decode()] = label
        if b is not None:
            messages.append((b.key, b.value))
    offsets = asyncio.run(_send(env.settings, raw, messages))
    by_offset = {offsets[2 * i + 1]: b for i, b in enumerate(bad)}
    records = asyncio.run(
        _read(env.settings, [dlq], lambda rs: len(_dead_for(rs, dlq, raw)) >= len(bad))
    )
    return DeadLetterRun(bad, by_offset, good, _dead_for(records, dlq, raw))


def test_every_dead_letter_reason_against_the_broker(
    env: Env, dead_letter_run: DeadLetterRun
) -> None:
    run = dead_letter_run
    assert {b.reason for b in run.bad} >= {
        "not_json",
        "missing_field",
        "wrong_type",
        "non_finite",
        "unknown_fingerprint",
        "unknown_confluent_id",
        "truncated",
        "trailing_bytes",
        "bad_union_index",
        "bad_enum_index",
        "oversized_collection",
        "too_large",
        "empty",
        "bad_key",
    }
    assert sorted(int(headers(r)["rl.error.offset"]) for r in run.dead) == sorted(run.by_offset)
    for r in run.dead:
        h = headers(r)
        b = run.by_offset[int(h["rl.error.offset"])]
        assert (r.key, r.value) == (b.key, b.value), b.kind  # original bytes unchanged
        assert h["rl.error.class"] == b.reason, f"{b.kind}: {h['rl.error.message']}"
        assert h["rl.error.topic"] == env.raw("sensor_dlq")
        assert h["rl.error.partition"] == "0"
        assert h["rl.error.stage"] == "ingest"
        assert h["rl.error.schema"] == env.v2.label
        assert len(h["rl.error.message"]) > 10, b.kind

    # The pipeline kept going: every valid reading around them got its prediction.
    collector = asyncio.run(_predictions(env, "sensor_dlq", set(run.good)))
    assert collector.predictions.keys() == run.good.keys()
    for event_id, p in collector.predictions.items():
        assert p.record["schema"] == run.good[event_id]


def test_worker_metrics_count_dead_letters_by_reason(
    env: Env, dead_letter_run: DeadLetterRun
) -> None:
    expected = Counter(b.reason for b in dead_letter_run.bad)
    deadline = time.monotonic() + 10
    while (counts := dead_letter_metrics(env, "sensor_dlq")) != expected:
        assert time.monotonic() < deadline, f"metrics {counts} != {expected}"
        time.sleep(0.3)


# ---------------------------------------------------------------------------------------
# Real clients nobody here wrote.


@pytest.mark.skipif(
    shutil.which("kcat") is None, reason="kcat is not installed (make test installs it)"
)
def test_kcat_json_and_confluent_kafka_avro(env: Env) -> None:
    from confluent_kafka import Producer

    raw = env.raw("sensor_cli")
    bootstrap = env.settings.effective_bootstrap
    expected: dict[str, str] = {}

    # JSON with kcat: one "key<TAB>value" line per event.
    lines = []
    for i in range(20):
        event = reading(i, 2, "kcat")
        lines.append(f"{event['event_id']}\t{json.dumps(event)}")
        expected[event["event_id"]] = env.v2.label
    subprocess.run(
        ["kcat", "-P", "-b", bootstrap, "-t", raw, "-K", "\t"],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        timeout=30,
    )

    # Avro with confluent-kafka, Confluent framing done by hand (no registry here): the
    # body is written by fastavro from the .avsc file, not by Riverline's codec.
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(20, 40):
        version, schema_id = (1, CONFLUENT_V1) if i % 2 else (2, CONFLUENT_V2)
        avsc = json.loads((REPO_ROOT / "schemas" / "sensor" / f"v{version}.avsc").read_text())
        buf = BytesIO()
        fastavro.schemaless_writer(buf, fastavro.parse_schema(avsc), reading(i, version, "ck"))
        event_id = f"ck-{i:06d}"
        producer.produce(
            raw, key=event_id, value=b"\x00" + struct.pack(">I", schema_id) + buf.getvalue()
        )
        expected[event_id] = (env.v1 if version == 1 else env.v2).label
    assert producer.flush(30) == 0

    collector = asyncio.run(_predictions(env, "sensor_cli", set(expected)))
    assert collector.predictions.keys() == expected.keys()
    assert not collector.dead_letters
    for event_id, p in collector.predictions.items():
        assert p.record["schema"] == expected[event_id]

    # And read back with kcat: keys and the rl.schema header of every prediction.
    predictions = env.specs["sensor_cli"].topics(env.settings.namespace).predictions
    out = subprocess.run(
        [
            "kcat",
            "-C",
            "-b",
            bootstrap,
            "-t",
            predictions,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k\t%h\n",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    seen = {}
    for line in out.splitlines():
        key, _, hdrs = line.partition("\t")
        pairs = dict(h.split("=", 1) for h in hdrs.split(","))
        seen[key] = pairs["rl.schema"]
    assert seen == expected


# ---------------------------------------------------------------------------------------
# Accounting.

ACCOUNTING_EVENTS = 20_000
ACCOUNTING_SEED = 20261126


def test_every_raw_offset_ends_exactly_once_in_events_or_dead_letters(env: Env) -> None:
    """20,000 messages, 10% malformed (every kind above, seeded random order)."""
    rng = random.Random(ACCOUNTING_SEED)
    raw, dlq = env.raw("sensor_acct"), env.dlq
    events_topic = env.specs["sensor_acct"].topics(env.settings.namespace).events
    malformed = set(rng.sample(range(ACCOUNTING_EVENTS), ACCOUNTING_EVENTS // 10))
    variants = [bad_messages(env.v1, env.v2, n) for n in range(8)]
    messages: list[tuple[bytes | None, bytes]] = []
    expected_reason: dict[int, str] = {}
    for i in range(ACCOUNTING_EVENTS):
        if i in malformed:
            b = rng.choice(rng.choice(variants))
            messages.append((b.key, b.value))
            expected_reason[i] = b.reason
        else:
            key, value, _ = good_value(env, i, "acct", rng.choice(GOOD_FORMATS))
            messages.append((key, value))
    offsets = asyncio.run(_send(env.settings, raw, messages))
    assert offsets == list(range(ACCOUNTING_EVENTS))  # a fresh topic: index == offset

    def accounted(records: list[ConsumerRecord]) -> bool:
        return (
            sum(1 for r in records if r.topic == events_topic) + len(_dead_for(records, dlq, raw))
            >= ACCOUNTING_EVENTS
        )

    # Generous: the worker runs the features and learn stages on the same events meanwhile.
    records = asyncio.run(_read(env.settings, [events_topic, dlq], accounted, wait_s=180))
    seen: Counter[int] = Counter()
    dead_reasons: dict[int, str] = {}
    for r in records:
        if r.topic == events_topic:
            topic, partition, offset = headers(r)["rl.source"].rsplit(":", 2)
            assert (topic, partition) == (raw, "0")
            seen[int(offset)] += 1
        elif headers(r).get("rl.error.topic") == raw:
            h = headers(r)
            at = int(h["rl.error.offset"])
            seen[at] += 1
            dead_reasons[at] = h["rl.error.class"]
            assert (r.key, r.value) == messages[at]  # original bytes unchanged
    assert set(seen) == set(range(ACCOUNTING_EVENTS)), "some raw offsets are missing"
    assert [o for o, n in seen.items() if n > 1] == [], "some raw offsets appear twice"
    assert dead_reasons == expected_reason
    assert Counter(expected_reason.values()).keys() == {b.reason for b in variants[0]}
