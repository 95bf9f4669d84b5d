"""The local broker manager without a broker: configuration, set-up errors, pid files."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.errors import KafkaSetupError
from streams.kafka.broker import (
    LocalBroker,
    broker_reachable,
    free_port,
    render_server_properties,
)
from streams.settings import Settings


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": tmp_path / "home",
        "cache_dir": tmp_path / "cache",
        "bootstrap": None,
    }
    values.update(overrides)
    return Settings.from_env(**values)


def _executable(directory: Path, name: str, script: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH: tests put fake ``java`` / ``mvn`` into it as needed."""
    path = tmp_path / "bin"
    path.mkdir()
    monkeypatch.setenv("PATH", str(path))
    return path


@pytest.fixture
def java17(bin_dir: Path) -> Path:
    return _executable(bin_dir, "java", "echo 'openjdk version \"17.0.15\" 2025-04-15' >&2\n")


@pytest.fixture
def listening_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return dict(pairs)


def test_server_properties_single_kraft_node_on_loopback(tmp_path: Path) -> None:
    props = _properties(
        render_server_properties(port=29092, controller_port=29093, log_dir=tmp_path / "kraft")
    )
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert "controller.quorum.voters" not in props
    assert props["log.dirs"] == str(tmp_path / "kraft")
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"


def test_broker_uses_its_ports_and_data_dir(tmp_path: Path) -> None:
    broker = LocalBroker(
        _settings(tmp_path), data_dir=tmp_path / "d", port=31001, controller_port=31002
    )
    assert broker.bootstrap == "127.0.0.1:31001"
    assert broker.log_path == (tmp_path / "d" / "broker.log").resolve()
    props = _properties(broker.server_properties())
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:31001,CONTROLLER://127.0.0.1:31002"
    assert props["log.dirs"].startswith(str((tmp_path / "d").resolve()))


def test_defaults_come_from_settings(tmp_path: Path) -> None:
    settings = _settings(tmp_path, kafka_port=39092, kafka_controller_port=39093)
    broker = LocalBroker(settings)
    assert broker.bootstrap == "127.0.0.1:39092"
    assert broker.log_path.parent == (settings.kafka_dir / "data").resolve()
    assert broker.libs_dir == tmp_path / "cache" / "kafka" / settings.kafka_version / "libs"


def test_missing_java_says_how_to_install_it(tmp_path: Path, bin_dir: Path) -> None:
    broker = LocalBroker(_settings(tmp_path), port=free_port(), controller_port=free_port())
    with pytest.raises(KafkaSetupError, match="apt-get install openjdk-17-jre-headless"):
        broker.up(log=lambda _: None)
    assert not broker.pid_path.exists()


def test_old_java_is_refused(tmp_path: Path, bin_dir: Path) -> None:
    _executable(bin_dir, "java", "echo 'java version \"1.8.0_392\"' >&2\n")
    broker = LocalBroker(_settings(tmp_path), port=free_port(), controller_port=free_port())
    with pytest.raises(KafkaSetupError, match=r"Java 17 or newer.*1\.8\.0_392"):
        broker.up(log=lambda _: None)


def test_taken_port_is_named_with_its_setting(
    tmp_path: Path, java17: Path, listening_port: int
) -> None:
    broker = LocalBroker(_settings(tmp_path), port=listening_port, controller_port=free_port())
    with pytest.raises(KafkaSetupError, match="RIVERLINE_KAFKA_PORT") as caught:
        broker.up(log=lambda _: None)
    assert f"port {listening_port} " in str(caught.value)
    assert not broker.pid_path.exists()


def test_taken_controller_port_is_named_with_its_setting(
    tmp_path: Path, java17: Path, listening_port: int
) -> None:
    broker = LocalBroker(_settings(tmp_path), port=free_port(), controller_port=listening_port)
    with pytest.raises(KafkaSetupError, match="RIVERLINE_KAFKA_CONTROLLER_PORT") as caught:
        broker.up(log=lambda _: None)
    assert f"port {listening_port} " in str(caught.value)


def test_missing_maven_says_how_to_install_it(tmp_path: Path, bin_dir: Path) -> None:
    with pytest.raises(KafkaSetupError, match="apt-get install maven"):
        LocalBroker(_settings(tmp_path)).fetch(log=lambda _: None)


def test_failed_maven_fetch_shows_what_maven_said(tmp_path: Path, bin_dir: Path) -> None:
    _executable(
        bin_dir,
        "mvn",
        "echo '[ERROR] Failed to execute goal on project riverline-kafka-broker'\n"
        "echo '[ERROR] Could not resolve org.apache.kafka:kafka_2.13:jar:4.0.99' >&2\n"
        "exit 1\n",
    )
    broker = LocalBroker(_settings(tmp_path, kafka_version="4.0.99"))
    with pytest.raises(KafkaSetupError, match="exit code 1") as caught:
        broker.fetch(log=lambda _: None)
    assert "Could not resolve org.apache.kafka:kafka_2.13:jar:4.0.99" in str(caught.value)
    assert not broker.libs_dir.exists()
    assert list(broker.libs_dir.parent.glob("libs*")) == []


def test_fetch_caches_the_jars_once(tmp_path: Path, bin_dir: Path) -> None:
    calls = tmp_path / "mvn-calls"
    _executable(
        bin_dir,
        "mvn",
        "PATH=/usr/bin:/bin\n"
        f'echo call >> "{calls}"\n'
        'for arg in "$@"; do case "$arg" in\n'
        '  -DoutputDirectory=*) out="${arg#-DoutputDirectory=}" ;;\n'
        '  -Dkafka.version=*) version="${arg#-Dkafka.version=}" ;;\n'
        "esac; done\n"
        'mkdir -p "$out" && touch "$out/kafka_2.13-$version.jar" "$out/kafka-clients.jar"\n',
    )
    broker = LocalBroker(_settings(tmp_path))
    libs = broker.fetch(log=lambda _: None)
    assert libs == broker.libs_dir
    assert (libs / f"kafka_2.13-{Settings().kafka_version}.jar").exists()
    (bin_dir / "mvn").unlink()  # the cache must not need Maven any more
    assert broker.fetch(log=lambda _: None) == libs
    assert calls.read_text().count("call") == 1


def test_unreachable_bootstrap_is_an_error_and_starts_nothing(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    broker = LocalBroker(_settings(tmp_path, bootstrap=address))
    assert broker.bootstrap == address
    with pytest.raises(KafkaSetupError, match=f"external cluster {address} does not answer"):
        broker.up(log=lambda _: None)
    assert not broker.log_path.parent.exists()


def test_status_of_nothing_running(tmp_path: Path) -> None:
    broker = LocalBroker(_settings(tmp_path), port=free_port(), controller_port=free_port())
    status = broker.status()
    assert (status.managed, status.pid, status.reachable) == (False, None, False)
    assert "no Riverline broker running" in status.detail


@pytest.mark.parametrize("pid", [os.getpid(), 2**31 - 2], ids=["reused-pid", "gone-pid"])
def test_stale_pid_file_is_handled(tmp_path: Path, pid: int) -> None:
    broker = LocalBroker(_settings(tmp_path), port=free_port(), controller_port=free_port())
    broker.pid_path.parent.mkdir(parents=True)
    broker.pid_path.write_text(f"{pid}\n")
    status = broker.status()
    assert (status.managed, status.pid) == (False, None)
    assert f"stale pid file: pid {pid}" in status.detail
    with pytest.raises(KafkaSetupError, match="no local broker is running"):
        broker.kill()
    messages: list[str] = []
    assert broker.down(log=messages.append) is False
    assert not broker.pid_path.exists()
    assert any("stale pid file" in m for m in messages)


def test_down_without_data_dir_stops_nothing(tmp_path: Path) -> None:
    assert LocalBroker(_settings(tmp_path)).down(log=lambda _: None) is False


def test_closed_port_is_not_reachable() -> None:
    assert broker_reachable(f"127.0.0.1:{free_port()}", timeout=2.0) is False


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
