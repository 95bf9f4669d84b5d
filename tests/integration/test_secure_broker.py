"""``riverline kafka up --secure`` against real clients: SASL/SCRAM and ACLs on a broker
of this module's own (free ports, fresh ``RIVERLINE_HOME``), started through the CLI.

The pipeline is ``phishing`` without namespace: the broker belongs to these tests alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from click.testing import CliRunner

from streams.cli.main import cli
from streams.kafka.auth import PRINCIPALS, client_kwargs, scram_client_kwargs
from streams.kafka.broker import LocalBroker, free_port
from streams.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

PIPELINE = "phishing"
RAW, LABELS, EVENTS, PREDICTIONS = (
    f"{PIPELINE}.{name}" for name in ("raw", "labels", "events", "predictions")
)
DLQ = "riverline.dlq"


@dataclass
class SecureBroker:
    broker: LocalBroker
    env: dict[str, str | None]
    """The environment the CLI ran with (``RIVERLINE_*``), for more CLI calls."""
    passwords: dict[str, str]
    up_output: str

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def login(self, principal: str, password: str | None = None) -> dict[str, Any]:
        return scram_client_kwargs(principal, password or self.passwords[principal])


def _cli(env: dict[str, str | None], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, base_settings: Settings
) -> Iterator[SecureBroker]:
    if shutil.which("java") is None:
        pytest.skip("no Java here: the secure broker is a local one")
    home = tmp_path_factory.mktemp("secure-home")
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
    )
    broker = LocalBroker(settings)
    try:
        code, output = _cli(
            env, "kafka", "up", "--secure", "--pipeline", str(REPO_ROOT / "pipelines/phishing.toml")
        )
        assert code == 0, output
        broker = LocalBroker(settings)  # now it finds the secure data dir by itself
        stored = json.loads(broker.credentials_path.read_text())["generated"]
        yield SecureBroker(broker, env, {p: stored[p] for p in PRINCIPALS}, output)
    finally:
        broker.down(log=lambda _: None)


async def _create_topics(bootstrap: str, login: dict[str, Any], names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **login)
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, num_partitions=1, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()
    for topic, code, message in response.topic_errors:
        assert code in (0, 36), f"{topic}: {code} {message}"  # 36: exists already


async def _produce(bootstrap: str, login: dict[str, Any], topic: str, value: bytes) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **login)
    try:
        await producer.start()
        record = await producer.send_and_wait(topic, value)
        return record.offset
    finally:
        await producer.stop()


async def _read_assigned(bootstrap: str, login: dict[str, Any], topic: str) -> list[bytes]:
    """Fetch partition 0 from the start without a group (only topic READ is needed)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", **login
    )
    try:
        await consumer.start()
        consumer.assign([TopicPartition(topic, 0)])
        values: list[bytes] = []
        for _ in range(10):
            batches = await consumer.getmany(timeout_ms=1000)
            values += [r.value for records in batches.values() for r in records if r.value]
            if values:
                break
        return values
    finally:
        await consumer.stop()


async def _read_in_group(
    bootstrap: str, login: dict[str, Any], topic: str, group: str
) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        **login,
    )
    try:
        await consumer.start()
        values: list[bytes] = []
        for _ in range(20):
            batches = await consumer.getmany(timeout_ms=1000)
            values += [r.value for records in batches.values() for r in records if r.value]
            if values:
                break
        await consumer.commit()
        return values
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def topics(secure: SecureBroker) -> SecureBroker:
    """The pipeline's and the shared topics, created and seeded by ``riverline``."""
    names = [RAW, LABELS, EVENTS, PREDICTIONS, DLQ]
    asyncio.run(_create_topics(secure.bootstrap, secure.login("riverline"), names))
    for name in names:  # something to be refused: aiokafka waits quietly on an empty one
        asyncio.run(_produce(secure.bootstrap, secure.login("riverline"), name, b"seed"))
    return secure


# ---------------------------------------------------------------------- set-up


def test_secure_data_dir_keeps_its_secrets_private(secure: SecureBroker) -> None:
    data = secure.broker.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("credentials.json", "server.properties"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    props = (data / "server.properties").read_text()
    assert "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props
    assert "allow.everyone.if.no.acl.found=false" in props
    assert "super.users=User:admin;User:broker\n" in props
    for password in secure.passwords.values():
        assert password not in props  # only the broker's own password is in there


def test_up_and_status_say_where_the_passwords_are_but_never_print_them(
    secure: SecureBroker,
) -> None:
    code, status = _cli(secure.env, "kafka", "status")
    assert code == 0, status
    assert "reachable" in status
    assert "SASL/SCRAM" in status
    code, again = _cli(secure.env, "kafka", "up")  # joins the running secure broker
    assert code == 0, again
    assert str(secure.broker.credentials_path) in secure.up_output
    for output in (secure.up_output, status, again):
        for password in secure.passwords.values():
            assert password not in output


def test_plaintext_clients_get_nothing(secure: SecureBroker) -> None:
    with pytest.raises(KafkaConnectionError):
        asyncio.run(_produce(secure.bootstrap, {}, RAW, b"anonymous"))


def test_no_password_is_written_into_the_repository(secure: SecureBroker) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    needles = [p.encode() for p in secure.passwords.values()]
    for name in filter(None, listed):
        path = REPO_ROOT / name.decode()
        if not path.is_file():
            continue
        content = path.read_bytes()
        assert not any(needle in content for needle in needles), path


# ---------------------------------------------------------------------- ACLs


def test_producer_writes_raw_and_labels_only_and_reads_nothing(topics: SecureBroker) -> None:
    login = topics.login("producer")
    assert asyncio.run(_produce(topics.bootstrap, login, RAW, b"event")) >= 0
    assert asyncio.run(_produce(topics.bootstrap, login, LABELS, b"label")) >= 0
    for forbidden in (PREDICTIONS, EVENTS, DLQ):
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(_produce(topics.bootstrap, login, forbidden, b"forged"))
    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(_read_assigned(topics.bootstrap, login, RAW))
    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(_read_in_group(topics.bootstrap, login, RAW, "consumer-producer"))


def test_consumer_reads_predictions_only_and_writes_nothing(topics: SecureBroker) -> None:
    asyncio.run(_produce(topics.bootstrap, topics.login("riverline"), PREDICTIONS, b"pred"))
    login = topics.login("consumer")
    assert b"pred" in asyncio.run(
        _read_in_group(topics.bootstrap, login, PREDICTIONS, "consumer-dashboard")
    )
    for forbidden in (RAW, LABELS, EVENTS):
        # Subscribed, not assigned: without DESCRIBE on the topic, an assigned aiokafka
        # consumer waits for its metadata quietly, a subscribed one raises the refusal.
        with pytest.raises(TopicAuthorizationFailedError, match=forbidden):
            asyncio.run(_read_in_group(topics.bootstrap, login, forbidden, "consumer-x"))
    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(_read_in_group(topics.bootstrap, login, PREDICTIONS, "riverline"))
    for forbidden in (PREDICTIONS, RAW):
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(_produce(topics.bootstrap, login, forbidden, b"forged"))


def test_riverline_creates_its_topics_and_runs_them_end_to_end(topics: SecureBroker) -> None:
    settings = Settings.from_env(
        bootstrap=topics.bootstrap,
        kafka_security="sasl_scram",
        kafka_username="riverline",
        kafka_password=topics.passwords["riverline"],
    )
    login = client_kwargs(settings)  # what the worker uses
    asyncio.run(_create_topics(topics.bootstrap, login, ["riverline-features-changelog"]))
    asyncio.run(_produce(topics.bootstrap, topics.login("producer"), RAW, b"for-the-service"))
    raw = asyncio.run(_read_in_group(topics.bootstrap, login, RAW, "riverline"))
    assert b"for-the-service" in raw
    for topic in (EVENTS, DLQ, PREDICTIONS, "riverline-features-changelog"):
        asyncio.run(_produce(topics.bootstrap, login, topic, b"out"))
        assert b"out" in asyncio.run(_read_assigned(topics.bootstrap, login, topic))
    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(_read_in_group(topics.bootstrap, login, RAW, "consumer-steal"))


def test_admin_is_a_super_user(topics: SecureBroker) -> None:
    login = topics.login("admin")
    asyncio.run(_create_topics(topics.bootstrap, login, ["anything.admin"]))
    asyncio.run(_produce(topics.bootstrap, login, "anything.admin", b"x"))
    assert b"x" in asyncio.run(_read_assigned(topics.bootstrap, login, "anything.admin"))


# ---------------------------------------------------------------------- authentication


def test_wrong_password_fails_without_showing_the_password(
    topics: SecureBroker, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "wrong-" + topics.passwords["producer"][::-1]
    caplog.set_level(logging.DEBUG)
    with pytest.raises(KafkaConnectionError) as failure:
        asyncio.run(_produce(topics.bootstrap, topics.login("producer", wrong), RAW, b"x"))
    assert "SaslAuthenticationFailed" in caplog.text  # the refusal is logged ...
    captured = capsys.readouterr()
    texts = {
        "exception": f"{failure.value!r} {failure.value} {failure.value.__cause__!r}",
        "log": caplog.text,
        "output": captured.out + captured.err,
        "broker log": topics.broker.log_path.read_text(errors="replace"),
    }
    for where, text in texts.items():  # ... but no password anywhere
        assert wrong not in text, where
        for password in topics.passwords.values():
            assert password not in text, where
    assert "Failed authentication" in texts["broker log"]
