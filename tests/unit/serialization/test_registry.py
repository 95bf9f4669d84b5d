"""Confluent ids through a Schema Registry: resolution, caching, outages, framing, push.

A small in-process HTTP server answers the Confluent API calls Riverline makes, and
records what it was asked; the real registry (Apicurio) is in
tests/integration/test_schema_registry.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from streams.errors import ConfigError, DecodeError
from streams.kafka.process import free_port
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import EventDecoder, decode_single_object, encode_framed
from streams.serialization.registry import RegistrySchemas, load_catalog
from streams.serialization.registry_client import SchemaRegistryClient, SchemaRegistryError
from streams.serialization.registry_push import push_catalog, push_plan
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec

CATALOG_ROOT = REPO_ROOT / "schemas"


class FakeRegistry(ThreadingHTTPServer):
    """Ids by schema text, subjects' versions and modes, and every request's path and auth."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.schemas: dict[int, tuple[str, str]] = {}
        self.subjects: dict[str, list[int]] = {}
        self.modes: dict[str, str] = {}
        self.incompatible: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, schema: str, kind: str = "AVRO") -> int:
        for schema_id, known in self.schemas.items():
            if known == (schema, kind):
                return schema_id
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = (schema, kind)
        return schema_id


class _Handler(BaseHTTPRequestHandler):
    server: FakeRegistry

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _request(self) -> tuple[list[str], Any]:
        self.server.requests.append((self.command, self.path, self.headers.get("Authorization")))
        size = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(size)) if size else None
        return self.path.split("?")[0].strip("/").split("/"), body

    def do_GET(self) -> None:
        parts, _ = self._request()
        if parts[:2] == ["schemas", "ids"] and int(parts[2]) in self.server.schemas:
            schema, kind = self.server.schemas[int(parts[2])]
            return self._answer(200, {"schema": schema, "schemaType": kind})
        return self._answer(404, {"error_code": 40403, "message": "Schema not found"})

    def do_PUT(self) -> None:
        parts, body = self._request()
        self.server.modes[parts[1]] = body["compatibility"]
        self._answer(200, body)

    def do_POST(self) -> None:
        parts, body = self._request()
        registry = self.server
        if parts[0] == "compatibility":
            messages = registry.incompatible.get(parts[2], [])
            return self._answer(200, {"is_compatible": not messages, "messages": messages})
        subject = parts[1]
        if len(parts) == 3:  # register
            if subject in registry.incompatible:
                message = "Incompatible artifact: list of diff types: [pressure at /fields/7]"
                return self._answer(409, {"error_code": 409, "message": message})
            schema_id = registry.add(body["schema"])
            registry.subjects.setdefault(subject, []).append(schema_id)
            return self._answer(200, {"id": schema_id})
        for schema_id in registry.subjects.get(subject, []):  # lookup
            if registry.schemas[schema_id][0] == body["schema"]:
                return self._answer(200, {"id": schema_id, "subject": subject})
        return self._answer(404, {"error_code": 40403, "message": "Schema not found"})


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    server = FakeRegistry()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _catalog(url: str, *, frames_outputs: bool = False, **client: Any) -> SchemaCatalog:
    ids = RegistrySchemas(SchemaRegistryClient(url, **client), frames_outputs=frames_outputs)
    return SchemaCatalog.load(CATALOG_ROOT, registry=ids)


def test_an_id_is_fetched_once_and_matched_by_canonical_form(fake: FakeRegistry) -> None:
    catalog = _catalog(fake.url)
    v1 = catalog.get("sensor", 1)
    # The registry keeps the producer's text: other whitespace, a doc; same canonical form.
    text = json.dumps(v1.schema | {"doc": "registered by a producer"}, indent=2)
    schema_id = fake.add(text)
    decoder = EventDecoder(catalog, "sensor")
    record = _record_of(v1)
    for _ in range(3):
        event = decoder.decode(
            None, encode_framed(b"\x00" + schema_id.to_bytes(4, "big"), v1, record)
        )
        assert (event.writer, event.wire_format) == (v1, "confluent")
    assert [r[1] for r in fake.requests] == [f"/schemas/ids/{schema_id}"]


def _record_of(sv: Any) -> dict[str, Any]:
    """A record of ``sv`` with plain values of each field's type."""
    plain = {"string": "s", "long": 7, "int": 3, "double": 1.5, "float": 0.5, "boolean": True}
    record: dict[str, Any] = {}
    for field in sv.schema["fields"]:
        ftype = field["type"]
        if isinstance(ftype, list):
            value: Any = None
        elif isinstance(ftype, dict):
            kind = ftype["type"]
            value = ftype["symbols"][0] if kind == "enum" else {} if kind == "map" else plain[kind]
        else:
            value = plain[ftype]
        record[field["name"]] = value
    return record


def test_the_registry_replaces_confluent_ids_toml(fake: FakeRegistry) -> None:
    # Id 1 is phishing v1 in confluent-ids.toml; with a registry, only the registry says.
    catalog = _catalog(fake.url)
    with pytest.raises(DecodeError) as caught:
        catalog.resolve_confluent_id(1, "phishing")
    assert caught.value.reason == "unknown_confluent_id"
    assert "not registered" in str(caught.value)
    assert SchemaCatalog.load(CATALOG_ROOT).resolve_confluent_id(1) == catalog.latest("phishing")


@pytest.mark.parametrize(
    ("schema", "kind", "message"),
    [
        (
            json.dumps({"type": "record", "name": "Other", "fields": []}),
            "AVRO",
            "not in the catalog",
        ),
        (
            '{"type": "record", "name": "S", "fields": [{"name": "a", "type": "Nope"}]}',
            "AVRO",
            "references",
        ),
        ('syntax = "proto3"; message M {}', "PROTOBUF", "PROTOBUF schema"),
    ],
)
def test_a_registered_schema_outside_the_catalog_is_its_own_reason(
    fake: FakeRegistry, schema: str, kind: str, message: str
) -> None:
    schema_id = fake.add(schema, kind)
    catalog = _catalog(fake.url)
    for _ in range(2):  # the second answer comes from the cache
        with pytest.raises(DecodeError) as caught:
            catalog.resolve_confluent_id(schema_id, "sensor")
        assert (caught.value.reason, message in str(caught.value)) == (
            "schema_not_in_catalog",
            True,
        )
    assert len(fake.requests) == 1


def test_another_subjects_schema_is_not_this_subjects(fake: FakeRegistry) -> None:
    catalog = _catalog(fake.url)
    schema_id = fake.add(json.dumps(catalog.latest("phishing").schema))
    with pytest.raises(DecodeError) as caught:
        EventDecoder(catalog, "sensor").decode(
            None, b"\x00" + schema_id.to_bytes(4, "big") + b"\x00"
        )
    assert caught.value.reason == "schema_not_in_catalog"
    assert "phishing/v1" in str(caught.value)


def test_a_registry_that_is_down_costs_one_timeout_per_retry_interval() -> None:
    now = [100.0]
    client = SchemaRegistryClient(f"http://127.0.0.1:{free_port()}", timeout=0.5)
    ids = RegistrySchemas(client, retry_after=30.0, clock=lambda: now[0])
    catalog = SchemaCatalog.load(CATALOG_ROOT, registry=ids)
    decoder = EventDecoder(catalog, "sensor")
    reasons = []
    for schema_id in (5, 6, 7):
        with pytest.raises(DecodeError) as caught:
            decoder.decode(None, b"\x00" + schema_id.to_bytes(4, "big") + b"\x02")
        reasons.append(caught.value.reason)
    assert reasons == ["schema_registry_unavailable"] * 3
    assert ids.lookups == 1
    now[0] += 31.0
    with pytest.raises(DecodeError):
        decoder.decode(None, b"\x00\x00\x00\x00\x05\x02")
    assert ids.lookups == 2


def test_outputs_are_framed_with_registered_ids_and_read_back(fake: FakeRegistry) -> None:
    catalog = _catalog(fake.url, frames_outputs=True)
    prediction = catalog.record("prediction")
    header = catalog.output_header("p.predictions", prediction)
    assert header[0] == 0
    schema_id = int.from_bytes(header[1:], "big")
    assert fake.subjects == {"p.predictions-value": [schema_id]}
    assert catalog.output_header("p.predictions", prediction) == header  # registered once
    record = _record_of(prediction)
    data = encode_framed(header, prediction, record)
    # A reader in another process (an empty cache) asks the registry for the id.
    reader = _catalog(fake.url)
    writer, decoded = decode_single_object(reader, data, prediction)
    assert writer == prediction
    assert decoded["event_id"] == record["event_id"]
    # Without output framing the header is single-object encoding's.
    plain = _catalog(fake.url).output_header("p.predictions", prediction)
    assert plain == b"\xc3\x01" + prediction.fingerprint


def test_auth_headers(fake: FakeRegistry) -> None:
    SchemaRegistryClient(fake.url, user="key", password="secret").lookup("s", "{}")
    SchemaRegistryClient(fake.url, token="t0ken").lookup("s", "{}")
    assert [r[2] for r in fake.requests] == ["Basic a2V5OnNlY3JldA==", "Bearer t0ken"]


def test_settings_choose_the_catalog(fake: FakeRegistry, tmp_path: Path) -> None:
    plain = load_catalog(Settings(home=tmp_path))
    assert plain.registry is None
    framed = load_catalog(
        Settings(home=tmp_path, schema_registry_url=fake.url + "/", output_format="confluent")
    )
    assert framed.registry is not None
    assert framed.registry.frames_outputs
    with pytest.raises(ConfigError, match="RIVERLINE_SCHEMA_REGISTRY_URL"):
        load_catalog(Settings(home=tmp_path, output_format="confluent"))
    with pytest.raises(ConfigError, match="not an http"):
        Settings.from_env(schema_registry_url="localhost:8081")


def test_push_sets_modes_registers_in_order_and_reports_refusals(fake: FakeRegistry) -> None:
    catalog = SchemaCatalog.load(CATALOG_ROOT)
    spec = load_spec(REPO_ROOT / "pipelines" / "sensor.toml")
    plan = push_plan(catalog, [spec], "ns.")
    names = [entry.name for entry in plan]
    assert names[:5] == [
        "ns.sensor.raw-value",
        "ns.sensor.events-value",
        "ns.sensor.features-value",
        "ns.sensor.predictions-value",
        "ns.sensor.labels-value",
    ]
    fake.incompatible["ns.sensor.events-value"] = ["{oldSchemaVersion: 1, field: pressure}"]
    fake.incompatible["ns.sensor.features-value"] = []  # a bare verdict, as Apicurio's
    said: list[str] = []
    client = SchemaRegistryClient(fake.url)
    report = push_catalog(client, catalog, plan, say=said.append)
    assert fake.modes["ns.sensor.raw-value"] == "BACKWARD_TRANSITIVE"
    assert fake.modes["ns.sensor.predictions-value"] == "FULL_TRANSITIVE"
    assert [fake.schemas[i][0] for i in fake.subjects["ns.sensor.raw-value"]] == [
        json.dumps(catalog.get("sensor", v).schema) for v in (1, 2)
    ]
    assert [(r.subject, r.version) for r in report.refused] == [
        ("ns.sensor.events-value", catalog.get("sensor", 1).label),
        ("ns.sensor.events-value", catalog.get("sensor", 2).label),
        ("ns.sensor.features-value", catalog.record("feature_vector").label),
    ]
    assert "field: pressure" in str(report.refused[0])
    assert "HTTP 409" in str(report.refused[2])
    assert "pressure at /fields/7" in str(report.refused[2])
    # Pushed again, registered versions keep their ids without a compatibility check.
    fake.incompatible.clear()
    before = dict(report.ids)
    again = push_catalog(client, catalog, plan, say=said.append)
    assert {k: v for k, v in again.ids.items() if k in before} == before


def test_refusals_and_outages_are_told_apart(fake: FakeRegistry) -> None:
    with pytest.raises(SchemaRegistryError) as caught:
        SchemaRegistryClient(fake.url).schema_by_id(999)
    assert (caught.value.status, caught.value.error_code) == (404, 40403)
    assert "Schema not found" in str(caught.value)


def test_a_pipeline_writes_its_three_outputs_in_confluent_framing(fake: FakeRegistry) -> None:
    from streams.features.stage import Featurization
    from streams.ingestion.producer import dataset_events
    from streams.ingestion.stage import Ingestion
    from streams.messages import InMessage
    from streams.models.stage import Predictor
    from streams.pipeline.onepass import OnePass

    spec = load_spec(REPO_ROOT / "pipelines" / "phishing.toml")
    topics = spec.topics("")

    def run(catalog: SchemaCatalog) -> list[tuple[str, bytes]]:
        one = OnePass(
            Ingestion(spec, catalog, events_topic=topics.events, dlq_topic="d", max_bytes=1 << 20),
            Featurization(spec, catalog, features_topic=topics.features, dlq_topic="d"),
            Predictor(spec, catalog, predictions_topic=topics.predictions, dlq_topic="d"),
            raw_topic=topics.raw,
        )
        events = list(dataset_events(spec, "phishing", "r", 1_700_000_000_000))[:5]
        raw = [
            InMessage(topics.raw, 0, i, None, json.dumps(e).encode(), 1_000 + i)
            for i, e in enumerate(events)
        ]
        return [(out.topic, out.value) for out in one.process(raw).sends]

    framed = run(_catalog(fake.url, frames_outputs=True))
    plain = run(SchemaCatalog.load(CATALOG_ROOT))
    ids = {subject: versions[0] for subject, versions in fake.subjects.items()}
    assert set(ids) == {f"{t}-value" for t in (topics.events, topics.features, topics.predictions)}
    assert len(framed) == len(plain) == 15
    reader = _catalog(fake.url)
    for (topic, value), (_, single) in zip(framed, plain, strict=True):
        assert value[:5] == b"\x00" + ids[f"{topic}-value"].to_bytes(4, "big")
        assert value[5:] == single[10:] or topic == topics.predictions  # same Avro body
        assert decode_single_object(reader, value)[0] == decode_single_object(reader, single)[0]
