"""send_all writes record batches where aiokafka's send would have put each message."""

from __future__ import annotations

import asyncio
import secrets

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import murmur2

from agents.internals import send_all
from streams.kafka.topics import TopicConfig, ensure_topics
from streams.messages import OutMessage
from streams.trust.records import RecordSigner


async def _read(bootstrap: str, topic: str, n: int) -> list[tuple[int, bytes, bytes, list]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    got: list[tuple[int, bytes, bytes, list]] = []
    try:
        while len(got) < n:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            for records in batch.values():
                got += [(r.partition, r.key, r.value, list(r.headers)) for r in records]
    finally:
        await consumer.stop()
    return got


def test_keys_go_to_murmur2_partitions_in_order_over_several_batches(kafka_bootstrap: str) -> None:
    name = f"t{secrets.token_hex(4)}"
    keyed, single = f"{name}.keyed", f"{name}.single"
    ensure_topics(kafka_bootstrap, [TopicConfig(keyed, 4), TopicConfig(single, 1)])
    # 1,500 messages of 1 KiB: more than one 256 KiB record batch per partition
    sends = [
        OutMessage(
            keyed if i % 3 else single,
            f"card-{i % 37}".encode(),
            i.to_bytes(4, "big") + b"x" * 1020,
            (("rl.event_id", f"e{i}".encode()),),
        )
        for i in range(1500)
    ]

    signer = RecordSigner(b"key")

    async def main() -> None:
        app = faust.App(f"{name}-app", broker=f"kafka://{kafka_bootstrap}", autodiscover=False)
        await app.producer.start()
        try:
            await send_all(app, sends, signer)
        finally:
            await app.producer.stop()

    asyncio.run(main())
    expected = {
        keyed: [m for m in sends if m.topic == keyed],
        single: [m for m in sends if m.topic == single],
    }
    for topic, sent in expected.items():
        got = asyncio.run(_read(kafka_bootstrap, topic, len(sent)))
        assert len(got) == len(sent)
        partitions = 4 if topic == keyed else 1
        for partition, key, value, headers in got:
            assert partition == (murmur2(key) & 0x7FFFFFFF) % partitions  # the Java client's
            event_id = ("rl.event_id", f"e{int.from_bytes(value[:4], 'big')}".encode())
            assert [name for name, _ in headers] == ["rl.event_id", "rl.mac"]
            assert headers[0] == event_id
            assert signer.verify(topic, key, value, headers)
        for p in range(partitions):
            order = [int.from_bytes(v[:4], "big") for q, _, v, _ in got if q == p]
            assert order == sorted(order)  # each partition in send order
        assert sorted(v for _, _, v, _ in got) == sorted(m.value for m in sent)
