"""Riverline with a real Schema Registry (Apicurio, Confluent API) and Confluent's clients.

A producer with confluent-kafka's ``AvroSerializer`` (auto-registration) writes
``P.raw``; a worker with ``RIVERLINE_OUTPUT_FORMAT=confluent`` predicts; confluent-kafka's
``AvroDeserializer`` and kcat read ``P.predictions``; ``riverline schemas push`` registers
the catalog and the registry refuses an incompatible version. Sizes: 200 events by default,
``RIVERLINE_REGISTRY_EVENTS`` for more (the Phishing dataset has 1,250).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import fastavro
import pytest
from click.testing import CliRunner, Result
from registrykit import LocalRegistry

from streams.cli.main import cli
from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import dataset_events
from streams.kafka.broker import free_port
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.serialization.registry_client import SchemaRegistryClient
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"
EVENTS = int(os.environ.get("RIVERLINE_REGISTRY_EVENTS", "200"))
#: A registry just started on a busy machine answers its first requests slowly.
TIMEOUT = 20.0
#: A schema no catalog subject has: its id on P.raw is a dead letter of its own.
FOREIGN = {
    "type": "record",
    "name": "Foreign",
    "namespace": "elsewhere",
    "fields": [{"name": "x", "type": "long"}],
}


@pytest.fixture(scope="module")
def registry(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRegistry]:
    """Apicurio Registry on free loopback ports for this module, stopped at its end."""
    log = tmp_path_factory.mktemp("registry") / "apicurio.log"
    local = LocalRegistry(base_settings.cache_root, log)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def _consume(bootstrap: str, topic: str, count: int, timeout: float = 90.0) -> list[Any]:
    """``count`` messages of ``topic`` from the start, read by confluent-kafka."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{os.getpid()}-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                messages.append(msg)
    finally:
        consumer.close()
    return messages


def _produce_with_serializer(url: str, bootstrap: str, topic: str, events: list[Any]) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentRegistry
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    schema = (REPO_ROOT / "schemas" / "phishing" / "v1.avsc").read_text()
    context = SerializationContext(topic, MessageField.VALUE)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    with ConfluentRegistry({"url": url, "timeout": TIMEOUT}) as client:
        serializer = AvroSerializer(client, schema, conf={"auto.register.schemas": True})
        for event in events:
            producer.produce(topic, key=event["event_id"], value=serializer(event, context))
    assert producer.flush(30) == 0


def _kcat_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every value of ``topic`` as kcat reads it: ``%R`` is the length, 4 bytes big-endian."""
    out = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%R%s"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    values, at = [], 0
    while at < len(out):
        (size,) = struct.unpack(">I", out[at : at + 4])
        values.append(out[at + 4 : at + 4 + size])
        at += 4 + size
    return values


def _kcat_has_avro() -> bool:
    done = subprocess.run(["kcat", "-V"], capture_output=True, text=True, check=False)
    return "avro" in (done.stdout + done.stderr).lower()


def _kcat_avro_records(url: str, bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """``kcat -s value=avro -r URL``'s records, or where kcat was built without Avro (as
    Debian's is), what it would print: kcat's raw values decoded by :func:`_kcat_avro`."""
    if not _kcat_has_avro():
        return _kcat_avro(url, _kcat_values(bootstrap, topic))
    out = subprocess.run(
        ["kcat", "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-J",
         "-s", "value=avro", "-r", url],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    payloads = [json.loads(line)["payload"] for line in out.splitlines() if line.strip()]
    return [json.loads(p) if isinstance(p, str) else p for p in payloads]


def _kcat_avro(url: str, values: list[bytes]) -> list[dict[str, Any]]:
    """What ``kcat -s value=avro -r URL`` prints: the id's schema from the registry's REST
    API (``GET /schemas/ids/<id>``), the body read by fastavro."""
    schemas: dict[int, Any] = {}
    records = []
    for value in values:
        assert value[0] == 0, "not Confluent framing"
        (schema_id,) = struct.unpack(">I", value[1:5])
        if schema_id not in schemas:
            text, _ = SchemaRegistryClient(url, timeout=TIMEOUT).schema_by_id(schema_id)
            schemas[schema_id] = fastavro.parse_schema(json.loads(text))
        records.append(fastavro.schemaless_reader(BytesIO(value[5:]), schemas[schema_id], None))
    return records


def test_confluent_clients_through_the_pipeline(
    registry: LocalRegistry, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentRegistry
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    settings = settings_factory(
        web_port=free_port(),
        sink_enabled=False,
        schema_registry_url=registry.url,
        schema_registry_timeout=TIMEOUT,
        output_format="confluent",
    )
    spec = load_spec(PHISHING)
    topics = spec.topics(settings.namespace)
    bootstrap = settings.effective_bootstrap
    ensure_topics(
        bootstrap, shared_topic_configs(settings) + pipeline_topic_configs(settings, spec)
    )
    events = list(dataset_events(spec, "phishing", "sr", 1_700_000_000_000))[:EVENTS]
    foreign_id = SchemaRegistryClient(registry.url, timeout=TIMEOUT).register(
        "foreign-value", json.dumps(FOREIGN)
    )

    worker = WorkerProcess(settings, [PHISHING], tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        _produce_with_serializer(registry.url, bootstrap, topics.raw, events)
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topics.raw, key="foreign", value=b"\x00" + struct.pack(">I", foreign_id))
        assert producer.flush(30) == 0
        predictions = _consume(bootstrap, topics.predictions, len(events))
        dead = _consume(bootstrap, settings.topic("riverline.dlq"), 1)
    finally:
        code = worker.stop()
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]

    # Confluent's deserializer reads every prediction, by the id Riverline registered.
    context = SerializationContext(topics.predictions, MessageField.VALUE)
    with ConfluentRegistry({"url": registry.url, "timeout": TIMEOUT}) as client:
        deserializer = AvroDeserializer(client)
        records = [deserializer(m.value(), context) for m in predictions]
    assert sorted(r["event_id"] for r in records) == sorted(e["event_id"] for e in events)
    assert {r["schema"].split("/")[0] for r in records} == {"phishing"}
    registered = SchemaRegistryClient(registry.url, timeout=TIMEOUT).lookup(
        f"{topics.predictions}-value", (REPO_ROOT / "schemas/riverline/prediction.avsc").read_text()
    )
    assert {struct.unpack(">I", m.value()[1:5])[0] for m in predictions} == {registered}
    # Lineage headers are unchanged.
    assert all(dict(m.headers())["rl.event_id"] == m.key() for m in predictions)

    # The id whose schema is in no catalog subject is a dead letter with its own reason.
    assert [dict(m.headers())["rl.error.class"] for m in dead] == [b"schema_not_in_catalog"]

    # kcat reads them too (make test installs it).
    by_kcat = _kcat_avro_records(registry.url, bootstrap, topics.predictions)
    assert sorted(r["event_id"] for r in by_kcat) == sorted(r["event_id"] for r in records)


def test_schemas_push_registers_and_reports_refusals(
    registry: LocalRegistry, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO_ROOT / "schemas", schemas)
    settings = settings_factory(
        bootstrap=None,
        schema_registry_url=registry.url,
        schema_registry_timeout=TIMEOUT,
        schemas_dir=schemas,
    )

    def push() -> Result:
        # In this process (a subprocess would add seconds of imports), as the command runs.
        env = {k: v for k, v in settings.child_env().items() if k.startswith("RIVERLINE_")}
        return CliRunner().invoke(cli, ["schemas", "push", "--pipeline", str(PHISHING)], env=env)

    first = push()
    assert first.exit_code == 0, first.output
    raw_subject = f"{settings.namespace}phishing.raw-value"
    assert f"{raw_subject}: phishing/v1/" in first.stdout

    # v2 makes a field of v1 required with no default: BACKWARD_TRANSITIVE refuses it.
    v1 = json.loads((schemas / "phishing" / "v1.avsc").read_text())
    v1["fields"].append({"name": "campaign", "type": "string"})
    (schemas / "phishing" / "v2.avsc").write_text(json.dumps(v1))
    second = push()
    assert second.exit_code == 1, second.output
    refused = [line for line in second.stderr.splitlines() if "refused" in line]
    assert any(raw_subject in line and "phishing/v2/" in line for line in refused), second.stderr
    assert "campaign" in second.stderr
