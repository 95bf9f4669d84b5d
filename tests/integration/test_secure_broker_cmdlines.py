"""``riverline kafka up --secure`` never puts a credential on a command line.

A fresh secure broker (its own ``RIVERLINE_HOME`` and free ports) is formatted and started
by the CLI in a process of its own, while a thread reads ``/proc/*/cmdline`` of every
process every few milliseconds. Afterwards no command line seen may hold a password, a
salted SCRAM credential or an ``--add-scram`` option, and the broker must still work: the
right password logs in, a wrong one does not. ``riverline kafka acls`` is tried on it too.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAuthorizationFailedError
from prockit import PROC, CmdlineSampler

from streams.kafka.auth import PRINCIPALS, scram_client_kwargs
from streams.kafka.broker import BROKER_PRINCIPAL, LocalBroker, broker_reachable, free_port
from streams.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.integration

#: A password given through the environment rather than generated (checked the same).
CONFIGURED_PRODUCER_PASSWORD = "configured-producer-pw-" + os.urandom(8).hex()


@dataclass
class StartedBroker:
    settings: Settings
    env: dict[str, str]
    passwords: dict[str, str]
    cmdlines: dict[bytes, bool]
    """Every command line seen: True if its process was one of this run's."""
    rounds: int
    up_output: str
    leftovers: list[str] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.settings.local_bootstrap


def _riverline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=env,
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def started(
    tmp_path_factory: pytest.TempPathFactory, base_settings: Settings
) -> Iterator[StartedBroker]:
    if shutil.which("java") is None:
        pytest.skip("no Java here: the secure broker is a local one")
    if not (PROC / "self" / "cmdline").exists():
        pytest.skip("no /proc here to read command lines from")
    home = tmp_path_factory.mktemp("cmdline-home")
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RIVERLINE_") or key == "RIVERLINE_DEV_MODE"
    }
    env.update(
        RIVERLINE_HOME=str(home),
        RIVERLINE_CACHE_DIR=str(base_settings.cache_root),
        RIVERLINE_KAFKA_PORT=str(port),
        RIVERLINE_KAFKA_CONTROLLER_PORT=str(controller_port),
        RIVERLINE_KAFKA_PRODUCER_PASSWORD=CONFIGURED_PRODUCER_PASSWORD,
    )
    settings = Settings.from_env(
        home=home,
        cache_dir=base_settings.cache_root,
        kafka_port=port,
        kafka_controller_port=controller_port,
        bootstrap=None,
        namespace="",
    )
    sampler = CmdlineSampler(f"RIVERLINE_HOME={home}".encode())
    sampler.start()
    try:
        done = _riverline(
            env, "kafka", "up", "--secure", "--pipeline", str(REPO_ROOT / "pipelines/phishing.toml")
        )
    finally:
        sampler.stop()
    broker = LocalBroker(settings, secure=True)
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        stored = json.loads(broker.credentials_path.read_text())["generated"]
        principals = (*PRINCIPALS, BROKER_PRINCIPAL)
        passwords = {p: stored.get(p, CONFIGURED_PRODUCER_PASSWORD) for p in principals}
        leftovers = sorted(p.name for p in broker.data_dir.glob("*.args"))
        yield StartedBroker(
            settings, env, passwords, sampler.seen, sampler.rounds, done.stdout, leftovers
        )
    finally:
        broker.down(log=lambda _: None)


# ---------------------------------------------------------------------- command lines


def test_the_sampler_saw_the_format_and_the_broker_command_lines(started: StartedBroker) -> None:
    argfile = str(started.settings.kafka_dir / "data" / "format.args").encode()
    ours = [cmdline for cmdline, mine in started.cmdlines.items() if mine]
    formats = [c for c in ours if b"@" + argfile in c]
    brokers = [c for c in ours if b"kafka.Kafka\0" in c]
    assert formats, "the StorageTool JVM ran too briefly to be sampled"
    assert brokers
    assert started.rounds > 100
    # The tool's own arguments stayed in the file: the command line ends with its path.
    for cmdline in formats:
        assert cmdline.endswith(b"@" + argfile + b"\0")
        assert b"StorageTool" not in cmdline


def test_no_command_line_held_a_credential(started: StartedBroker) -> None:
    assert set(started.passwords) == {"admin", "producer", "consumer", "riverline", "broker"}
    assert started.passwords["producer"] == CONFIGURED_PRODUCER_PASSWORD
    passwords = {f"password of {p}": pw.encode() for p, pw in started.passwords.items()}
    options = {
        "--add-scram": b"--add-scram",
        "a salted SCRAM credential": b"saltedpassword",
        "an SCRAM option": b"SCRAM-SHA-256=",
    }
    assert sum(started.cmdlines.values()) >= 3  # riverline, the format JVM, the broker
    for cmdline, mine in started.cmdlines.items():
        shown = cmdline.replace(b"\0", b" ")[:200]
        for what, needle in (passwords | options if mine else passwords).items():
            assert needle not in cmdline, f"{what} on the command line {shown!r}"


def test_the_argument_file_is_removed_after_formatting(started: StartedBroker) -> None:
    assert started.leftovers == []


# ---------------------------------------------------------------------- the broker works


def test_right_passwords_log_in_and_a_wrong_one_does_not(started: StartedBroker) -> None:
    for principal in ("admin", "producer"):
        login = scram_client_kwargs(principal, started.passwords[principal])
        assert broker_reachable(started.bootstrap, security=login), principal
    wrong = scram_client_kwargs("producer", "wrong-" + started.passwords["producer"])
    assert not broker_reachable(started.bootstrap, security=wrong)
    assert not broker_reachable(started.bootstrap)  # no credentials at all


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


def test_kafka_acls_grants_another_pipeline_as_admin(started: StartedBroker) -> None:
    topic = "transactions.raw"
    admin = scram_client_kwargs("admin", started.passwords["admin"])
    producer = scram_client_kwargs("producer", started.passwords["producer"])
    asyncio.run(_create_topic(started.bootstrap, admin, topic))
    with pytest.raises(TopicAuthorizationFailedError):  # up --secure granted phishing only
        asyncio.run(_produce(started.bootstrap, producer, topic))
    as_admin = {
        **started.env,
        "RIVERLINE_BOOTSTRAP": started.bootstrap,
        "RIVERLINE_KAFKA_SECURITY": "sasl_scram",
        "RIVERLINE_KAFKA_USERNAME": "admin",
        "RIVERLINE_KAFKA_PASSWORD": started.passwords["admin"],
    }
    wrong = _riverline(
        {**as_admin, "RIVERLINE_KAFKA_PASSWORD": "wrong"},
        "kafka", "acls", "--pipeline", str(REPO_ROOT / "pipelines/transactions.toml"),
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "could not create ACLs" in wrong.stderr + wrong.stdout
    granted = _riverline(
        as_admin, "kafka", "acls", "--pipeline", str(REPO_ROOT / "pipelines/transactions.toml")
    )
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert "for pipeline(s) transactions" in granted.stdout
    assert started.passwords["admin"] not in granted.stdout + granted.stderr
    assert asyncio.run(_produce(started.bootstrap, producer, topic)) >= 0
