"""The phishing pipeline end to end under ``kafka up --secure``'s ACLs, each party as its
own principal: the worker as ``riverline`` (topics, Faust app, checkpoints), events
produced as ``producer`` to ``P.raw`` (``riverline produce``'s code), predictions read as
``consumer`` from ``P.predictions``. A broker of this module's own, on free ports.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import TopicAuthorizationFailedError
from click.testing import CliRunner
from pydantic import SecretStr

from streams.cli.main import cli
from streams.cli.workerproc import WorkerProcess
from streams.ingestion.producer import produce_dataset
from streams.kafka.auth import PRINCIPALS, scram_client_kwargs
from streams.kafka.broker import LocalBroker, free_port
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec
from streams.store.outputs import read_all_predictions

pytestmark = pytest.mark.integration

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"
N_EVENTS = 300


@dataclass
class Secured:
    settings: Settings
    """Plain settings of the secure broker (no credentials): add them per principal."""
    passwords: dict[str, str]

    def as_principal(self, principal: str, **overrides: Any) -> Settings:
        return self.settings.model_copy(
            update={
                "kafka_security": "sasl_scram",
                "kafka_username": principal,
                "kafka_password": SecretStr(self.passwords[principal]),
                **overrides,
            }
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, base_settings: Settings) -> Iterator[Secured]:
    if shutil.which("java") is None:
        pytest.skip("no Java here: the secure broker is a local one")
    home = tmp_path_factory.mktemp("secure-pipeline-home")
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    env: dict[str, str | None] = {
        "RIVERLINE_HOME": str(home),
        "RIVERLINE_CACHE_DIR": str(base_settings.cache_root),
        "RIVERLINE_KAFKA_PORT": str(port),
        "RIVERLINE_KAFKA_CONTROLLER_PORT": str(controller_port),
        "RIVERLINE_BOOTSTRAP": None,
        "RIVERLINE_NAMESPACE": None,
        "RIVERLINE_KAFKA_SECURITY": None,
        **{f"RIVERLINE_KAFKA_{p.upper()}_PASSWORD": None for p in PRINCIPALS},
    }
    settings = Settings.from_env(
        home=home,
        cache_dir=base_settings.cache_root,
        kafka_port=port,
        kafka_controller_port=controller_port,
        bootstrap=None,
        namespace="",
        web_port=free_port(),
    )
    broker = LocalBroker(settings)
    try:
        result = CliRunner().invoke(
            cli, ["kafka", "up", "--secure", "--pipeline", str(PHISHING)], env=env
        )
        assert result.exit_code == 0, result.output
        broker = LocalBroker(settings)
        stored = json.loads(broker.credentials_path.read_text())["generated"]
        yield Secured(settings, {p: stored[p] for p in PRINCIPALS})
    finally:
        broker.down(log=lambda _: None)


async def _consume_predictions(
    bootstrap: str, login: dict[str, Any], topic: str, want: int, seconds: float
) -> dict[str, dict[str, Any]]:
    catalog = SchemaCatalog.load(REPO_ROOT / "schemas")
    schema = catalog.record("prediction")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="consumer-secure-test",
        auto_offset_reset="earliest",
        **login,
    )
    await consumer.start()
    seen: dict[str, dict[str, Any]] = {}
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while len(seen) < want and loop.time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=500)).values():
                for m in msgs:
                    _, record = decode_single_object(catalog, m.value, schema)
                    seen[record["event_id"]] = record
    finally:
        await consumer.stop()
    return seen


async def _read_raw_as(bootstrap: str, login: dict[str, Any], topic: str) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="consumer-forbidden",
        auto_offset_reset="earliest",
        **login,
    )
    try:
        await consumer.start()
        await consumer.getmany(timeout_ms=5000)
    finally:
        await consumer.stop()


def test_pipeline_runs_end_to_end_under_the_acls(secured: Secured, tmp_path: Path) -> None:
    spec = load_spec(PHISHING)
    catalog = SchemaCatalog.load(REPO_ROOT / "schemas")
    topics = spec.topics("")
    bootstrap = secured.settings.effective_bootstrap
    service = secured.as_principal("riverline", batch_size=100)
    worker = WorkerProcess(service, [PHISHING], tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready(timeout=180)
        report = asyncio.run(
            produce_dataset(secured.as_principal("producer"), spec, catalog, limit=N_EVENTS)
        )
        assert report.sent == N_EVENTS
        got = asyncio.run(
            _consume_predictions(
                bootstrap,
                scram_client_kwargs("consumer", secured.passwords["consumer"]),
                topics.predictions,
                N_EVENTS,
                seconds=120,
            )
        )
        assert len(got) == N_EVENTS
        assert all(eid.startswith(report.run_id) for eid in got)
        # Riverline's own reader (predictions + dead letters) as the service principal.
        collected = asyncio.run(read_all_predictions(service, spec, catalog))
        assert set(collected.predictions) == set(got)
        assert collected.dead_letters == []
        status: Any = worker.get_json("/status.json")
        assert status["pipelines"]["phishing"]["samples_seen"] == N_EVENTS
    finally:
        code = worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    for password in secured.passwords.values():
        assert password not in log


def test_the_consumer_principal_cannot_read_what_the_worker_reads(secured: Secured) -> None:
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(
            _read_raw_as(
                secured.settings.effective_bootstrap,
                scram_client_kwargs("consumer", secured.passwords["consumer"]),
                "phishing.events",
            )
        )
