"""The benchmark's baselines, each run as its own process by ``riverline bench``.

``python -m benchmarks.baselines KIND ARGS_JSON`` runs until SIGTERM. ``ARGS_JSON`` holds
``bootstrap``, ``source`` (the pre-produced raw topic), ``prefix`` (this baseline's topics
are ``<prefix>.events``, ``<prefix>.features``, ``<prefix>.predictions``, created by the
benchmark), ``batch_size``, ``fetch_max_wait_ms``, ``record_batch_bytes`` and ``datadir``.
The kinds:

``raw``
    aiokafka alone: one consumer of the raw topic producing each message's bytes to the
    three output topics (events, features, predictions), as Riverline's one-pass topology
    does, in batches; each batch's sends are acknowledged before the next poll, and the
    offsets are committed at most once a second, after the acks of everything before
    them (at-least-once, as a careful client would do it). Set up as the worker's own
    clients are: fetches wait at most ``fetch_max_wait_ms`` at the broker (the worker's
    ``RIVERLINE_FETCH_MAX_WAIT``), the producer does not linger and writes record batches
    of up to ``record_batch_bytes``. Its latency is then a bare client hop's on the same
    machine.
``empty``
    Riverline's agent with empty stages: Faust with the worker's consumer (its fetch wait,
    Riverline's hand-over) and producer (record batches of ``record_batch_bytes``), and
    Riverline's batch loop (``agents.io.run_stage``: micro-batches of what is waiting, up to
    ``batch_size``, their sends as record batches with their acks awaited), forwarding each
    raw message's bytes to the three topics. No validation, lineage, features, models,
    checkpoints or sink, and no commits. What Faust and Riverline's batching cost with no
    stage work: Riverline's latency above this one is its stages'.
``floor``
    Faust alone: one empty agent on the raw topic forwarding each event to the same three
    topics. What the framework costs for Riverline's topology, with no work done.
``naive``
    What tutorials do: one per-event Faust agent, raw -> predictions, with ``json.loads``,
    per-card features in Python dicts, River ``predict_proba_one``/``learn_one`` and
    ``json.dumps``. No validation, no lineage, no checkpoints, no dead letters.

Every Faust baseline gets the worker's client set-up, so the comparison is of the work
done and not of the tuning: fetches wait at most ``fetch_max_wait_ms`` at the broker, the
producer writes record batches of up to ``record_batch_bytes`` without lingering (Faust's
default, as the worker), and the libraries log at warnings and up (:data:`_LOGGING`).
What the floor and the naive pipeline do not get is Riverline's own code: the hand-over
consumer, ``RawTopic`` and the batch loop (``empty`` has those).
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.messages import InMessage, OutMessage
from streams.pipeline.stage import StageResult

__all__ = ["CardHistory", "Forward", "faust_app", "main", "naive_features"]

HOPS = ("events", "features", "predictions")
#: Warnings and up from the libraries, named, as the worker logs them. Not
#: streams.observability.logs.logging_config: it takes a Settings, whose imports
#: (pydantic) would count in the floor's and the naive pipeline's peak RSS. Faust's worker
#: sets the root logger to DEBUG (for its spinner) and filters in the handler: aiokafka then
#: builds a debug record per request, ~4% of an empty agent's wall time at a quarter load (py-spy).
_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "root": {"level": "WARNING", "handlers": ["console"]},
    "loggers": {name: {"level": "WARNING"} for name in ("faust", "mode", "aiokafka", "kafka")},
}
_COMMIT_EVERY_S = 1.0
_WINDOW_MS = 300_000
_HALF_LIFE_MS = 14_400_000


@dataclass
class CardHistory:
    """What the naive pipeline keeps per card, the way a tutorial would: plain Python."""

    times: deque[int] = field(default_factory=deque)
    amounts: deque[float] = field(default_factory=deque)
    ewm: float = 0.0
    last_ms: int | None = None
    merchants: Counter[str] = field(default_factory=Counter)
    seen: int = 0


def naive_features(history: CardHistory, event: dict[str, Any]) -> dict[str, float]:
    """The transactions model's inputs, computed per event from a card's history.

    >>> h = CardHistory()
    >>> e = {"event_time": 0, "amount": 10.0, "card_limit": 100.0, "merchant": "m1"}
    >>> naive_features(h, e)["amount_to_limit"], naive_features(h, e)["txn_count_5m"]
    (0.1, 2.0)
    """
    t = int(event["event_time"])
    amount = float(event["amount"])
    while history.times and history.times[0] <= t - _WINDOW_MS:
        history.times.popleft()
        history.amounts.popleft()
    history.times.append(t)
    history.amounts.append(amount)
    if history.last_ms is None:
        history.ewm = amount
    else:
        alpha = 1.0 - math.pow(0.5, max(0, t - history.last_ms) / _HALF_LIFE_MS)
        history.ewm += alpha * (amount - history.ewm)
    history.last_ms = t
    history.merchants[str(event["merchant"])] += 1
    history.seen += 1
    total = sum(history.amounts)
    limit = float(event["card_limit"])
    return {
        "amount": amount,
        "card_limit": limit,
        "txn_count_5m": float(len(history.times)),
        "amount_sum_5m": total,
        "amount_mean_5m": total / len(history.times),
        "amount_ewm": history.ewm,
        "amount_to_limit": amount / limit if limit else 0.0,
        "merchant_share": history.merchants[str(event["merchant"])] / history.seen,
    }


async def _run_raw(args: dict[str, Any]) -> None:
    bootstrap, batch = args["bootstrap"], int(args["batch_size"])
    outputs = [f"{args['prefix']}.{h}" for h in HOPS]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=0, max_batch_size=int(args["record_batch_bytes"])
    )
    consumer = AIOKafkaConsumer(
        args["source"],
        bootstrap_servers=bootstrap,
        group_id=f"{args['prefix']}.raw",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
        fetch_max_wait_ms=int(args["fetch_max_wait_ms"]),
    )
    await producer.start()
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    committed = time.monotonic()
    uncommitted = False
    try:
        while not stop.is_set():
            polled = await consumer.getmany(timeout_ms=100, max_records=batch)
            futures = [
                await producer.send(dst, m.value, key=m.key)
                for msgs in polled.values()
                for m in msgs
                for dst in outputs
            ]
            if futures:
                await asyncio.gather(*futures)
                uncommitted = True
            if uncommitted and time.monotonic() - committed >= _COMMIT_EVERY_S:
                await consumer.commit()  # positions past messages whose sends are acked
                committed, uncommitted = time.monotonic(), False
        if uncommitted:
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def _faust_app(args: dict[str, Any], name: str) -> faust.App:
    """A Faust app for one baseline, its clients set up as the worker's (agents/app.py)."""
    # Imported here: the raw baseline, which has no Faust app, does not load it.
    from agents.internals import use_fetch_max_wait

    use_fetch_max_wait(int(args["fetch_max_wait_ms"]))
    return faust.App(
        f"{args['prefix']}.{name}",
        broker=";".join(f"kafka://{h}" for h in str(args["bootstrap"]).split(",")),
        value_serializer="raw",
        key_serializer="raw",
        topic_allow_declare=False,
        topic_disable_leader=True,
        store="memory://",
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        datadir=str(args["datadir"]),
        web_enabled=False,
        autodiscover=False,
        producer_max_batch_size=int(args["record_batch_bytes"]),
    )


@dataclass(frozen=True)
class Forward:
    """The empty stage: each raw message's bytes and headers, as they came, to each topic.

    >>> m = InMessage("t.raw", 0, 5, b"k", b"{}", 0, (("h", b"1"),))
    >>> r = Forward(("t.events", "t.predictions")).process([m])
    >>> [(o.topic, o.value, o.headers) for o in r.sends], r.ok
    ([('t.events', b'{}', [('h', b'1')]), ('t.predictions', b'{}', [('h', b'1')])], 1)
    """

    topics: tuple[str, ...]
    stage: str = "forward"

    def process(self, batch: list[InMessage]) -> StageResult:
        result = StageResult(ok=len(batch))
        for msg in batch:
            headers = list(msg.headers)
            result.sends += [OutMessage(t, msg.key, msg.value or b"", headers) for t in self.topics]
        return result


def _empty_app(args: dict[str, Any]) -> faust.App:
    # Imported here: they bring in Riverline's settings (pydantic) and metrics, which would
    # count in the other baselines' peak RSS.
    from agents.internals import RawTopic, use_handover_consumer
    from agents.io import run_stage
    from streams.observability.metrics import WorkerMetrics
    from streams.trust.records import RecordSigner

    app = _faust_app(args, "empty")
    use_handover_consumer(app)
    stage = Forward(tuple(f"{args['prefix']}.{h}" for h in HOPS))
    metrics = WorkerMetrics()
    batch = int(args["batch_size"])
    # Signed as the worker signs its outputs, so the path is the worker's own.
    signer = RecordSigner(b"riverline-bench")

    async def forward(stream: faust.StreamT) -> Any:
        async for _ in run_stage(app, stream, stage, "empty", metrics, batch, signer=signer):
            pass

    # acks=False, as the worker's one-pass agent: drained batches need a topic Faust does
    # not commit (agents.io.drained); this baseline commits nothing.
    source = RawTopic(app, topics=[args["source"]], acks=False)
    app.agent(source, name="forward", concurrency=1)(forward)
    return app


def _floor_app(args: dict[str, Any]) -> faust.App:
    app = _faust_app(args, "floor")
    outputs = [app.topic(f"{args['prefix']}.{h}") for h in HOPS]

    async def forward(stream: faust.StreamT) -> Any:
        async for event in stream.events():
            for out in outputs:
                await out.send(key=event.message.key, value=event.message.value)

    app.agent(app.topic(args["source"]), name="forward", concurrency=1)(forward)
    return app


def _naive_app(args: dict[str, Any]) -> faust.App:
    from river import linear_model, preprocessing

    app = _faust_app(args, "naive")
    out = app.topic(f"{args['prefix']}.predictions")
    cards: defaultdict[str, CardHistory] = defaultdict(CardHistory)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()

    async def predict(stream: faust.StreamT) -> Any:
        async for event in stream.events():
            e = json.loads(event.message.value)
            x = naive_features(cards[str(e["card_id"])], e)
            proba = model.predict_proba_one(x).get(True, 0.0)
            y = e.get("is_fraud")
            if y is not None:
                model.learn_one(x, bool(y))
            body = {"event_id": e["event_id"], "proba": proba, "features": x}
            await out.send(key=event.message.key, value=json.dumps(body).encode())

    app.agent(app.topic(args["source"]), name="predict", concurrency=1)(predict)
    return app


def faust_app(kind: str, args: dict[str, Any]) -> faust.App:
    """The Faust app of baseline ``kind`` (``empty``, ``floor`` or ``naive``), not started."""
    return {"empty": _empty_app, "floor": _floor_app, "naive": _naive_app}[kind](args)


def main(argv: list[str]) -> None:
    """Entry point: ``python -m benchmarks.baselines raw|empty|floor|naive ARGS_JSON``."""
    kind, args = argv[0], json.loads(argv[1])
    if kind == "raw":
        asyncio.run(_run_raw(args))
        return
    app = faust_app(kind, args)
    worker = faust.Worker(app, loglevel="WARNING", logging_config=_LOGGING, quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
