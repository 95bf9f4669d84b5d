"""Ingestion: raw bytes in any accepted wire format -> validated, canonical Avro events.

Every raw offset ends in exactly one of ``P.events`` or the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.errors import DecodeError
from streams.messages import InMessage, OutMessage
from streams.pipeline.lineage import Lineage
from streams.pipeline.stage import DeadLetter, StageResult, now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import (
    DEFAULT_MAX_EVENT_TIME_AHEAD,
    DEFAULT_MAX_ID_BYTES,
    EventDecoder,
    encode_framed,
)
from streams.spec import PipelineSpec

__all__ = ["Ingested", "Ingestion", "epoch_ms"]


def epoch_ms(value: Any) -> int:
    """Epoch milliseconds from a decoded timestamp-millis (datetime) or a plain number."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


@dataclass(frozen=True, slots=True)
class Ingested:
    """A raw message that passed ingestion: its record, lineage and ``P.events`` message."""

    record: dict[str, Any]
    lineage: Lineage
    out: OutMessage


class Ingestion:
    """Decode, validate and re-encode one pipeline's raw messages.

    ``max_id_bytes`` and ``max_event_time_ahead`` bound the spec's id, key and time
    fields (:class:`~streams.serialization.codec.EventDecoder`); an event whose Avro
    encoding is larger than ``max_bytes`` (JSON numbers can grow fourfold as doubles) is
    ``too_large``.
    """

    stage = "ingest"

    def __init__(
        self,
        spec: PipelineSpec,
        catalog: SchemaCatalog,
        *,
        events_topic: str,
        dlq_topic: str,
        max_bytes: int,
        max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
        max_event_time_ahead: float = DEFAULT_MAX_EVENT_TIME_AHEAD,
    ) -> None:
        self.spec = spec
        self.reader = catalog.latest(spec.subject)
        self.max_bytes = max_bytes
        self.decoder = EventDecoder(
            catalog,
            spec.subject,
            max_bytes=max_bytes,
            id_field=spec.id_field,
            key_field=spec.key_field,
            time_field=spec.time_field,
            max_id_bytes=max_id_bytes,
            max_event_time_ahead=max_event_time_ahead,
        )
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self._header = catalog.output_header(events_topic, self.reader)

    def process(self, batch: Sequence[InMessage]) -> StageResult:
        result = StageResult()
        ingest_ts = now_ms()
        for msg in batch:
            self.ingest(msg, ingest_ts, result)
        return result

    def ingest(
        self, msg: InMessage, ingest_ts: int, result: StageResult
    ) -> tuple[dict[str, Any], Lineage] | None:
        """One raw message to ``result``: its event, or its dead letter (then None)."""
        try:
            done = self.ingest_one(msg, ingest_ts)
        except Exception as exc:  # any failure is this message's alone: a dead letter
            self.dead(msg, exc, result)
            return None
        result.sends.append(done.out)
        result.ok += 1
        return done.record, done.lineage

    def ingest_one(self, msg: InMessage, ingest_ts: int) -> Ingested:
        """One raw message's validated record, lineage and ``P.events`` message.

        Raises
        ------
        DecodeError
            If the message is not a valid event (its reason names why).
        Exception
            Anything else is a fault in handling this one message; the caller makes it a
            dead letter (:meth:`dead`) and goes on with the batch.
        """
        decoded = self.decoder.decode(msg.key, msg.value, now_ms=ingest_ts)
        record = decoded.record
        event_id = str(record[self.spec.id_field])
        lineage = Lineage.of(
            event_id=event_id,
            schema=decoded.writer.label,
            source=msg.source,
            pipeline=self.spec.label,
            event_ts=(
                epoch_ms(record[self.spec.time_field])
                if decoded.event_ms is None
                else decoded.event_ms
            ),
            ingest_ts=ingest_ts,
            raw_ts=msg.timestamp_ms,
        )
        key_field = self.spec.key_field
        key = str(record[key_field]) if key_field else event_id
        value = encode_framed(self._header, self.reader, record)
        if len(value) > self.max_bytes:
            raise DecodeError(
                "too_large",
                f"as {self.reader.label} Avro the event is {len(value)} bytes, over the limit "
                f"of {self.max_bytes} (RIVERLINE_MAX_MESSAGE_BYTES)",
            )
        out = OutMessage(self.events_topic, key.encode(), value, lineage.to_headers())
        return Ingested(record, lineage, out)

    def dead(self, msg: InMessage, exc: BaseException, result: StageResult) -> str:
        """Add the dead letter of ``msg`` for ``exc`` to ``result``; returns its reason."""
        if isinstance(exc, DecodeError):
            dead = DeadLetter(self.stage, exc.reason, str(exc), self.reader.label)
        else:
            dead = DeadLetter.of(self.stage, exc, self.reader.label)
        result.sends.append(dead.to_message(msg, self.dlq_topic))
        result.dead[dead.reason] += 1
        return dead.reason
