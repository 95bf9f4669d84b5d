"""Read a Riverline pipeline's predictions without Riverline: aiokafka, fastavro and the
published schema (``schemas/riverline/prediction.avsc``) only.

Riverline writes each prediction in Avro single-object encoding: the two bytes ``C3 01``,
the 8-byte little-endian CRC-64-AVRO fingerprint of the schema's parsing canonical form,
then the Avro binary body. This reader decodes the records whose fingerprint is that of
the schema it was given, skips (and counts) the others, and prints each record as a JSON
line, times as epoch milliseconds. It reads with ``read_committed`` isolation, so in
exactly-once mode it sees only committed predictions.

Each record also carries an ``rl.mac`` header, an HMAC under a key derived from the
deployment's signing key; a consumer holding that key can check it (``riverline tail``
does), this example does not.

Usage::

    python examples/consume_predictions.py --bootstrap localhost:9092 \\
        --topic phishing.predictions --schema schemas/riverline/prediction.avsc -n 10
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER = len(MAGIC) + 8
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MILLISECOND = dt.timedelta(milliseconds=1)


def load_reader(path: Path) -> tuple[bytes, Any]:
    """The schema's single-object fingerprint (8 bytes, as on the wire) and parsed form."""
    schema = json.loads(path.read_text())
    canonical = to_parsing_canonical_form(schema)
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")), fastavro.parse_schema(schema)


def decode(value: bytes, expected: bytes, parsed: Any) -> dict[str, Any] | None:
    """One message's record, or None if it is not single-object Avro of this schema."""
    if len(value) < HEADER or value[:2] != MAGIC or value[2:HEADER] != expected:
        return None
    record: dict[str, Any] = fastavro.schemaless_reader(io.BytesIO(value[HEADER:]), parsed)
    return record


def as_json(record: dict[str, Any]) -> str:
    """A record as one JSON line; fastavro reads timestamp-millis as datetimes."""

    def plain(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return (value - EPOCH) // MILLISECOND  # exact, where float seconds may round
        return value

    return json.dumps({k: plain(v) for k, v in record.items()})


async def consume(args: argparse.Namespace) -> tuple[int, int]:
    """Print the topic's predictions; returns (printed, skipped)."""
    expected, parsed = load_reader(args.schema)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    printed = skipped = 0
    try:
        partitions = sorted(consumer.partitions_for_topic(args.topic) or {0})
        parts = [TopicPartition(args.topic, p) for p in partitions]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=500)
            for messages in batches.values():
                for message in messages:
                    record = decode(message.value or b"", expected, parsed)
                    if record is None:
                        skipped += 1
                        continue
                    print(as_json(record), flush=True)
                    printed += 1
    finally:
        await consumer.stop()
    return printed, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True, help="Kafka host:port")
    parser.add_argument("--topic", required=True, help="PIPELINE.predictions")
    parser.add_argument("--schema", type=Path, required=True, help="prediction.avsc")
    args = parser.parse_args()
    printed, skipped = asyncio.run(consume(args))
    print(f"{printed} predictions, {skipped} other records skipped", file=sys.stderr)


if __name__ == "__main__":
    main()
