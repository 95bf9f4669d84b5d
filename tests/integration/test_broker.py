"""The local broker manager against real brokers: the session's and brokers of its own."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.errors import KafkaSetupError
from streams.kafka.broker import LocalBroker, broker_reachable, free_port
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _ports() -> tuple[int, int]:
    port = free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    return port, controller_port


@pytest.fixture
def own_broker(tmp_path: Path, base_settings: Settings) -> Iterator[LocalBroker]:
    """A second broker on free ports with a fresh data dir (stopped after the test)."""
    if shutil.which("java") is None and base_settings.bootstrap:
        pytest.skip("no Java here; the session uses RIVERLINE_BOOTSTRAP")
    settings = Settings.from_env(
        home=tmp_path / "home", cache_dir=base_settings.cache_root, bootstrap=None
    )
    port, controller_port = _ports()
    broker = LocalBroker(
        settings, data_dir=tmp_path / "data", port=port, controller_port=controller_port
    )
    yield broker
    broker.down(log=lambda _: None)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_session_broker_answers(kafka_bootstrap: str) -> None:
    assert broker_reachable(kafka_bootstrap)


def test_session_broker_status_is_managed_and_reachable(local_broker: LocalBroker | None) -> None:
    if local_broker is None:
        pytest.skip("the session uses RIVERLINE_BOOTSTRAP; Riverline manages no broker")
    status = local_broker.status()
    assert status.managed
    assert status.reachable
    assert status.pid == int(local_broker.pid_path.read_text())
    assert status.bootstrap == local_broker.bootstrap
    assert "1 broker(s)" in status.detail


def test_own_broker_goes_up_and_down_cleanly(own_broker: LocalBroker) -> None:
    messages: list[str] = []
    status = own_broker.up(log=messages.append)
    assert status.reachable
    assert status.managed
    assert status.pid is not None
    assert own_broker.log_path.exists()
    assert own_broker.up(log=messages.append).pid == status.pid  # idempotent
    assert psutil.Process(status.pid).status() != psutil.STATUS_ZOMBIE

    assert own_broker.down(log=messages.append) is True
    assert _gone(status.pid)
    assert not own_broker.pid_path.exists()
    after = own_broker.status()
    assert (after.managed, after.pid, after.reachable) == (False, None, False)
    assert own_broker.down(log=messages.append) is False


def test_running_broker_is_not_restarted_with_other_ports(
    own_broker: LocalBroker, tmp_path: Path, base_settings: Settings
) -> None:
    own_broker.up(log=lambda _: None)
    port, controller_port = _ports()
    other = LocalBroker(
        Settings.from_env(
            home=tmp_path / "home", cache_dir=base_settings.cache_root, bootstrap=None
        ),
        data_dir=own_broker.data_dir,
        port=port,
        controller_port=controller_port,
    )
    with pytest.raises(KafkaSetupError, match="kafka down"):
        other.up(log=lambda _: None)


def test_killed_broker_restarts_with_its_data(own_broker: LocalBroker) -> None:
    first = own_broker.up(log=lambda _: None)
    asyncio.run(_create_topic(own_broker.bootstrap, "survives.kill"))

    own_broker.kill()
    assert first.pid is not None
    assert _gone(first.pid)
    assert not own_broker.status().reachable

    second = own_broker.up(log=lambda _: None)
    assert second.reachable
    assert second.pid != first.pid
    assert "survives.kill" in asyncio.run(_list_topics(own_broker.bootstrap))
