"""The checkpoint topic: checkpoints written to and read back from Kafka.

:class:`CheckpointStore` writes :class:`~streams.state.checkpoint.Checkpoint` records to
the compacted topic ``riverline.checkpoints``, each signed with a keyed MAC
(:mod:`streams.trust.records`), and reads the latest one of each key back, checking the MAC
before it parses a byte of the value. It also reads the offsets a restore needs (a topic's
retained range, a group's commits). What a checkpoint is, and why Riverline owns the
commits of its inputs, is in :mod:`streams.state.checkpoint`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams.errors import KafkaSetupError
from streams.kafka.reading import records_to_end
from streams.kafka.topics import topic_partitions
from streams.kafka.transactions import Transactions
from streams.state.checkpoint import Checkpoint, CheckpointError, CheckpointIntegrityError
from streams.trust.records import RecordSigner

__all__ = ["CheckpointStore"]

log = logging.getLogger("riverline.checkpoints")

_Client = TypeVar("_Client", AIOKafkaConsumer, AIOKafkaProducer)


class CheckpointStore:
    """The compacted checkpoint topic: write checkpoints, read the latest ones back."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        max_bytes: int,
        signer: RecordSigner,
        client_kwargs: Mapping[str, Any] | None = None,
        connect_timeout: float = 60.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        #: Signs every record written and checks every record read (streams.trust.records).
        self.signer = signer
        self.max_bytes = max_bytes
        #: Extra aiokafka client arguments (authentication: streams.kafka.auth.client_kwargs).
        self.client_kwargs = dict(client_kwargs or {})
        #: How long a client keeps trying to reach the cluster (a broker restarting).
        self.connect_timeout = connect_timeout
        self._producer: AIOKafkaProducer | None = None
        #: Exactly-once mode: checkpoints are written in this producer's open transaction
        #: (committed by the caller with the outputs and offsets they reflect).
        self.transactions: Transactions | None = None

    async def _start(self, make: Callable[[], _Client], what: str) -> _Client:
        """A started client from ``make``, retrying while the cluster is unreachable, up to
        ``connect_timeout``.

        The stores' reads run in rebalance handlers: a broker that is restarting must
        delay them, not fail them (a failed assignment handler stops Faust's app).
        """
        deadline = time.monotonic() + self.connect_timeout
        delay = 0.25
        while True:
            client = make()  # a stopped aiokafka client cannot be started again
            try:
                await client.start()
                return client
            except KafkaConnectionError as exc:
                await client.stop()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CheckpointError(
                        f"cannot reach Kafka at {self.bootstrap} to {what} after "
                        f"{self.connect_timeout:.0f} s: {exc}. Is the broker up?"
                    ) from exc
                log.warning("cannot reach Kafka at %s to %s; retrying", self.bootstrap, what)
                await asyncio.sleep(min(delay, left))
                delay = min(2.0, delay * 2)
            except KafkaError as exc:
                await client.stop()
                raise CheckpointError(
                    f"cannot reach Kafka at {self.bootstrap} to {what}: {exc}."
                ) from exc

    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            self._producer = await self._start(
                lambda: AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    acks="all",
                    max_request_size=self.max_bytes + (1 << 16),
                    **self.client_kwargs,
                ),
                "write checkpoints",
            )
        return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def save(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Write checkpoints and wait until the broker has every one of them (in
        exactly-once mode: in the open transaction, visible once it commits)."""
        if not checkpoints:
            return
        if self.transactions is not None:
            await self.transactions.begin()
            producer = self.transactions.producer
        else:
            producer = await self._ensure_producer()
        futures = []
        for cp in checkpoints:
            value = cp.to_bytes()
            if len(value) > self.max_bytes:
                raise CheckpointError(
                    f"checkpoint {cp.key} is {len(value):,} bytes, over "
                    f"RIVERLINE_CHECKPOINT_MAX_BYTES ({self.max_bytes:,}); raise it (and the "
                    f"max.message.bytes of {self.topic}) or use more partitions."
                )
            key = cp.key.encode()
            headers = self.signer.sign(self.topic, key, value)
            futures.append(await producer.send(self.topic, value=value, key=key, headers=headers))
        try:
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise CheckpointError(f"writing checkpoints to {self.topic} failed: {exc}.") from exc

    async def load(
        self, keys: Collection[str], *, within: float = 60.0
    ) -> dict[str, Checkpoint | CheckpointError]:
        """The latest checkpoint of each key that has one (or why it cannot be read).

        A record whose MAC does not verify is a :class:`CheckpointIntegrityError`; its
        value is never parsed.
        """
        consumer = await self._start(
            lambda: AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                # A learner's checkpoint is written in a transaction with its versions:
                # one that was aborted (a fenced learner's) is never seen.
                isolation_level="read_committed",
                max_partition_fetch_bytes=self.max_bytes + (1 << 16),
                fetch_max_bytes=self.max_bytes + (1 << 16),
                **self.client_kwargs,
            ),
            "read checkpoints",
        )
        try:
            latest = await self._latest(consumer, set(keys), within)
        finally:
            await consumer.stop()
        # A verified tombstone: removed on purpose.
        kept = {k: found for k, found in latest.items() if found[0] is not None or not found[1]}
        return {key: self._checked(key, value, ok) for key, (value, ok) in kept.items()}

    async def _latest(
        self, consumer: AIOKafkaConsumer, wanted: set[str], within: float
    ) -> dict[str, tuple[bytes | None, bool]]:
        """The latest value of each wanted key and whether its MAC verified."""
        try:
            numbers = await topic_partitions(self.bootstrap, self.topic, self.client_kwargs)
        except KafkaSetupError as exc:
            raise CheckpointError(f"cannot read the partitions of {self.topic}: {exc}") from exc
        if not numbers:
            raise CheckpointError(
                f"checkpoint topic {self.topic} does not exist; the worker creates it "
                "at start (streams.kafka.topics.shared_topic_configs)."
            )
        parts = [TopicPartition(self.topic, p) for p in numbers]
        latest: dict[str, tuple[bytes | None, bool]] = {}
        try:
            async for m in records_to_end(consumer, parts, within=within):
                key = (m.key or b"").decode("utf-8", "replace")
                if key in wanted:
                    verified = self.signer.verify(self.topic, m.key, m.value, m.headers or ())
                    latest[key] = (m.value, verified)
        except TimeoutError as exc:
            raise CheckpointError(str(exc)) from exc
        return latest

    def _checked(
        self, key: str, value: bytes | None, verified: bool
    ) -> Checkpoint | CheckpointError:
        """A verified checkpoint record parsed, or why it cannot be used."""
        if not verified or value is None:
            return CheckpointIntegrityError(
                f"the latest record of {key} on {self.topic} has no valid MAC: it was "
                "forged, damaged, or signed with another RIVERLINE_SIGNING_KEY. It is not used."
            )
        try:
            return Checkpoint.from_bytes(value)
        except CheckpointError as exc:
            return exc

    async def offset_range(
        self, topic: str, partitions: Collection[int]
    ) -> tuple[dict[int, int], dict[int, int]]:
        """First retained and next-to-be-written offsets, per partition of ``topic``."""
        consumer = await self._start(
            lambda: AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=None, **self.client_kwargs
            ),
            f"read the offsets of {topic}",
        )
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return (
            {tp.partition: int(o) for tp, o in starts.items()},
            {tp.partition: int(o) for tp, o in ends.items()},
        )

    async def committed(
        self, group: str, topic: str, partitions: Collection[int]
    ) -> dict[int, int]:
        """The offsets ``group`` has committed for these partitions (absent: none yet).

        Read with a consumer that never joins the group, so the group's members are not
        disturbed (no rebalance).
        """
        consumer = await self._start(
            lambda: AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=group,
                enable_auto_commit=False,
                **self.client_kwargs,
            ),
            f"read the committed offsets of {topic}",
        )
        try:
            found = {}
            for p in partitions:
                offset = await consumer.committed(TopicPartition(topic, p))
                if offset is not None and offset >= 0:
                    found[p] = int(offset)
        finally:
            await consumer.stop()
        return found

    async def delete(self, keys: Iterable[str]) -> None:
        """Write tombstones, so the keys have no checkpoint any more (e.g. a reset)."""
        producer = await self._ensure_producer()
        futures = []
        for name in keys:
            key = name.encode()
            headers = self.signer.sign(self.topic, key, None)
            futures.append(await producer.send(self.topic, value=None, key=key, headers=headers))
        await asyncio.gather(*futures)
