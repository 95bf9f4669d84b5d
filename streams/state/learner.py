"""A decoupled pipeline's learner, saved and restored through Kafka alone.

A checkpoint of the learner is one Kafka transaction (:class:`Publisher`) holding

1. each served model's new version, in chunks, on ``riverline.artifacts``,
2. the learner's state (models' state, label join, log position, repeat marks) as the
   record ``<pipeline>/learner`` on ``riverline.checkpoints``,
3. the served set ``<pipeline>/served`` and the versions' announcements on
   ``riverline.models``,
4. the learning log's offset, committed for the learners' consumer group.

All of it becomes visible at once, or none of it. The transactional id is one per pipeline:
a learner that starts one (:meth:`Publisher.start`) fences the previous holder, whose
next commit fails, so a learner paused past its session and resumed after another took
over publishes nothing. A learner starting on an empty home restores from these records
alone (:meth:`LearnerState.restore`): the local registry is a cache of the topic.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams.errors import RiverlineError
from streams.kafka.reading import records_to_end
from streams.kafka.transactions import FencedError, Transactions
from streams.messages import OutMessage
from streams.models.artifacts import (
    CHUNK_BYTES,
    ArtifactError,
    VersionAssembler,
    version_keys,
    version_records,
)
from streams.models.learner import Learner
from streams.models.lifecycle import Alert
from streams.models.model import OnlineModel
from streams.models.registry import Manifest, PendingVersion, RegistryError
from streams.pipeline.stage import now_ms
from streams.state.checkpoint import (
    LEARNER,
    Checkpoint,
    CheckpointError,
    CheckpointIntegrityError,
)
from streams.state.feed import ServedModel, ServedSet, served_key
from streams.state.store import CheckpointStore
from streams.trust.records import RecordSigner

__all__ = ["FencedError", "LearnerState", "Publication", "Publisher"]

log = logging.getLogger("riverline.learner")


@dataclass(frozen=True)
class Publication:
    """One checkpoint of the learner, taken between two batches."""

    note: str
    #: Each served model, the version it carries now, and its next version to write.
    versions: list[tuple[OnlineModel, int, PendingVersion]]
    #: Each new version's signature, as the registry signs it.
    signatures: dict[str, str]
    checkpoint: Checkpoint
    served: ServedSet
    position: int


class LearnerState:
    """Saves and restores one pipeline's learner, its versions and its log position."""

    def __init__(
        self,
        learner: Learner,
        store: CheckpointStore,
        *,
        artifacts_topic: str,
        models_topic: str,
        registry_keep: int = 50,
        learner_id: str = "",
    ) -> None:
        """``learner_id`` names this learner (``host:pid``) in what it publishes."""
        self.learner = learner
        self.learner_id = learner_id
        self.store = store
        self.artifacts_topic = artifacts_topic
        self.models_topic = models_topic
        self.registry_keep = registry_keep
        self.pipeline = learner.spec.name
        self.key = f"{self.pipeline}/{LEARNER}"

    @property
    def registry(self) -> Any:
        registry = self.learner.lifecycle.registry
        if registry is None:
            raise RiverlineError("a learner needs a registry (RIVERLINE_HOME/registry).")
        return registry

    # -- restore ---------------------------------------------------------------------

    async def restore(self) -> tuple[bool, list[Alert]]:
        """The latest learner checkpoint, its versions fetched from ``riverline.artifacts``.

        Returns whether one was restored (else the learner starts fresh: the caller
        publishes its first versions) and the alerts to publish (a record without a valid
        MAC, a version that did not verify).
        """
        found = (await self.store.load([self.key])).get(self.key)
        alerts: list[Alert] = []
        if isinstance(found, CheckpointIntegrityError):
            log.error("not using the learner checkpoint %s (%s); fresh models", self.key, found)
            alerts.append(Alert(self.pipeline, "integrity", "", str(found)))
            return False, alerts
        if isinstance(found, CheckpointError):
            log.warning("not using the learner checkpoint %s (%s); fresh models", self.key, found)
            return False, alerts
        if found is None:
            return False, alerts
        if found.spec_hash != self.learner.spec.hash:
            log.warning("the learner checkpoint %s is of another spec; fresh models", self.key)
            return False, alerts
        wanted = _versions_named(found.state)
        await self.fetch(wanted)
        try:
            alerts += await asyncio.to_thread(self.learner.restore, found.state)
        except CheckpointError as exc:
            log.warning("not using the learner checkpoint %s (%s); fresh models", self.key, exc)
            self.learner.reset()
            return False, alerts
        log.info(
            "restored the learner of %s at %s:0 offset %d with %s",
            self.pipeline,
            self.learner.learning_topic,
            self.learner.position,
            [s.label for s in self.learner.lifecycle.served],
        )
        return True, alerts

    async def fetch(self, wanted: Sequence[tuple[str, int]], *, within: float = 120.0) -> None:
        """Import the ``wanted`` versions (and any other of this pipeline met on the way)
        from ``riverline.artifacts`` into the local registry."""
        registry = self.registry
        missing = {w for w in wanted if not registry.has(*w)}
        if not missing:
            return
        assembler = VersionAssembler()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.store.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 << 20,
            **self.store.client_kwargs,
        )
        await consumer.start()
        tp = TopicPartition(self.artifacts_topic, 0)
        try:
            async for m in records_to_end(consumer, [tp], within=within, max_records=500):
                await self._import(assembler, m)
        except TimeoutError as exc:
            log.error("%s", exc)
        finally:
            await consumer.stop()
        still = sorted(f"{n}@{v}" for n, v in missing if not registry.has(n, v))
        if still:
            log.error("versions %s are not on %s; their models start fresh", still, tp.topic)

    async def _import(self, assembler: VersionAssembler, m: Any) -> None:
        """One artifacts record: a version into the registry once all its chunks came."""
        key = (m.key or b"").decode("utf-8", "replace")
        if not key.startswith(f"{self.pipeline}/"):
            return
        if not self.store.signer.verify(self.artifacts_topic, m.key, m.value, m.headers or ()):
            return
        try:
            version = assembler.add(key, m.value)
            if version is not None:
                await asyncio.to_thread(
                    self.registry.import_version, version.pending, version.signature
                )
        except (ArtifactError, RegistryError) as exc:
            log.error("%s", exc)

    # -- publish -----------------------------------------------------------------------

    def prepare(self, note: str) -> Publication:
        """The learner as it is now (between two batches): models pickled, state taken."""
        learner = self.learner
        learning = learner.learning
        offsets = {f"{learner.learning_topic}:0": learner.position}
        pending = [(s, learning.prepare(s, note, offsets)) for s in learner.lifecycle.served]
        versions = {p.manifest.name: p.manifest.version for _, p in pending}
        registry = self.registry
        signatures = {p.manifest.label: registry.signature(p.manifest) for _, p in pending}
        checkpoint = Checkpoint(
            self.pipeline,
            0,
            learner.position,
            learner.spec.hash,
            LEARNER,
            learner.state_bytes(versions),
            written_ms=now_ms(),
        )
        served = ServedSet(
            tuple(
                ServedModel(p.manifest.name, p.manifest.version, s.stage, s.model.samples_seen)
                for s, p in pending
            ),
            learner.learned,
            now_ms(),
            self.learner_id,
        )
        return Publication(
            note,
            [(s.model, s.model.version, p) for s, p in pending],
            signatures,
            checkpoint,
            served,
            learner.position,
        )

    def records(self, publication: Publication) -> list[OutMessage]:
        """Every record of a publication, in the order they are sent (signed by the caller)."""
        out: list[OutMessage] = []
        for _, _, pending in publication.versions:
            signature = publication.signatures[pending.manifest.label]
            for key, value in version_records(pending, signature):
                out.append(OutMessage(self.artifacts_topic, key.encode(), value, []))
        cp = publication.checkpoint
        out.append(OutMessage(self.store.topic, cp.key.encode(), cp.to_bytes(), []))
        out.append(
            OutMessage(
                self.models_topic,
                served_key(self.pipeline).encode(),
                publication.served.to_bytes(),
                [],
            )
        )
        return out

    async def written(self, publication: Publication) -> list[Manifest]:
        """After the transaction committed: the versions into the local registry (a
        cache), the models carry them, older ones are pruned (with tombstones to send)."""
        registry = self.registry
        pendings = [p for _, _, p in publication.versions]

        def write() -> list[Manifest]:
            return [
                registry.write(p)
                if not registry.has(p.manifest.name, p.manifest.version)
                else p.manifest
                for p in pendings
            ]

        manifests = await asyncio.to_thread(write)
        for model, was, pending in publication.versions:
            if model.version == was:
                model.version = pending.manifest.version
        return manifests

    def prune(self) -> list[tuple[str, bytes]]:
        """Remove old local versions; the (topic, key) of their records on the artifacts
        topic, for tombstones.

        Kept: the newest ``registry_keep`` of each model, every version served, and every
        rollback target.
        """
        registry = self.registry
        lifecycle = self.learner.lifecycle
        tombstones: list[tuple[str, bytes]] = []
        for served in lifecycle.served:
            name = served.model.spec.name
            protect = {v for n, v in lifecycle.history if n == name} | {served.model.version}
            sizes = {v: registry.artifact_size(name, v) for v in registry.versions(name)}
            for version in registry.prune(name, self.registry_keep, protect):
                chunks = max(1, -(-sizes.get(version, 0) // CHUNK_BYTES))
                for key in version_keys(self.pipeline, name, version, chunks):
                    tombstones.append((self.artifacts_topic, key.encode()))
        return tombstones


class Publisher:
    """The learner's transactional producer: a publication is visible whole or not at all.

    Its transactional id is one per pipeline: starting it fences the previous learner.
    """

    def __init__(
        self,
        bootstrap: str,
        transactional_id: str,
        signer: RecordSigner,
        client_kwargs: Mapping[str, Any],
        max_request_size: int,
    ) -> None:
        self.transactional_id = transactional_id
        self.signer = signer
        self._transactions = Transactions(
            bootstrap, transactional_id, client_kwargs, max_request_size=max_request_size
        )
        self._lock = asyncio.Lock()  # one transaction at a time

    @property
    def fenced(self) -> bool:
        """Another learner started since: the producer is unusable from then on."""
        return self._transactions.fenced

    async def start(self) -> None:
        """Start (and so fence any earlier producer with the same transactional id)."""
        await self._transactions.start()

    async def stop(self) -> None:
        await self._transactions.stop()

    async def publish(
        self,
        records: Sequence[OutMessage],
        offsets: Mapping[TopicPartition, int],
        group: str,
        tombstones: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Send every record (and tombstones of ``(topic, key)``) and commit ``offsets``
        for ``group``, in one transaction.

        Raises
        ------
        FencedError
            If another learner started since: nothing of this transaction is visible.
        """
        async with self._lock:
            transactions = self._transactions
            try:
                if not transactions.started and not transactions.fenced:
                    await transactions.start()  # stopped after an abort that failed
                await transactions.begin()
                await self._send(records, tombstones)
                await transactions.commit(
                    {(tp.topic, tp.partition): o for tp, o in offsets.items()}, group
                )
            except BaseException as exc:
                await transactions.fail(exc)
                if transactions.fenced:
                    raise FencedError(
                        f"another learner started with the transactional id "
                        f"{self.transactional_id}; this one stops publishing."
                    ) from exc
                if isinstance(exc, KafkaError):
                    raise RiverlineError(f"publishing failed: {type(exc).__name__}: {exc}") from exc
                raise

    async def _send(
        self, records: Sequence[OutMessage], tombstones: Sequence[tuple[str, bytes]]
    ) -> None:
        producer = self._transactions.producer
        futures = []
        for out in records:
            headers = self.signer.sign(out.topic, out.key, out.value, out.headers)
            futures.append(
                await producer.send(out.topic, value=out.value, key=out.key, headers=headers)
            )
        for topic, key in tombstones:
            headers = self.signer.sign(topic, key, None)
            futures.append(await producer.send(topic, value=None, key=key, headers=headers))
        failed = [
            r
            for r in await asyncio.gather(*futures, return_exceptions=True)
            if isinstance(r, BaseException)
        ]
        if failed:
            raise failed[0]


def _versions_named(state: bytes) -> list[tuple[str, int]]:
    """The (model, version) pairs a learner state names."""
    try:
        doc = json.loads(state)
        return [(str(m["name"]), int(m["version"])) for m in doc["models"]]
    except (ValueError, KeyError, TypeError):
        return []
