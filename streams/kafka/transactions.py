"""A transactional producer whose transaction spans many sends: exactly-once outputs.

In exactly-once mode a worker's outputs since its last checkpoint, that checkpoint's
records and the input offsets it reflects are one Kafka transaction
(``agents.coordinator``). :class:`Transactions` holds that producer: a transaction begins
with the first send after a commit and stays open until the next checkpoint commits it
together with the consumer group's offsets (``send_offsets_to_transaction``), or until a
failure aborts it (nothing of it is ever visible to a ``read_committed`` consumer).

Fencing: aiokafka's offset commits inside a transaction carry no consumer-group metadata
(no KIP-447), so the transactional id names what the producer owns (a pipeline's inputs):
starting a producer with the same id (``InitProducerId``) fences the previous one, whose
next send or commit fails with :class:`FencedError`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError, ProducerFenced

from streams.errors import RiverlineError

__all__ = ["FencedError", "TransactionError", "Transactions"]

log = logging.getLogger("riverline.transactions")


class FencedError(RiverlineError):
    """Another process started with this transactional id: this one must not write again."""


class TransactionError(RiverlineError):
    """A transaction could not be begun, committed or aborted."""


class Transactions:
    """One transactional producer; at most one transaction open at a time."""

    def __init__(
        self,
        bootstrap: str,
        transactional_id: str,
        client_kwargs: Mapping[str, Any],
        *,
        max_request_size: int,
        timeout_ms: int = 60_000,
    ) -> None:
        self.bootstrap = bootstrap
        self.transactional_id = transactional_id
        self.client_kwargs = dict(client_kwargs)
        self.max_request_size = max_request_size
        self.timeout_ms = timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._open = False
        #: Set once fenced: this producer is unusable, :meth:`start` makes a new one.
        self.fenced = False
        #: Transactions committed and aborted by this process.
        self.committed = 0
        self.aborted = 0

    @property
    def started(self) -> bool:
        return self._producer is not None

    @property
    def open(self) -> bool:
        """A transaction has begun and is not committed or aborted yet."""
        return self._open

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer, to send in the open transaction."""
        if self._producer is None:
            raise TransactionError(f"{self.transactional_id}: the producer is not started")
        return self._producer

    async def start(self, within: float = 60.0) -> None:
        """A new producer with this transactional id; starting it fences every earlier
        one and aborts the transaction it left open. Retries for ``within`` seconds while
        the cluster is unreachable (a broker restarting: rebalance handlers must not fail).
        """
        await self.stop()
        deadline = time.monotonic() + within
        delay = 0.25
        while True:
            try:
                self._producer = await self._started()
                break
            except TransactionError as exc:
                if not isinstance(exc.__cause__, KafkaConnectionError):
                    raise
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("%s; retrying", exc)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        self.fenced = False
        log.info("transactional producer %s started", self.transactional_id)

    async def _started(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            transactional_id=self.transactional_id,
            enable_idempotence=True,
            acks="all",
            transaction_timeout_ms=self.timeout_ms,
            max_request_size=self.max_request_size,
            **self.client_kwargs,
        )
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise TransactionError(
                f"cannot start the transactional producer {self.transactional_id} at "
                f"{self.bootstrap}: {type(exc).__name__}: {exc}. Is the broker up?"
            ) from exc
        return producer

    async def stop(self) -> None:
        """Stop the producer; an open transaction is left to the broker to abort (or to
        the next :meth:`start` with this id, which aborts it at once)."""
        producer, self._producer = self._producer, None
        self._open = False
        if producer is not None:
            await producer.stop()

    async def begin(self) -> None:
        """Begin a transaction unless one is open."""
        if self._open:
            return
        if self.fenced:
            raise FencedError(f"{self.transactional_id}: this producer was fenced")
        await self._guard(self.producer.begin_transaction(), "begin a transaction")
        self._open = True

    async def commit(self, offsets: Mapping[tuple[str, int], int], group: str) -> None:
        """Commit the open transaction (begun here if none is) with ``offsets`` (the next
        offset of each ``(topic, partition)``) as ``group``'s committed offsets."""
        await self.begin()
        producer = self.producer
        tps = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
        if tps:
            await self._guard(
                producer.send_offsets_to_transaction(tps, group), "add the offsets to it"
            )
        await self._guard(producer.commit_transaction(), "commit it")
        self._open = False
        self.committed += 1

    async def fail(self, exc: BaseException) -> None:
        """After ``exc`` broke the open transaction: abort it, or, if ``exc`` says another
        producer took this transactional id, mark this one fenced (it must not restart:
        that would fence the new owner)."""
        if isinstance(exc, ProducerFenced) or isinstance(exc.__cause__, ProducerFenced):
            self.fenced = True
            self._open = False
            return
        await self.abort()

    async def abort(self) -> None:
        """Abort the open transaction, if any: nothing sent in it becomes visible."""
        if not self._open or self._producer is None:
            self._open = False
            return
        self._open = False
        try:
            await self._producer.abort_transaction()
            self.aborted += 1
        except ProducerFenced:
            self.fenced = True  # fenced: the new owner's start aborted it already
        except KafkaError as exc:
            # The broker aborts it when it times out, or the next start with this id.
            log.warning("aborting a transaction of %s failed: %s", self.transactional_id, exc)
            await self.stop()

    async def _guard(self, step: Any, what: str) -> None:
        try:
            await step
        except ProducerFenced as exc:
            self.fenced = True
            self._open = False
            raise FencedError(
                f"another process started with the transactional id {self.transactional_id} "
                "and took over its inputs: this one stops writing."
            ) from exc
        except KafkaError as exc:
            raise TransactionError(
                f"{self.transactional_id} could not {what}: {type(exc).__name__}: {exc}"
            ) from exc
