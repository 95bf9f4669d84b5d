"""The plain message types stages consume and produce (no Kafka client in sight)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["InMessage", "OutMessage"]


@dataclass(frozen=True, slots=True)
class InMessage:
    """A message as read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to send."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
