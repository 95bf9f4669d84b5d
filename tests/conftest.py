"""Shared fixtures: the session's Kafka cluster and isolated settings.

Integration tests (marked ``integration``, or anywhere under ``tests/integration``) run
against one real broker per session: ``RIVERLINE_BOOTSTRAP`` if set, else a
:class:`~streams.kafka.broker.LocalBroker` on free ports with its data in a temporary dir
(the jars stay cached under the usual ``RIVERLINE_HOME``, so they download once).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.errors import KafkaSetupError
from streams.kafka.broker import LocalBroker, free_port
from streams.settings import Settings

INTEGRATION_DIR = Path(__file__).parent / "integration"

# Tests sign with the built-in development key, here and in every process they start.
os.environ.setdefault("RIVERLINE_DEV_MODE", "1")


class SessionBroker:
    """The cluster this test session shares, started on first use and stopped at the end."""

    def __init__(self, base: Settings, data_dir: Path) -> None:
        self._base = base
        self._data_dir = data_dir
        self.local: LocalBroker | None = None
        self._bootstrap: str | None = base.bootstrap
        self._failure: str | None = None

    @property
    def bootstrap(self) -> str:
        if self._bootstrap is not None:
            return self._bootstrap
        if self._failure is not None:
            # Fail every later test at once instead of waiting for the broker again.
            pytest.fail(self._failure, pytrace=False)
        port = free_port()
        controller_port = free_port()
        while controller_port == port:
            controller_port = free_port()
        broker = LocalBroker(
            self._base, data_dir=self._data_dir, port=port, controller_port=controller_port
        )
        try:
            broker.up(log=_say)
        except KafkaSetupError as exc:
            tail = broker.log_tail(40)
            self._failure = f"the session's Kafka broker did not start: {exc}"
            if tail and tail not in str(exc):
                self._failure += f"\n--- last lines of {broker.log_path} ---\n{tail}"
            broker.down(log=_say)
            pytest.fail(self._failure, pytrace=False)
        self.local = broker
        self._bootstrap = broker.bootstrap
        return self._bootstrap

    def stop(self) -> None:
        if self.local is not None:
            self.local.down(log=_say)


def _say(line: str) -> None:
    print(f"[kafka] {line}")


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    """The environment's settings (``RIVERLINE_*``), as the user would run Riverline."""
    return Settings.from_env()


@pytest.fixture(scope="session")
def session_broker(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SessionBroker]:
    broker = SessionBroker(base_settings, tmp_path_factory.mktemp("kafka-data"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(session_broker: SessionBroker) -> str:
    """``host:port`` of the session's cluster (started here if needed)."""
    return session_broker.bootstrap


@pytest.fixture(scope="session")
def local_broker(session_broker: SessionBroker, kafka_bootstrap: str) -> LocalBroker | None:
    """The session's broker if Riverline started it; None with ``RIVERLINE_BOOTSTRAP``."""
    return session_broker.local


@pytest.fixture(scope="session")
def settings_factory(
    base_settings: Settings,
    session_broker: SessionBroker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[..., Settings]:
    """A factory of isolated settings: ``settings_factory(**overrides) -> Settings``.

    Each call gets its own random ``namespace`` (``t3f9a1c.``) and its own empty ``home``,
    while ``cache_dir`` keeps pointing at the real cache (broker jars, Numba cache).
    ``bootstrap`` is the session's cluster, started on first use; pass ``bootstrap=...``
    (``None`` included) to keep a test off the broker.
    """

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "namespace": f"t{secrets.token_hex(3)}.",
            "home": tmp_path_factory.mktemp("home"),
            "cache_dir": base_settings.cache_root,
        }
        values.update(overrides)
        if "bootstrap" not in values:
            values["bootstrap"] = session_broker.bootstrap
        return Settings.from_env(**values)

    return make


@pytest.fixture(autouse=True)
def _integration_tests_get_the_broker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("kafka_bootstrap")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)
