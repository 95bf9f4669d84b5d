"""CheckpointStore: records signed and checked; clients wait for a restarting broker.

Its reads run inside Faust's assignment handlers, where an exception stops the app: a
broker killed during an assignment (tests/integration/test_broker_fault.py) must delay
the handler, not end the worker's processing.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError

from streams.kafka.broker import free_port
from streams.kafka.topics import TopicConfig, ensure_topics
from streams.settings import Settings
from streams.state.checkpoint import Checkpoint, CheckpointError, CheckpointIntegrityError
from streams.state.store import CheckpointStore
from streams.trust.records import RecordSigner

pytestmark = pytest.mark.integration

SIGNER = RecordSigner(b"this deployment's key")


def test_a_broker_that_comes_back_is_waited_for(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_start = AIOKafkaConsumer.start
    refused = []

    async def flaky_start(self: AIOKafkaConsumer) -> Any:
        if len(refused) < 2:  # the broker is still down for the first two attempts
            refused.append(time.monotonic())
            raise KafkaConnectionError("Unable to bootstrap (test)")
        return await real_start(self)

    monkeypatch.setattr(AIOKafkaConsumer, "start", flaky_start)
    settings = settings_factory()
    store = CheckpointStore(
        settings.effective_bootstrap, "unused", 1 << 20, SIGNER, connect_timeout=30
    )
    group = f"t{secrets.token_hex(4)}.group"
    started = time.monotonic()
    assert asyncio.run(store.committed(group, "no-such-topic", [0, 1])) == {}
    assert len(refused) == 2
    assert time.monotonic() - started >= 0.25 + 0.5  # backed off between the attempts


def test_a_broker_that_stays_away_is_a_clear_error() -> None:
    store = CheckpointStore(
        f"127.0.0.1:{free_port()}", "unused", 1 << 20, SIGNER, connect_timeout=1.5
    )
    started = time.monotonic()
    with pytest.raises(
        CheckpointError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+ .*broker up"
    ):
        asyncio.run(store.offset_range("t", [0]))
    assert 1.5 <= time.monotonic() - started < 10  # tried for connect_timeout, then gave up


def test_only_records_signed_with_our_key_are_used(settings_factory: Callable[..., Settings]):
    settings = settings_factory()
    topic = settings.topic("riverline.checkpoints")
    ensure_topics(settings.effective_bootstrap, [TopicConfig(topic, 1, compacted=True)])
    ours = CheckpointStore(settings.effective_bootstrap, topic, 1 << 20, SIGNER)
    theirs = CheckpointStore(
        settings.effective_bootstrap, topic, 1 << 20, RecordSigner(b"someone else's key")
    )
    mine, forged = Checkpoint("p", 0, 10, "h", "fs", b"a"), Checkpoint("p", 1, 20, "h", "fs", b"b")

    async def main() -> dict[str, Checkpoint | CheckpointError]:
        try:
            await ours.save([mine, Checkpoint("p", 1, 5, "h", "fs", b"c")])
            await theirs.save([forged])  # the latest record of p/features/1
            await ours.delete(["p/features/2"])
            return await ours.load(["p/features/0", "p/features/1", "p/features/2"])
        finally:
            await ours.stop()
            await theirs.stop()

    found = asyncio.run(main())
    assert found["p/features/0"] == mine
    assert isinstance(found["p/features/1"], CheckpointIntegrityError)
    assert "no valid MAC" in str(found["p/features/1"])
    assert "p/features/2" not in found  # a signed tombstone removes
