"""Ingestion: raw bytes in any accepted wire format -> validated, canonical Avro events.

Every raw offset ends in exactly one of ``P.events`` or the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from streams.catalog import SchemaCatalog
from streams.codec import (
    DEFAULT_MAX_EVENT_TIME_AHEAD,
    DEFAULT_MAX_ID_BYTES,
    EventDecoder,
    encode_single_object,
)
from streams.errors import DecodeError
from streams.lineage import Lineage
from streams.messages import InMessage, OutMessage
from streams.spec import PipelineSpec
from streams.stage import DeadLetter, StageResult, now_ms

__all__ = ["Ingestion", "epoch_ms"]


def epoch_ms(value: Any) -> int:
    """Epoch milliseconds from a decoded timestamp-millis (datetime) or a plain number."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


class Ingestion:
    """Decode, validate and re-encode one pipeline's raw messages.

    ``max_id_bytes`` and ``max_event_time_ahead`` bound the spec's id, key and time
    fields (:class:`~streams.codec.EventDecoder`); an event whose Avro encoding is larger
    than ``max_bytes`` (JSON numbers can grow fourfold as doubles) is ``too_large``.
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

    def process(self, batch: Sequence[InMessage]) -> StageResult:
        result = StageResult()
        ingest_ts = now_ms()
        for msg in batch:
            self.ingest(msg, ingest_ts, result)
        return result

    def ingest(
        self, msg: InMessage, ingest_ts: int, result: StageResult
    ) -> tuple[dict[str, Any], Lineage] | None:
        """One raw message to ``result``: its event, or its dead letter (then None).

        Returns the validated record and its lineage, for a caller that computes features
        in the same pass (:mod:`streams.onepass`).
        """
        try:
            decoded = self.decoder.decode(msg.key, msg.value, now_ms=ingest_ts)
        except DecodeError as exc:
            self._dead(msg, exc, result)
            return None
        record = decoded.record
        event_id = str(record[self.spec.id_field])
        event_ts = decoded.event_ms
        lineage = Lineage(
            event_id=event_id,
            schema=decoded.writer.label,
            source=msg.source,
            pipeline=self.spec.label,
            event_ts=epoch_ms(record[self.spec.time_field]) if event_ts is None else event_ts,
            ingest_ts=ingest_ts,
            raw_ts=msg.timestamp_ms,
        )
        key_field = self.spec.key_field
        key = str(record[key_field]) if key_field else event_id
        value = encode_single_object(self.reader, record)
        if len(value) > self.max_bytes:
            error = DecodeError(
                "too_large",
                f"as {self.reader.label} Avro the event is {len(value)} bytes, over the limit "
                f"of {self.max_bytes} (RIVERLINE_MAX_MESSAGE_BYTES)",
            )
            self._dead(msg, error, result)
            return None
        result.sends.append(
            OutMessage(self.events_topic, key.encode(), value, lineage.to_headers())
        )
        result.ok += 1
        return record, lineage

    def _dead(self, msg: InMessage, exc: DecodeError, result: StageResult) -> None:
        dead = DeadLetter(self.stage, exc.reason, str(exc), self.reader.label)
        result.sends.append(dead.to_message(msg, self.dlq_topic))
        result.dead[exc.reason] += 1
