"""docker-compose.secure.yml's broker, run without Docker on the Kafka jars Riverline uses.

The kafka service's environment (both files merged, passwords interpolated) is rendered
into ``server.properties`` as the ``apache/kafka`` image does; host names and ports are
moved to free ports on 127.0.0.1. ``deploy/kafka/secure-start.sh`` formats the storage
as it would in the container, the broker starts, and the ``kafka-acls`` and ``worker``
services' settings are used as they are: what the image's own scripts add is not covered.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAuthorizationFailedError
from composekit import (
    SECURE_START,
    environment,
    interpolate,
    parse_properties,
    secure_services,
    server_properties,
)
from prockit import PROC, CmdlineSampler

from streams.kafka.auth import PRINCIPALS, client_kwargs, scram_client_kwargs
from streams.kafka.broker import BROKER_PRINCIPAL, LocalBroker, broker_reachable, free_port
from streams.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

PASSWORDS = {p: secrets.token_hex(32) for p in (*PRINCIPALS, BROKER_PRINCIPAL)}
VARIABLES = {
    "RIVERLINE_SIGNING_KEY": secrets.token_hex(32),
    **{f"RIVERLINE_KAFKA_{p.upper()}_PASSWORD": pw for p, pw in PASSWORDS.items()},
}
#: The compose ports and what each becomes here.
_ADDRESS = re.compile(r"(//|@)(?:kafka|127\.0\.0\.1|):(19092|9092|9093)\b")


@dataclass
class ComposeBroker:
    services: dict[str, dict[str, Any]]
    internal: str
    host: str
    rewrite: dict[str, str]
    """The compose ``host:port`` of each listener -> its address here."""
    start_env: dict[str, str]
    """The environment secure-start.sh ran with (the kafka service's, moved here)."""
    first_start: subprocess.CompletedProcess[str]
    second_start: subprocess.CompletedProcess[str]
    cmdlines: dict[bytes, bool]
    data_dir: Path
    client_config: Path

    def service_env(self, name: str) -> dict[str, str]:
        """A service's environment, interpolated and pointed at this broker."""
        env = {k: interpolate(v, VARIABLES) for k, v in environment(self.services[name]).items()}
        return {k: self.rewrite.get(v, v) for k, v in env.items()}


def _secure_start(env: dict[str, str], then: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SECURE_START), *then],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _wait_reachable(bootstrap: str, login: dict[str, Any], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while not broker_reachable(bootstrap, 2.0, login):
        assert proc.poll() is None, "the broker exited during start-up"
        assert time.monotonic() < deadline, "the broker did not answer within 90 s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def compose_broker(
    tmp_path_factory: pytest.TempPathFactory, base_settings: Settings
) -> Iterator[ComposeBroker]:
    if shutil.which("java") is None or shutil.which("bash") is None:
        pytest.skip("needs java and bash")
    tmp = tmp_path_factory.mktemp("compose-secure")
    libs = LocalBroker(base_settings).fetch(log=lambda _: None)
    dist = tmp / "dist"
    dist.mkdir()
    (dist / "libs").symlink_to(libs)
    ports = {"19092": free_port(), "9092": free_port(), "9093": free_port()}
    while len(set(ports.values())) < 3:
        ports["9093"] = free_port()
    services = secure_services()
    kafka_env = {k: interpolate(v, VARIABLES) for k, v in environment(services["kafka"]).items()}
    kafka_env = {
        k: _ADDRESS.sub(lambda m: f"{m.group(1)}127.0.0.1:{ports[m.group(2)]}", v)
        for k, v in kafka_env.items()
    }
    data_dir = tmp / "data"
    client_config = tmp / "health" / "client.properties"
    marker = f"RIVERLINE_KAFKA_DIST={dist}"
    start_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        **kafka_env,
        "KAFKA_LOG_DIRS": str(data_dir),
        "RIVERLINE_KAFKA_DIST": str(dist),
        "RIVERLINE_KAFKA_CLIENT_CONFIG": str(client_config),
    }
    dump_env = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
    with CmdlineSampler(marker.encode()) as sampler:
        first = _secure_start(start_env, dump_env)
    second = _secure_start(start_env, dump_env)
    assert first.returncode == 0, first.stdout + first.stderr
    properties = tmp / "server.properties"
    properties.write_text("".join(f"{k}={v}\n" for k, v in server_properties(start_env).items()))
    log = (tmp / "broker.log").open("wb")
    broker = subprocess.Popen(
        ["java", "-Xmx512m", "-cp", f"{libs}/*", "kafka.Kafka", str(properties)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    internal = f"127.0.0.1:{ports['19092']}"
    host = f"127.0.0.1:{ports['9092']}"
    rewrite = {"kafka:19092": internal, "127.0.0.1:9092": host}
    try:
        _wait_reachable(host, scram_client_kwargs("admin", PASSWORDS["admin"]), broker)
        yield ComposeBroker(
            services,
            internal,
            host,
            rewrite,
            start_env,
            first,
            second,
            sampler.seen,
            data_dir,
            client_config,
        )
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(60)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait(10)
        log.close()


# ---------------------------------------------------------------------- secure-start.sh


def test_secure_start_formats_once_and_hands_over_without_the_passwords(
    compose_broker: ComposeBroker,
) -> None:
    assert "formatting" in compose_broker.first_start.stdout
    assert (compose_broker.data_dir / "meta.properties").exists()
    assert compose_broker.second_start.returncode == 0, compose_broker.second_start.stderr
    assert "formatting" not in compose_broker.second_start.stdout  # formatted already
    for start in (compose_broker.first_start, compose_broker.second_start):
        *printed, last = start.stdout.splitlines()
        handed_over = json.loads(last)
        assert not [k for k in handed_over if k.endswith("_PASSWORD")]
        for principal in PRINCIPALS:  # the broker's own is in its JAAS settings only
            assert PASSWORDS[principal] not in last
        for password in PASSWORDS.values():
            assert password not in "\n".join(printed) + start.stderr


def test_secure_start_puts_no_credential_on_a_command_line(
    compose_broker: ComposeBroker,
) -> None:
    if not (PROC / "self" / "cmdline").exists():
        pytest.skip("no /proc here")
    ours = {cmdline for cmdline, mine in compose_broker.cmdlines.items() if mine}
    formats = [c for c in ours if c.endswith(b"/format.args\0")]
    assert formats, "the StorageTool JVM ran too briefly to be sampled"
    assert all(b"StorageTool" not in c for c in formats)
    for cmdline in compose_broker.cmdlines:
        for password in PASSWORDS.values():
            assert password.encode() not in cmdline
    for cmdline in ours:
        assert b"--add-scram" not in cmdline
        assert b"SCRAM-SHA-256=" not in cmdline


def test_secure_start_refuses_a_weak_password(
    compose_broker: ComposeBroker, tmp_path: Path
) -> None:
    env = {
        **compose_broker.start_env,
        "KAFKA_LOG_DIRS": str(tmp_path / "data"),
        "RIVERLINE_KAFKA_CONSUMER_PASSWORD": 'short"pw',
    }
    done = _secure_start(env, ["true"])
    assert done.returncode == 1
    assert "RIVERLINE_KAFKA_CONSUMER_PASSWORD must be 16 or more" in done.stderr
    assert 'short"pw' not in done.stderr
    assert not (tmp_path / "data").exists()


def test_the_healthcheck_login_works(compose_broker: ComposeBroker) -> None:
    config = parse_properties(compose_broker.client_config.read_text())
    assert oct(compose_broker.client_config.stat().st_mode & 0o777) == "0o600"
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanism"] == "SCRAM-SHA-256"
    login = re.search(r'username="(\w+)" password="([^"]+)"', config["sasl.jaas.config"])
    assert login is not None
    assert broker_reachable(compose_broker.internal, 5.0, scram_client_kwargs(*login.groups()))


# ---------------------------------------------------------------------- the services


async def _create_topic(bootstrap: str, login: dict[str, Any], name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **login)
    try:
        await admin.start()
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, login: dict[str, Any], topic: str) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **login)
    try:
        await producer.start()
        return (await producer.send_and_wait(topic, b"event")).offset
    finally:
        await producer.stop()


def test_only_the_right_passwords_log_in(compose_broker: ComposeBroker) -> None:
    for principal, password in PASSWORDS.items():
        login = scram_client_kwargs(principal, password)
        assert broker_reachable(compose_broker.host, 5.0, login), principal
    wrong = scram_client_kwargs("producer", PASSWORDS["consumer"])
    assert not broker_reachable(compose_broker.host, 5.0, wrong)
    assert not broker_reachable(compose_broker.host, 5.0)


def test_kafka_acls_service_then_the_worker_and_producer_have_their_rights(
    compose_broker: ComposeBroker,
) -> None:
    acls = compose_broker.services["kafka-acls"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")},
        "RIVERLINE_DEV_MODE": "1",
        **compose_broker.service_env("kafka-acls"),
    }
    assert env["RIVERLINE_BOOTSTRAP"] == compose_broker.internal
    command = acls["command"]
    assert command[0] == "riverline"
    done = subprocess.run(
        [sys.executable, "-m", "streams", *command[1:]],
        env=env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    worker = Settings.from_env(**_settings_fields(compose_broker.service_env("worker")))
    riverline = client_kwargs(worker)
    assert riverline["sasl_plain_username"] == "riverline"
    asyncio.run(_create_topic(compose_broker.internal, riverline, "phishing.raw"))
    asyncio.run(_create_topic(compose_broker.internal, riverline, "phishing.predictions"))
    producer = scram_client_kwargs("producer", PASSWORDS["producer"])
    assert asyncio.run(_produce(compose_broker.host, producer, "phishing.raw")) >= 0
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_produce(compose_broker.host, producer, "phishing.predictions"))


def _settings_fields(env: dict[str, str]) -> dict[str, str]:
    """The ``RIVERLINE_*`` variables of a service as Settings field values."""
    fields = {
        name.removeprefix("RIVERLINE_").lower(): value
        for name, value in env.items()
        if name.startswith("RIVERLINE_")
    }
    return {k: v for k, v in fields.items() if k in Settings.model_fields}
