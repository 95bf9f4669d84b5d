"""What every stage returns for a micro-batch, and the dead-letter envelope."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from streams.lineage import EVENT_ID, Lineage
from streams.messages import InMessage, OutMessage

__all__ = ["DeadLetter", "StageResult", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class DeadLetter:
    """Why a message could not go on. The original bytes travel unchanged."""

    stage: str
    reason: str
    message: str
    schema: str = ""

    def to_message(
        self, original: InMessage, dlq_topic: str, lineage: Lineage | None = None
    ) -> OutMessage:
        """The dead letter of ``original``; with ``lineage``, its headers are added unless
        the original has them already (a raw message read by a later stage, one-pass)."""
        headers = list(original.headers)
        if lineage is not None and not any(k == EVENT_ID for k, _ in headers):
            headers = lineage.to_headers() + headers
        headers += [
            ("rl.error.topic", original.topic.encode()),
            ("rl.error.partition", str(original.partition).encode()),
            ("rl.error.offset", str(original.offset).encode()),
            ("rl.error.stage", self.stage.encode()),
            ("rl.error.class", self.reason.encode()),
            ("rl.error.message", self.message[:2000].encode()),
            ("rl.error.schema", self.schema.encode()),
        ]
        return OutMessage(dlq_topic, original.key, original.value or b"", headers)


@dataclass
class StageResult:
    """Messages to send for one micro-batch, and what happened to each input."""

    sends: list[OutMessage] = field(default_factory=list)
    ok: int = 0
    dead: Counter[str] = field(default_factory=Counter)
