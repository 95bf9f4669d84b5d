"""What every stage returns for a micro-batch, and the dead-letter envelope."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from streams.messages import InMessage, OutMessage
from streams.pipeline.lineage import EVENT_ID, Lineage

__all__ = ["STAGE_ERROR", "DeadLetter", "StageResult", "dead_letter_reason", "now_ms"]

#: The dead-letter reason of a message whose handling raised an unexpected exception; the
#: exception's class is in ``rl.error.exception`` and its text in ``rl.error.message``.
STAGE_ERROR = "stage_error"
#: Longest ``rl.error.message`` (characters): enough to say what was wrong and where.
_MESSAGE_CHARS = 2000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class DeadLetter:
    """Why a message could not go on. The original bytes travel unchanged."""

    stage: str
    reason: str
    message: str
    schema: str = ""
    exception: str = ""
    """The class of the exception that made it a dead letter, for ``stage_error``."""

    @classmethod
    def of(cls, stage: str, exc: BaseException, schema: str = "") -> DeadLetter:
        """The dead letter of an unexpected exception while one message was handled."""
        kind = type(exc)
        return cls(stage, STAGE_ERROR, f"{kind.__name__}: {exc}", schema, kind.__qualname__)

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
            # A message may quote the bad value: lone surrogates are escaped, not fatal.
            ("rl.error.message", _utf8(self.message[:_MESSAGE_CHARS])),
            ("rl.error.schema", _utf8(self.schema)),
        ]
        if self.exception:
            headers.append(("rl.error.exception", _utf8(self.exception)))
        return OutMessage(dlq_topic, original.key, original.value or b"", headers)


def dead_letter_reason(out: OutMessage) -> str:
    """The reason (``rl.error.class``) of a dead letter made by :meth:`DeadLetter.to_message`."""
    for name, value in reversed(out.headers):
        if name == "rl.error.class":
            return value.decode("utf-8", "replace")
    return ""


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


@dataclass
class StageResult:
    """Messages to send for one micro-batch, and what happened to each input."""

    sends: list[OutMessage] = field(default_factory=list)
    ok: int = 0
    dead: Counter[str] = field(default_factory=Counter)
