"""What a decoupled pipeline's learner publishes, read back: model versions and what to serve.

The learner publishes, in one Kafka transaction per checkpoint (``agents.learner``):

* each new model version in chunks on ``riverline.artifacts`` (:mod:`streams.models.artifacts`),
* the record ``<pipeline>/served`` on ``riverline.models``: which version of each model to
  serve, champion first, and how many records it had learned (:class:`ServedSet`),

and, in a small transaction of its own once a second, ``<pipeline>/progress`` on
``riverline.models`` (:class:`Progress`): how far it has learned since, for the serving
workers' staleness.

:class:`VersionFeed` reads both topics with ``read_committed`` (a fenced learner's aborted
transaction is never seen), checks every record's MAC, assembles versions and imports them
into the local registry (a cache: anything it holds came from Kafka and was verified), and
keeps the latest served set whose versions are all here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.errors import RiverlineError
from streams.kafka.auth import client_kwargs
from streams.kafka.topics import ARTIFACTS, MODELS
from streams.models.artifacts import ArtifactError, VersionAssembler
from streams.models.registry import ModelRegistry, RegistryError
from streams.settings import Settings
from streams.trust.records import RecordSigner

__all__ = [
    "Progress",
    "ServedModel",
    "ServedSet",
    "VersionFeed",
    "progress_key",
    "served_key",
    "sync_versions",
]

log = logging.getLogger("riverline.feed")


def served_key(pipeline: str) -> str:
    """The ``riverline.models`` key of what a pipeline's learner serves."""
    return f"{pipeline}/served"


def progress_key(pipeline: str) -> str:
    """The ``riverline.models`` key of a pipeline's learner's progress."""
    return f"{pipeline}/progress"


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: int
    stage: str
    samples_seen: int


@dataclass(frozen=True)
class ServedSet:
    """What to serve: a version of each model, champion first, as the learner published."""

    models: tuple[ServedModel, ...]
    learned: int
    ts_ms: int
    #: Which learner published it (``host:pid``).
    learner: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "models": [m.__dict__ for m in self.models],
                "learned": self.learned,
                "ts": self.ts_ms,
                "learner": self.learner,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ServedSet:
        """Raises ValueError on a malformed record."""
        try:
            doc = json.loads(data)
            models = tuple(
                ServedModel(
                    str(m["name"]), int(m["version"]), str(m["stage"]), int(m["samples_seen"])
                )
                for m in doc["models"]
            )
            return cls(models, int(doc["learned"]), int(doc["ts"]), str(doc.get("learner", "")))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a served set: {exc!r}") from exc


@dataclass(frozen=True)
class Progress:
    """How much the learner has learned: samples per model, and when it said so."""

    samples: Mapping[str, int]
    ts_ms: int
    #: The learner that said so (``host:pid``).
    learner: str = ""

    def to_bytes(self) -> bytes:
        doc = {"samples": dict(self.samples), "ts": self.ts_ms, "learner": self.learner}
        return json.dumps(doc).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Progress:
        """Raises ValueError on a malformed record."""
        try:
            doc = json.loads(data)
            samples = {str(k): int(v) for k, v in doc["samples"].items()}
            return cls(samples, int(doc["ts"]), str(doc.get("learner", "")))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a progress record: {exc!r}") from exc


@dataclass
class VersionFeed:
    """Follows a pipeline's published versions into the local registry (a cache)."""

    bootstrap: str
    client_kwargs: Mapping[str, Any]
    signer: RecordSigner
    registry: ModelRegistry
    pipeline: str
    artifacts_topic: str
    models_topic: str
    #: The latest served set whose versions are all in the local registry.
    served: ServedSet | None = None
    progress: Progress | None = None
    #: Records refused (no valid MAC, a version that did not verify), all time.
    refused: int = 0
    _waiting: ServedSet | None = None
    _imported: set[tuple[str, int]] = field(default_factory=set)
    _assembler: VersionAssembler = field(default_factory=VersionAssembler)
    _consumer: AIOKafkaConsumer | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        """Read both topics from their start (every version and served set so far)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            max_partition_fetch_bytes=4 << 20,
            **self.client_kwargs,
        )
        await consumer.start()
        parts = [TopicPartition(self.artifacts_topic, 0), TopicPartition(self.models_topic, 0)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        self._consumer = consumer

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def caught_up(self) -> bool:
        """True when both topics have been read to their (committed) ends."""
        assert self._consumer is not None, "call start() first"
        parts = list(self._consumer.assignment())
        ends = await self._consumer.end_offsets(parts)
        return all([await self._consumer.position(tp) >= ends[tp] for tp in parts])

    async def poll(self, timeout_ms: int = 500) -> None:
        """Read what has come; import complete versions; update :attr:`served`."""
        assert self._consumer is not None, "call start() first"
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        for tp, messages in batches.items():
            for m in messages:
                if not self.signer.verify(tp.topic, m.key, m.value, m.headers or ()):
                    self.refused += 1
                    continue
                key = (m.key or b"").decode("utf-8", "replace")
                if tp.topic == self.artifacts_topic:
                    await self._artifact(key, m.value)
                elif m.value is not None:
                    self._model_record(key, m.value)
        self._settle()

    async def _artifact(self, key: str, value: bytes | None) -> None:
        if not key.startswith(f"{self.pipeline}/"):
            return
        try:
            version = self._assembler.add(key, value)
        except ArtifactError as exc:
            self.refused += 1
            log.error("%s", exc)
            return
        if version is None:
            return
        m = version.manifest
        try:
            await asyncio.to_thread(
                self.registry.import_version, version.pending, version.signature
            )
        except RegistryError as exc:
            self.refused += 1
            log.error("not serving %s: %s", m.label, exc)
            return
        self._imported.add((m.name, m.version))

    def _model_record(self, key: str, value: bytes) -> None:
        try:
            if key == served_key(self.pipeline):
                self._waiting = ServedSet.from_bytes(value)
            elif key == progress_key(self.pipeline):
                self.progress = Progress.from_bytes(value)
        except ValueError as exc:
            self.refused += 1
            log.error("a malformed record %s on %s: %s", key, self.models_topic, exc)

    def _settle(self) -> None:
        """Make the waiting served set current once every version it names is here."""
        waiting = self._waiting
        if waiting is None:
            return
        if all(
            (m.name, m.version) in self._imported or self.registry.has(m.name, m.version)
            for m in waiting.models
        ):
            self.served, self._waiting = waiting, None
            self.changed.set()

    def staleness(self, name: str, samples_seen: int) -> tuple[int, float] | None:
        """Samples the learner has learned since a served version, and that version's age
        in seconds; None before the learner said how far it is."""
        served = self.served
        if served is None:
            return None
        learned = self.progress.samples.get(name) if self.progress is not None else None
        ahead = max(0, (learned if learned is not None else samples_seen) - samples_seen)
        return ahead, max(0.0, time.time() - served.ts_ms / 1000.0)


async def sync_versions(settings: Settings, pipeline: str, *, within: float = 120.0) -> VersionFeed:
    """Every version ``pipeline``'s learner published, verified into the local registry (a
    cache), and what it serves now: what a CLI on any machine reads before it looks at
    models.

    Raises
    ------
    RiverlineError
        If the topics were not read to their ends within ``within`` seconds.
    """
    feed = VersionFeed(
        settings.effective_bootstrap,
        client_kwargs(settings),
        RecordSigner(settings.signing_key_bytes()),
        ModelRegistry(settings.registry_dir, pipeline, settings.signing_key_bytes()),
        pipeline,
        settings.topic(ARTIFACTS),
        settings.topic(MODELS),
    )
    await feed.start()
    try:
        deadline = time.monotonic() + within
        while not await feed.caught_up():
            if time.monotonic() > deadline:
                raise RiverlineError(
                    f"reading {feed.models_topic} and {feed.artifacts_topic} took more than "
                    f"{within:.0f} s; is the broker at {settings.effective_bootstrap} up?"
                )
            await feed.poll()
    finally:
        await feed.stop()
    return feed
