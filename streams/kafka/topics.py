"""Topic administration: Riverline creates its topics explicitly (no broker auto-creation)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from streams.errors import KafkaSetupError
from streams.settings import Settings
from streams.spec import PipelineSpec

__all__ = [
    "ARTIFACTS",
    "CHECKPOINTS",
    "MODELS",
    "TopicConfig",
    "delete_topics",
    "ensure_topics",
    "pipeline_topic_configs",
    "shared_topic_configs",
    "topic_partitions",
]

#: The compacted topic of feature-state checkpoints (before the namespace).
CHECKPOINTS = "riverline.checkpoints"
#: The compacted topic of published model versions (before the namespace).
ARTIFACTS = "riverline.artifacts"
#: Model announcements, what a decoupled pipeline's learner serves, its progress.
MODELS = "riverline.models"
#: Retention for Riverline's data topics; long enough for replay in a demo or a test.
_RETENTION_MS = str(7 * 24 * 3600 * 1000)


@dataclass(frozen=True)
class TopicConfig:
    name: str
    partitions: int
    compacted: bool = False
    max_message_bytes: int | None = None

    def new_topic(self) -> NewTopic:
        configs = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if not self.compacted:
            configs["retention.ms"] = _RETENTION_MS
        if self.max_message_bytes is not None:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        return NewTopic(self.name, self.partitions, 1, topic_configs=configs)


def shared_topic_configs(settings: Settings) -> list[TopicConfig]:
    """The shared topics: dlq, models and checkpoints (compacted), audit and alerts."""
    return [
        # Any raw message Riverline accepts fits, with the dead letter's headers.
        TopicConfig(
            settings.topic("riverline.dlq"), 1, max_message_bytes=settings.output_topic_max_bytes
        ),
        TopicConfig(settings.topic("riverline.models"), 1, compacted=True),
        TopicConfig(
            settings.topic(CHECKPOINTS),
            1,
            compacted=True,
            # Checkpoints framing overhead aside, a state up to checkpoint_max_bytes fits.
            max_message_bytes=settings.checkpoint_max_bytes + (1 << 16),
        ),
        TopicConfig(settings.topic("riverline.audit"), 1),
        TopicConfig(settings.topic("riverline.alerts"), 1),
        # Published model versions, in chunks (streams.models.artifacts): the latest
        # record of each key is kept, pruned versions go with tombstones.
        TopicConfig(settings.topic(ARTIFACTS), 1, compacted=True),
    ]


def pipeline_topic_configs(settings: Settings, spec: PipelineSpec) -> list[TopicConfig]:
    topics = spec.topics(settings.namespace)
    n = spec.partitions
    out = settings.output_topic_max_bytes
    configs = [
        TopicConfig(topics.raw, n, max_message_bytes=settings.raw_topic_max_bytes),
        TopicConfig(topics.events, n, max_message_bytes=out),
        TopicConfig(topics.features, n, max_message_bytes=out),
        TopicConfig(topics.predictions, n, max_message_bytes=out),
        TopicConfig(f"{topics.predictions}.shadow", n, max_message_bytes=out),
        TopicConfig(topics.labels, n, max_message_bytes=settings.raw_topic_max_bytes),
    ]
    if spec.decoupled:
        # One partition: one learner, one order (what replay reproduces).
        configs.append(TopicConfig(topics.learn, 1, max_message_bytes=out))
    return configs


async def _admin(bootstrap: str, security: Mapping[str, Any]) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **security)
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise KafkaSetupError(
            f"cannot reach Kafka at {bootstrap}: {exc}. Start it with `riverline kafka up` "
            "or set RIVERLINE_BOOTSTRAP to a running cluster."
        ) from exc
    return admin


async def _ensure(
    bootstrap: str, configs: Sequence[TopicConfig], security: Mapping[str, Any]
) -> list[str]:
    admin = await _admin(bootstrap, security)
    try:
        existing = set(await admin.list_topics())
        missing = [c for c in configs if c.name not in existing]
        if missing:
            # Another worker may create one between list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([c.new_topic() for c in missing])
        # Creation is asynchronous in the controller; wait until metadata shows them.
        for _ in range(100):
            if {c.name for c in configs} <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
        return [c.name for c in missing]
    finally:
        await admin.close()


async def _delete(bootstrap: str, names: Iterable[str], security: Mapping[str, Any]) -> None:
    admin = await _admin(bootstrap, security)
    try:
        existing = set(await admin.list_topics())
        doomed = [n for n in names if n in existing]
        if doomed:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                await admin.delete_topics(doomed)
        for _ in range(100):
            if not set(doomed) & set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def topic_partitions(
    bootstrap: str, topic: str, security: Mapping[str, Any] | None = None
) -> list[int]:
    """The partitions of ``topic`` (empty if it does not exist), from fresh metadata."""
    admin = await _admin(bootstrap, security or {})
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for found in described:
        if found.get("topic") == topic and not found.get("error_code"):
            return sorted(int(p["partition"]) for p in found.get("partitions", ()))
    return []


def ensure_topics(
    bootstrap: str,
    configs: Sequence[TopicConfig],
    security: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    ``security``: aiokafka client arguments (:func:`streams.kafka.auth.client_kwargs`).
    """
    return asyncio.run(_ensure(bootstrap, configs, security or {}))


def delete_topics(
    bootstrap: str, names: Iterable[str], security: Mapping[str, Any] | None = None
) -> None:
    """Delete topics if they exist and wait until they are gone (``security`` as above)."""
    asyncio.run(_delete(bootstrap, list(names), security or {}))
