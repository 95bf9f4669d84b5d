"""Hostile values never cost a valid event, a valid label, or the agent.

A worker on the phishing pipeline gets, in the same batches, valid events and raw
messages with valid syntax but hostile values (every kind below), then delayed labels on
``phishing.labels``: valid ones for half of the valid events, interleaved with hostile
ones. Every valid event must be predicted once, every raw offset must be on
``phishing.events`` or ``riverline.dlq`` exactly once, every hostile label must be a dead
letter, every valid label learned, and the worker must stay up: no failure counted, its
``/ready`` 200 throughout.
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from faultkit import read_all
from prometheus_client.parser import text_string_to_metric_families
from river import datasets

from streams.cli.workerproc import WorkerProcess
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"
NOW_MS = int(time.time() * 1000)
DEEP = "[" * 100_000 + "]" * 100_000


def _valid(i: int, labelled: bool) -> dict[str, Any]:
    x, y = list(datasets.Phishing())[i]
    return {
        "event_id": f"ok-{i:04d}",
        "event_time": NOW_MS + i,
        **x,
        "is_phishing": y if labelled else None,
    }


def _hostile_events() -> dict[str, tuple[bytes, str | None]]:
    """Raw message values of every hostile kind, by name, with the dead-letter reason each
    must get (None: a valid event after all, which must be predicted)."""
    base = _valid(0, True)
    n = iter(range(1000))

    def event(**changes: Any) -> bytes:
        return json.dumps({**base, "event_id": f"h-{next(n)}", **changes}).encode()

    def inserted(raw: bytes) -> bytes:
        """``raw`` as the value of ``https``, which comes before an ordinary field."""
        return event().replace(b'"https": ', b'"https": ' + raw + b', "x": ')

    return {
        "lone surrogate in the id": (event(event_id="\ud800"), "bad_string"),
        "lone surrogate in an unknown field": (event(note="a\udfffb"), None),
        "id of 400 KB": (event(event_id="i" * 400_000), "id_too_long"),
        "id as an object": (event(event_id={"a": 1}), "wrong_type"),
        "id as a list": (event(event_id=["a"]), "wrong_type"),
        "string where a number goes": (event(https="yes"), "wrong_type"),
        "boolean where a number goes": (event(long_url=True), "wrong_type"),
        "NaN": (inserted(b"NaN"), "non_finite"),
        "1e309": (inserted(b"1e309"), "non_finite"),
        "a 5000-digit integer": (inserted(b"9" * 5000), "not_json"),
        "an int beyond the long range": (event(ip_in_url=2**70), "wrong_type"),
        "deep nesting in a field": (inserted(DEEP.encode()), "not_json"),
        "event time before 1970": (event(event_time=-1), "bad_event_time"),
        "event time in the year 3000": (event(event_time=32_503_680_000_000), "bad_event_time"),
        "event time as text": (event(event_time="yesterday"), "bad_timestamp"),
        "missing required field": (
            json.dumps({k: v for k, v in base.items() if k != "https"}).encode(),
            "missing_field",
        ),
        "null where required": (event(popup_window=None), "wrong_type"),
        "a JSON array": (b"[1, 2, 3]", "not_object"),
        "empty value": (b"", "empty"),
        "invalid UTF-8": (b'{"event_id": "\xff\xfe"}', "not_json"),
        "Avro magic, truncated body": (b"\xc3\x01" + b"\x00" * 8 + b"\x02", "unknown_fingerprint"),
        "Confluent magic, unknown id": (
            b"\x00" + struct.pack(">I", 987654) + b"\x00",
            "unknown_confluent_id",
        ),
        "a huge string under the size limit": (event(note="n" * 900_000), None),
    }


def _hostile_labels() -> dict[str, tuple[bytes | None, bytes, str]]:
    """(key, value, dead-letter reason) of every hostile delayed label, by name."""
    label = b'{"event_id": "ok-0001", "label": '
    return {
        "nested label": (None, label + DEEP.encode() + b"}", "bad_label"),
        "label as a list": (None, label + b"[true]}", "label_type"),
        "label as text for a binary model": (None, label + b'"yes"}', "label_type"),
        "NaN label": (None, label + b"NaN}", "non_finite"),
        "null label": (None, label + b"null}", "label_type"),
        "lone surrogate in the event id": (
            None,
            b'{"event_id": "\\ud800", "label": true}',
            "bad_string",
        ),
        "no event id": (None, b'{"label": true}', "missing_event_id"),
        "event id of 2 KB": (
            None,
            json.dumps({"event_id": "e" * 2048, "label": True}).encode(),
            "id_too_long",
        ),
        "event id as a number": (None, b'{"event_id": 12, "label": true}', "bad_event_id"),
        "not JSON": (b"ok-0001", b"{nope", "bad_label"),
        "a JSON string": (b"ok-0001", b'"true"', "bad_label"),
    }


async def _produce(settings: Settings, topic: str, messages: list[Any]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.effective_bootstrap, max_request_size=4 << 20, linger_ms=50
    )
    await producer.start()
    try:
        futures = []
        for key, value, headers in messages:
            futures.append(await producer.send(topic, value, key=key, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _wait(what: str, done: Any, worker: WorkerProcess, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert worker.proc is not None
        assert worker.proc.poll() is None, f"worker died: {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _metric(worker: WorkerProcess, name: str) -> float:
    """The sum of a metric's samples on the worker's /metrics (0 if it has none)."""
    with urllib.request.urlopen(worker.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


def test_hostile_values_cost_nothing_else(settings_factory: Any, tmp_path: Path) -> None:
    settings = settings_factory(web_port=free_port(), batch_size=500)
    spec = load_spec(PHISHING)
    topics = spec.topics(settings.namespace)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    hostile = _hostile_events()
    assert sum(reason is not None for _, reason in hostile.values()) >= 12
    rows = list(datasets.Phishing())
    raw: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    expected: dict[int, str | None] = {}  # raw offset -> dead-letter reason (None: valid)
    valid_ids: list[str] = []
    kinds = iter(hostile.values())
    # Producers' rl.* headers must not pass for Riverline's (lineage, dead-letter source).
    forged = [("rl.event_id", b"forged"), ("rl.error.offset", b"0"), ("rl.error.topic", b"x")]
    for i in range(60):  # valid events, a hostile one after every other
        event = _valid(i, labelled=i % 2 == 0)  # odd ones learn from a delayed label
        expected[len(raw)] = None
        raw.append((event["event_id"].encode(), json.dumps(event).encode(), forged))
        valid_ids.append(event["event_id"])
        if i % 2 == 1 and (kind := next(kinds, None)) is not None:
            expected[len(raw)] = kind[1]
            raw.append((b"hostile", kind[0], forged))
    for value, reason in kinds:
        expected[len(raw)] = reason
        raw.append((b"hostile", value, forged))
    accepted = [
        json.loads(value)["event_id"] for value, reason in hostile.values() if reason is None
    ]
    bad_labels = _hostile_labels()
    labels: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []
    good = [i for i in range(60) if i % 2 == 1]
    for i, odd in enumerate(good):
        if i < len(bad_labels):
            key, value, _ = list(bad_labels.values())[i]
            labels.append((key, value, forged))
        y = rows[odd][1]
        labels.append((None, json.dumps({"event_id": f"ok-{odd:04d}", "label": y}).encode(), []))

    worker = WorkerProcess(settings, [PHISHING], tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(_produce(settings, topics.raw, raw))
        asyncio.run(_produce(settings, topics.labels, labels))

        def learned() -> int:
            status: Any = worker.get_json("/status.json")
            return int(status["pipelines"][spec.name]["samples_seen"])

        want = 60 + len(accepted)
        _wait("every valid event learned", lambda: learned() >= want, worker)
        time.sleep(1.0)  # nothing more should come
        assert learned() == want
        ready: Any = worker.get_json("/ready")
        assert ready["ready"] is True, ready
        assert _metric(worker, "riverline_pipeline_failures_total") == 0
        assert _metric(worker, "riverline_pipeline_up") == 1
    finally:
        code = worker.stop(timeout=60)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]

    events = read_all(settings, topics.events)
    predictions = read_all(settings, topics.predictions)
    dlq = read_all(settings, settings.topic("riverline.dlq"))
    assert all(r.signed for r in events + predictions + dlq)
    # Every valid event predicted once, under its own id, not the forged header's.
    predicted = Counter(r.headers["rl.event_id"] for r in predictions)
    assert predicted == Counter(valid_ids + accepted)
    # Every raw offset exactly once: on P.events if valid, else a dead letter with the
    # reason of its kind, whatever rl.error.* headers its producer forged.
    places: dict[int, list[str]] = {}
    for r in events:
        places.setdefault(int(r.headers["rl.source"].rsplit(":", 1)[1]), []).append("events")
    raw_dead = [r for r in dlq if r.headers.get("rl.error.topic") == topics.raw]
    for r in raw_dead:
        places.setdefault(int(r.headers["rl.error.offset"]), []).append(r.headers["rl.error.class"])
        assert r.headers["untrusted.rl.error.offset"] == "0"
    assert places == {o: ["events" if why is None else why] for o, why in expected.items()}
    # Every hostile label a dead letter with its reason; every valid one learned (above).
    label_dead = [r for r in dlq if r.headers.get("rl.error.topic") == topics.labels]
    reasons = [reason for _, _, reason in bad_labels.values()]
    assert sorted(r.headers["rl.error.class"] for r in label_dead) == sorted(reasons)
