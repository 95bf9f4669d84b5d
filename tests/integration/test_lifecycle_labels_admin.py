"""Model lifecycle on a real worker: delayed labels, shadows, the admin API and its CLI.

One worker runs Phishing with a Naive Bayes shadow. Its first 400 events
(``RIVERLINE_DELAY_EVENTS``; 1250 for the whole dataset) are produced with the target
null and every label is sent on ``P.labels`` 50 events after its event, in lock-step with
the worker, as River's ``delay=50`` reveals it: the label of event i - 50 is joined (the
worker says so on ``/models``) after event i - 1 is predicted and before event i is sent.
The champion's accuracy and ROC AUC, joined with the labels, then equal River's
``progressive_val_score(..., delay=50)`` over the same events, computed here; the
figure docs/concepts.md quotes is River's over the whole dataset. Then the admin API refuses
missing and weak tokens, and ``riverline models promote`` and ``rollback`` change the
model that the next predictions carry, with audit records.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from river_offline import logistic_regression, phishing_rows, progressive_scores, quoted

from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import dataset_events
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.pipeline.stage import now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object, encode_single_object
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec
from streams.store.outputs import score_predictions
from streams.trust.access import token_digest

pytestmark = pytest.mark.integration

DELAY = 50
#: Events of the delayed-label run: each past the first 50 is a round trip to the worker.
DELAY_EVENTS = int(os.environ.get("RIVERLINE_DELAY_EVENTS", "400"))
OPERATOR = "op-" + uuid.uuid4().hex
VIEWER = "view-" + uuid.uuid4().hex

SHADOW = """
[[shadow]]
name = "phishing-nb"

[[shadow.steps]]
estimator = "naive_bayes.GaussianNB"
"""


@dataclass
class Live:
    settings: Settings
    spec: PipelineSpec
    spec_path: Path
    catalog: SchemaCatalog
    worker: WorkerProcess


@pytest.fixture(scope="module")
def live(settings_factory, tmp_path_factory) -> Iterator[Live]:
    folder = Path(tmp_path_factory.mktemp("lifecycle"))
    spec_path = folder / "phishing.toml"
    spec_path.write_text((REPO_ROOT / "pipelines" / "phishing.toml").read_text() + SHADOW)
    tokens = f"ops:operator:{token_digest(OPERATOR)},eve:viewer:{token_digest(VIEWER)}"
    settings = settings_factory(web_port=free_port(), admin_tokens=tokens)
    spec = load_spec(spec_path)
    catalog = SchemaCatalog.load(settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    worker = WorkerProcess(settings, [spec_path], folder / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        yield Live(settings, spec, spec_path, catalog, worker)
    finally:
        assert worker.stop() == 0, (folder / "worker.log").read_text()[-3000:]


class Reader:
    """Reads a topic from the beginning, decoding Riverline's single-object records."""

    def __init__(self, live: Live, topic: str, record: str) -> None:
        self.live = live
        self.topic = topic
        self.schema = live.catalog.record(record)
        self.records: list[dict[str, Any]] = []
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=live.settings.effective_bootstrap, group_id=None
        )

    async def start(self) -> Reader:
        await self.consumer.start()
        parts = [TopicPartition(self.topic, p) for p in range(self.live.spec.partitions)]
        if self.topic.endswith("riverline.audit"):
            parts = [TopicPartition(self.topic, 0)]
        self.consumer.assign(parts)
        await self.consumer.seek_to_beginning(*parts)
        return self

    async def poll(self, timeout_ms: int = 100) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms)
        for msgs in batches.values():
            for m in msgs:
                self.records.append(
                    decode_single_object(self.live.catalog, m.value, self.schema)[1]
                )

    async def wait_for(self, n: int, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while len(self.records) < n:
            assert time.monotonic() < deadline, f"{len(self.records)} of {n} on {self.topic}"
            await self.poll()

    async def stop(self) -> None:
        await self.consumer.stop()


def _events(live: Live, limit: int | None = None, *, labelled: bool) -> list[dict[str, Any]]:
    run = uuid.uuid4().hex[:8]
    events = list(dataset_events(live.spec, "phishing", run, now_ms()))[:limit]
    if not labelled:
        for e in events:
            e["label_"] = e.pop(live.spec.model.target)
            e[live.spec.model.target] = None
    return events


async def _send(producer: AIOKafkaProducer, topic: str, key: str, value: bytes) -> None:
    await (await producer.send(topic, value=value, key=key.encode()))


def _label_message(label_schema: Any, i: int, event: dict[str, Any]) -> bytes:
    """Event ``event``'s label, in both wire formats by turns (JSON, Avro)."""
    if i % 2:
        return json.dumps({"event_id": event["event_id"], "label": event["label_"]}).encode()
    record = {"event_id": event["event_id"], "label": event["label_"], "label_ts": 0}
    return encode_single_object(label_schema, record)


async def _joined(live: Live, n: int, within: float = 60.0) -> None:
    """Wait until the worker has joined ``n`` labels (its ``/models`` count)."""
    deadline = time.monotonic() + within
    while True:
        _, body = await asyncio.to_thread(_get, live, "/models", VIEWER)
        joined = body["pipelines"]["phishing"]["labels"]["joined"]
        if joined >= n:
            return
        assert time.monotonic() < deadline, f"{joined} of {n} labels joined after {within} s"
        await asyncio.sleep(0.002)


async def _delayed_run(live: Live) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    topics = live.spec.topics(live.settings.namespace)
    label_schema = live.catalog.record("label")
    events = _events(live, DELAY_EVENTS, labelled=False)
    producer = AIOKafkaProducer(bootstrap_servers=live.settings.effective_bootstrap)
    await producer.start()
    preds = await Reader(live, topics.predictions, "prediction").start()
    try:
        for i, event in enumerate(events):
            if i >= DELAY:
                # River's delay=50: event i - 50's label is learned after event i - 1 is
                # predicted and before event i is: one step at a time.
                await preds.wait_for(i)
                late = events[i - DELAY]
                label = _label_message(label_schema, i, late)
                await _send(producer, topics.labels, late["event_id"], label)
                await _joined(live, i - DELAY + 1)
            body = {k: v for k, v in event.items() if k != "label_"}
            await _send(producer, topics.raw, event["event_id"], json.dumps(body).encode())
        await preds.wait_for(len(events))
    finally:
        await producer.stop()
        await preds.stop()
    return events, preds.records


@pytest.fixture(scope="module")
def delayed(live: Live) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return asyncio.run(_delayed_run(live))


def test_delayed_labels_give_river_delay_50_scores(delayed, live: Live) -> None:
    events, records = delayed
    labels = {e["event_id"]: e["label_"] for e in events}
    by_id = {r["event_id"]: r for r in records}
    assert sorted(by_id) == sorted(labels)
    assert all(r["label"] is None for r in records)  # the events carried no label
    scored = [{**by_id[e["event_id"]], "label": labels[e["event_id"]]} for e in events]
    live_scores = score_predictions("binary", scored)
    river = progressive_scores(lambda: phishing_rows(len(events)), logistic_regression, delay=DELAY)
    print(f"\ndelay-{DELAY}, {len(events)} events, live: {live_scores}; River offline: {river}")
    assert live_scores == pytest.approx(river, abs=1e-12)
    whole = progressive_scores(phishing_rows, logistic_regression, delay=DELAY)
    docs = quoted(
        r"sent 50 events late, the live accuracy is ([\d.]+%), as River's", "docs/concepts.md"
    )
    assert docs == (f"{whole['accuracy']:.2%}",)
    assert {r["model"] for r in records} == {"phishing-lr@1"}
    body = _get(live, "/models", VIEWER)[1]
    assert body["pipelines"]["phishing"]["labels"]["joined"] == len(events) - DELAY


def test_shadow_predictions_go_to_the_shadow_topic_only(delayed, live: Live) -> None:
    events, _ = delayed
    topic = live.spec.topics(live.settings.namespace).predictions + ".shadow"

    async def read() -> list[dict[str, Any]]:
        reader = await Reader(live, topic, "prediction").start()
        try:
            await reader.wait_for(len(events))
        finally:
            await reader.stop()
        return reader.records

    shadow = asyncio.run(read())
    assert {r["model"] for r in shadow} == {"phishing-nb@1"}
    assert {r["event_id"] for r in shadow} == {e["event_id"] for e in events}


def _call(live: Live, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(live.worker.url + path, data, headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _get(live: Live, path: str, token: str | None) -> tuple[int, Any]:
    return _call(live, path, token)


def test_admin_api_needs_a_token_and_the_operator_role(delayed, live: Live) -> None:
    promote = {"pipeline": "phishing", "model": "phishing-nb", "why": "test"}
    assert _get(live, "/models", None)[0] == 401
    assert _get(live, "/models", "not-a-token")[0] == 401
    assert _get(live, "/models", VIEWER)[0] == 200
    assert _call(live, "/models/promote", None, promote)[0] == 401
    status, body = _call(live, "/models/promote", VIEWER, promote)
    assert status == 403, body
    assert "operator" in body["error"]
    # Nothing changed.
    assert _get(live, "/models", VIEWER)[1]["pipelines"]["phishing"]["champion"] == (
        "phishing-lr@1"
    )


def _cli(live: Live, token: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = live.settings.child_env()
    env.pop("RIVERLINE_ADMIN_TOKEN", None)
    if token is not None:
        env["RIVERLINE_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "streams", "models", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _next_models(live: Live, n: int = 5) -> set[str]:
    """Send n labelled events; the models their predictions carry."""
    topics = live.spec.topics(live.settings.namespace)
    events = _events(live, n, labelled=True)
    ids = {e["event_id"] for e in events}
    producer = AIOKafkaProducer(bootstrap_servers=live.settings.effective_bootstrap)
    await producer.start()
    preds = await Reader(live, topics.predictions, "prediction").start()
    try:
        for e in events:
            await _send(producer, topics.raw, e["event_id"], json.dumps(e).encode())
        deadline = time.monotonic() + 60
        while ids - {r["event_id"] for r in preds.records}:
            assert time.monotonic() < deadline, "the new events were not predicted"
            await preds.poll()
    finally:
        await producer.stop()
        await preds.stop()
    return {r["model"] for r in preds.records if r["event_id"] in ids}


def test_promote_then_rollback_with_the_cli(delayed, live: Live) -> None:
    denied = _cli(live, None, "promote", "--pipeline", "phishing", "--model", "phishing-nb")
    assert denied.returncode == 1
    assert "401" in denied.stderr, denied.stderr
    weak = _cli(live, VIEWER, "promote", "--pipeline", "phishing", "--model", "phishing-nb")
    assert weak.returncode == 1
    assert "403" in weak.stderr, weak.stderr

    done = _cli(
        live,
        OPERATOR,
        "promote",
        "--pipeline",
        "phishing",
        "--model",
        "phishing-nb",
        "--why",
        "nb looks better",
    )
    assert done.returncode == 0, done.stderr
    listed = json.loads(_cli(live, VIEWER, "list", "--json").stdout)
    assert listed["pipelines"]["phishing"]["champion"] == "phishing-nb@2"
    assert asyncio.run(_next_models(live)) == {"phishing-nb@2"}

    back = _cli(live, OPERATOR, "rollback", "--pipeline", "phishing", "--why", "nb was worse")
    assert back.returncode == 0, back.stderr
    listed = json.loads(_cli(live, VIEWER, "list", "--json").stdout)
    # lr@2 was saved just before the promotion; the rollback restores it as lr@3.
    assert listed["pipelines"]["phishing"]["champion"] == "phishing-lr@3"
    assert asyncio.run(_next_models(live)) == {"phishing-lr@3"}

    async def audits() -> list[dict[str, Any]]:
        reader = await Reader(live, live.settings.topic("riverline.audit"), "audit").start()
        try:
            await reader.wait_for(2)
        finally:
            await reader.stop()
        return reader.records

    found = [
        (a["action"], a["actor"], a["previous"], a["target"], a["reason"])
        for a in asyncio.run(audits())
    ]
    assert found == [
        ("promote", "ops", "phishing-lr@2", "phishing-nb@2", "nb looks better"),
        ("rollback", "ops", "phishing-nb@2", "phishing-lr@3", "nb was worse"),
    ]
    metrics = urllib.request.urlopen(live.worker.url + "/metrics", timeout=10).read().decode()
    for action in ("promote", "rollback"):
        assert f'action="{action}"' in metrics
    assert "riverline_registry_actions_total" in metrics


def test_cli_says_when_no_worker_answers(live: Live) -> None:
    env = live.settings.child_env()
    env["RIVERLINE_WEB_PORT"] = str(free_port())
    result = subprocess.run(
        [sys.executable, "-m", "streams", "models", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no worker answers" in result.stderr
