"""Benchmarks behind ``riverline bench``: sections of measurements beside their baselines.

A section is a function ``(BenchOptions) -> dict`` registered in :data:`SECTIONS`. Its
dict holds at least ``title`` and ``rows`` (a list of flat dicts with the same keys,
which the CLI prints as a table); anything else in it goes to the JSON report as is.
:func:`run_bench` runs the sections in order and returns one JSON-ready report::

    {"quick": ..., "python": ..., "platform": ..., "cpus": ...,
     "sections": {"ingest": {"title": ..., "rows": [...], ...}}}

Sections that need Kafka take the cluster from ``options.settings``.

The ``ingest`` section measures :meth:`streams.ingestion.stage.Ingestion.process` (decode,
validate, lineage, re-encode as canonical Avro) over in-memory messages of one pipeline,
per wire format, against a bare ``fastavro.schemaless_reader`` decode of the same events'
Avro bodies in the same run (for JSON, against ``json.loads`` of the same bytes too).
``ratio`` is Riverline's events/s divided by fastavro's: what validation, lineage and
the re-encode cost. Timings are best-of-``repeats``; numbers depend on the machine.

The ``pipeline`` section runs Kafka end to end on one broker (the settings' cluster, or a
:class:`~streams.kafka.broker.LocalBroker` on free ports): N pre-produced events of the
pipeline (default ``pipelines/transactions.toml``), read by five contenders in turn, each
in its own process (:data:`CONTENDERS`; the baselines are :mod:`benchmarks.baselines`, the
last a real worker), then Riverline's latency at a fixed share of its measured maximum
and each baseline's at that same offered load (a fresh process on fresh topics), and
optionally Riverline on 4 partitions with 1 and 2 workers. benchmarks/README.md has the
method; the top-level README.md, Benchmark, the runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import os
import platform
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any, Final

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from fastavro import schemaless_reader

from benchmarks.bench_features import features_section
from benchmarks.cpushare import CpuShares, listening_pid
from benchmarks.stallprobe import StallProbe
from streams.cli.workerproc import WorkerProcess
from streams.errors import RiverlineError
from streams.ingestion.datasets import dataset_rows
from streams.ingestion.stage import Ingestion
from streams.ingestion.transactions import START_MS
from streams.kafka.broker import free_port
from streams.kafka.topics import (
    TopicConfig,
    ensure_topics,
    pipeline_topic_configs,
    shared_topic_configs,
)
from streams.messages import InMessage
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.codec import encode_confluent, encode_single_object
from streams.settings import PRODUCER_BATCH_BYTES, Settings
from streams.spec import PipelineSpec, load_spec

__all__ = [
    "CONTENDERS",
    "SECTIONS",
    "BenchOptions",
    "ingest_section",
    "pipeline_section",
    "run_bench",
    "synthetic_events",
]

#: Wire formats of the ingest section, in report order.
INGEST_FORMATS: Final = ("avro-single-object", "confluent", "json")


#: The contenders of the pipeline section, in report order.
CONTENDERS: Final = ("raw", "empty", "floor", "naive", "riverline")


@dataclass(frozen=True)
class BenchOptions:
    """What every section gets: settings (topics, cluster, paths) and the run's size."""

    settings: Settings
    quick: bool = False
    pipeline: Path | None = None
    """Pipeline spec to ingest (default: ``pipelines/phishing.toml``)."""
    seed: int = 7
    events_override: int | None = None
    """Events of the pipeline section (default 200,000; 5,000 with ``quick``)."""
    partitions: int = 1
    """Partitions of the pipeline section's topics."""
    scaling: bool = False
    """Also run Riverline on 4 partitions with 1 and with 2 workers."""
    contenders: tuple[str, ...] = CONTENDERS
    """Which contenders of the pipeline section run (always in :data:`CONTENDERS` order)."""
    latency_load: float = 0.25
    """Offered load of the latency run, as a share of Riverline's measured events/s."""
    latency_for: float | None = None
    """Seconds of offered load in the latency run (default 30; 3 with ``quick``)."""
    latency_events: int = 20_000
    drain_timeout: float = 1800.0
    progress: Callable[[str], None] | None = None
    progress_every: float = 5.0
    run_tag: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def events(self) -> int:
        return 2_000 if self.quick else 20_000

    @property
    def kafka_events(self) -> int:
        if self.events_override is not None:
            return self.events_override
        return 5_000 if self.quick else 200_000

    @property
    def quiet_probe_seconds(self) -> float:
        """Seconds of :class:`~benchmarks.stallprobe.StallProbe` on the quiet machine."""
        return 1.0 if self.quick else 10.0

    @property
    def latency_seconds(self) -> float:
        if self.latency_for is not None:
            return self.latency_for
        return 3.0 if self.quick else 30.0

    @property
    def namespace(self) -> str:
        """Topic and group prefix of this run, inside the settings' own namespace."""
        return f"{self.settings.namespace}bench{self.run_tag}."

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3


def synthetic_events(schema: SchemaVersion, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` valid records of a flat schema (primitives, enums, nullable unions), seeded.

    Raises RiverlineError for field types it cannot invent values for (arrays, maps,
    nested records): benchmark such a pipeline with recorded events instead.
    """
    rng = random.Random(seed)
    makers = [
        (f["name"], _maker(f["type"], f["name"], schema.label)) for f in schema.schema["fields"]
    ]
    start_ms = 1_700_000_000_000
    return [{name: make(rng, i, start_ms) for name, make in makers} for i in range(n)]


_Maker = Callable[[random.Random, int, int], Any]


def _maker(ftype: Any, name: str, where: str) -> _Maker:
    if isinstance(ftype, list):
        branches = [_maker(b, name, where) for b in ftype if b != "null"]
        nullable = "null" in ftype
        first = branches[0]
        return lambda rng, i, t: None if nullable and i % 10 == 9 else first(rng, i, t)
    if isinstance(ftype, dict):
        logical = ftype.get("logicalType")
        kind = ftype["type"]
        if logical == "timestamp-millis":
            return lambda rng, i, t: t + i * 1000
        if kind == "enum":
            symbols = list(ftype["symbols"])
            return lambda rng, i, t: symbols[i % len(symbols)]
        if isinstance(kind, str) and kind not in ("record", "array", "map", "fixed"):
            return _maker(kind, name, where)
        raise RiverlineError(
            f"{where}: the benchmark cannot invent values for field {name!r} ({kind})"
        )
    simple: dict[str, _Maker] = {
        "string": lambda rng, i, t: f"ev-{i:08d}",
        "double": lambda rng, i, t: rng.random() * 100.0,
        "float": lambda rng, i, t: float(rng.randrange(1000)) / 8.0,
        "int": lambda rng, i, t: rng.randrange(-5, 100),
        "long": lambda rng, i, t: rng.randrange(1 << 40),
        "boolean": lambda rng, i, t: rng.random() < 0.5,
        "bytes": lambda rng, i, t: rng.randbytes(8),
    }
    if ftype not in simple:
        raise RiverlineError(
            f"{where}: the benchmark cannot invent values for field {name!r} ({ftype})"
        )
    return simple[ftype]


def _best_eps(n: int, repeats: int, run: Callable[[], object]) -> float:
    """Events per second of the fastest of ``repeats`` runs over ``n`` events."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return n / best if best > 0 else float("inf")


def _batches(items: Sequence[InMessage], size: int) -> list[Sequence[InMessage]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def ingest_section(options: BenchOptions) -> dict[str, Any]:
    """Ingest events/s per wire format beside a bare fastavro decode of the same events."""
    settings = options.settings
    spec = load_spec(options.pipeline or settings.pipelines_dir / "phishing.toml")
    catalog = SchemaCatalog.load(settings.schemas_dir)
    schema = catalog.latest(spec.subject)
    records = synthetic_events(schema, options.events, options.seed)
    n, repeats = len(records), options.repeats
    batch_size = settings.batch_size
    topics = spec.topics(settings.namespace)
    confluent_id = catalog.confluent_id(schema)

    encoded: dict[str, list[bytes]] = {
        "avro-single-object": [encode_single_object(schema, r) for r in records],
        "json": [json.dumps(r).encode() for r in records],
    }
    if confluent_id is not None:
        encoded["confluent"] = [encode_confluent(confluent_id, schema, r) for r in records]
    bodies = [BytesIO(v[10:]) for v in encoded["avro-single-object"]]
    parsed = schema.parsed

    def fastavro_decode() -> None:
        for body in bodies:
            body.seek(0)
            schemaless_reader(body, parsed, None)

    fastavro_eps = _best_eps(n, repeats, fastavro_decode)
    rows: list[dict[str, Any]] = []
    for fmt in INGEST_FORMATS:
        if fmt not in encoded:
            continue
        values = encoded[fmt]
        messages = [
            InMessage(topics.raw, 0, i, str(r[spec.id_field]).encode(), v, 0)
            for i, (r, v) in enumerate(zip(records, values, strict=True))
        ]
        batches = _batches(messages, batch_size)
        ingestion = Ingestion(
            spec,
            catalog,
            events_topic=topics.events,
            dlq_topic=settings.topic("riverline.dlq"),
            max_bytes=settings.max_message_bytes,
            max_id_bytes=settings.max_id_bytes,
            max_event_time_ahead=settings.max_event_time_ahead,
        )
        ok = sum(r.ok for r in _process_all(ingestion, batches))  # warm-up and a check
        if ok != n:
            raise RiverlineError(
                f"benchmark events of {schema.label} did not all ingest ({ok} of {n} in "
                f"{fmt}); the benchmark's event generator is wrong for this schema"
            )
        riverline_eps = _best_eps(n, repeats, partial(_process_all, ingestion, batches))
        row: dict[str, Any] = {
            "format": fmt,
            "events": n,
            "bytes": round(sum(map(len, values)) / n, 1),
            "riverline_eps": round(riverline_eps),
            "fastavro_eps": round(fastavro_eps),
            "ratio": float(f"{riverline_eps / fastavro_eps:.3g}"),  # 3 significant digits
        }
        if fmt == "json":
            row["json_loads_eps"] = round(_best_eps(n, repeats, partial(_json_loads_all, values)))
        rows.append(row)
    return {
        "title": f"ingest: {spec.name} ({schema.label}), batches of {batch_size}",
        "pipeline": spec.label,
        "schema": schema.label,
        "measures": "Ingestion.process: decode + validate + lineage + re-encode",
        "baseline": "fastavro.schemaless_reader of the same events' Avro bodies (no checks)",
        "columns": {
            "bytes": "mean message size in this format",
            "riverline_eps": "events/s through Ingestion.process",
            "fastavro_eps": "events/s of the bare fastavro decode",
            "ratio": "riverline_eps / fastavro_eps",
            "json_loads_eps": "events/s of json.loads on the same JSON bytes",
        },
        "repeats": repeats,
        "rows": rows,
    }


def _process_all(stage: Ingestion, batches: Iterable[Sequence[InMessage]]) -> list[Any]:
    return [stage.process(b) for b in batches]


def _json_loads_all(values: Iterable[bytes]) -> list[Any]:
    return [json.loads(v) for v in values]


# --------------------------------------------------------------------------- pipeline
#
# The ``pipeline`` section: Kafka in, Kafka out, side by side on one broker. Each
# contender runs in its own process (its peak RSS is its own) and reads the same
# pre-produced raw topic with its own consumer group, writing its own output topics.

_DESCRIBE: Final = {
    "raw": (
        "aiokafka alone, set up as the worker's clients: batched consume of raw, each "
        "message's bytes to the 3 output topics"
    ),
    "empty": (
        "Riverline's agent with empty stages: Faust set up as the worker, Riverline's "
        "micro-batches and record-batch sends, each message's bytes to the 3 output topics"
    ),
    "floor": "Faust alone: 1 empty per-event agent, raw -> events + features + predictions",
    "naive": "1 per-event Faust agent: json.loads, dict features, River predict/learn, json.dumps",
    "riverline": (
        "riverline worker (one-pass, sink process): validate + lineage + Avro, Numba "
        "features, River, Avro out"
    ),
}


def _say(options: BenchOptions, line: str) -> None:
    if options.progress is not None:
        options.progress(line)


@contextlib.contextmanager
def _cluster(options: BenchOptions) -> Iterator[str]:
    """The settings' cluster, or a LocalBroker on free ports for this run (then stopped)."""
    settings = options.settings
    if settings.bootstrap:
        yield settings.bootstrap
        return
    from streams.kafka.broker import LocalBroker, free_port

    with tempfile.TemporaryDirectory(prefix="riverline-bench-") as tmp:
        port, controller = free_port(), free_port()
        while controller == port:
            controller = free_port()
        broker = LocalBroker(
            settings, data_dir=Path(tmp) / "kafka", port=port, controller_port=controller
        )
        broker.up(log=lambda line: _say(options, f"[kafka] {line}"))
        try:
            yield broker.bootstrap
        finally:
            broker.down(log=lambda line: _say(options, f"[kafka] {line}"))


def _spec_with_partitions(source: Path, partitions: int, folder: Path) -> Path:
    text = source.read_text()
    changed = re.sub(r"(?m)^partitions\s*=\s*\d+", f"partitions = {partitions}", text, count=1)
    if changed == text and f"partitions = {partitions}" not in text:
        changed = text.replace("[pipeline]\n", f"[pipeline]\npartitions = {partitions}\n", 1)
    path = folder / source.name
    path.write_text(changed)
    return path


def _bench_events(spec: PipelineSpec, n: int, run_id: str, offset_ms: int) -> list[bytes]:
    """``n`` events of the spec's dataset as JSON, event times shifted by ``offset_ms``."""
    values = []
    for i, (x, y) in enumerate(dataset_rows(spec.dataset or "transactions", n)):
        event: dict[str, Any] = {spec.id_field: f"{run_id}-{i:07d}", **x}
        row_ms = x.get(spec.time_field)
        event[spec.time_field] = offset_ms + (START_MS + i * 1000 if row_ms is None else row_ms)
        if spec.model.target:
            event[spec.model.target] = y
        values.append(json.dumps(event).encode())
    return values


def _keys(spec: PipelineSpec, values: Sequence[bytes]) -> list[bytes]:
    """Message keys of bench events: the spec's key field (else its id), as Riverline keys."""
    field_name = spec.key_field or spec.id_field
    return [str(json.loads(v)[field_name]).encode() for v in values]


async def _produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes],
    keys: Sequence[bytes],
    rate: float | None = None,
) -> None:
    """Send ``values``; at ``rate`` events/s (paced) or as fast as possible.

    Paced, the producer lingers 5 ms as ``riverline produce`` does (and Kafka's Java client
    by default since 4.0). Each event's timestamp is taken when it is handed to the
    producer, so the linger counts in the latency. With no linger every event was a produce
    request of its own: the load generator and the broker then took 35% and 36% of a core
    at ~840 events/s on the benchmark's 2-vCPU machine, against 18% and 20% with it.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5 if rate else 20, max_batch_size=1 << 20
    )
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            if rate:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await producer.send(topic, v, key=k))
            if len(futures) >= 10_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class _Topic:
    """Counts a topic's messages (end offsets) and reads its first and last timestamps."""

    def __init__(self, bootstrap: str, name: str) -> None:
        self.name = name
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def __aenter__(self) -> _Topic:
        await self.consumer.start()
        parts = self.consumer.partitions_for_topic(self.name)
        for _ in range(50):
            if parts:
                break
            await asyncio.sleep(0.1)
            await self.consumer._client.force_metadata_update()
            parts = self.consumer.partitions_for_topic(self.name)
        self.tps = [TopicPartition(self.name, p) for p in sorted(parts or ())]
        self.consumer.assign(self.tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def ends(self) -> dict[int, int]:
        got = await self.consumer.end_offsets(self.tps)
        return {tp.partition: o for tp, o in got.items()}

    async def count(self) -> int:
        return sum((await self.ends()).values())

    async def read(self, start: dict[int, int]) -> list[ConsumerRecord[bytes, bytes]]:
        """Every message from ``start`` (partition -> offset) to the current ends."""
        ends = await self.ends()
        out: list[ConsumerRecord[bytes, bytes]] = []
        for tp in self.tps:
            if ends[tp.partition] > start.get(tp.partition, 0):
                self.consumer.seek(tp, start.get(tp.partition, 0))
        want = sum(ends[p] - start.get(p, 0) for p in ends)
        while len(out) < want:
            got = await self.consumer.getmany(timeout_ms=1000)
            if not got:
                break
            for msgs in got.values():
                out.extend(m for m in msgs if m.offset < ends[m.partition])
        return out

    async def span_ms(self) -> tuple[int, int]:
        """Timestamps of the earliest first and the latest last message over partitions."""
        first: list[int] = []
        last: list[int] = []
        ends = await self.ends()
        for tp in self.tps:
            if ends[tp.partition] == 0:
                continue
            for offset, into in ((0, first), (ends[tp.partition] - 1, last)):
                self.consumer.seek(tp, offset)
                msg = await asyncio.wait_for(self.consumer.getone(tp), 30)
                into.append(msg.timestamp)
        return min(first), max(last)


class _PeakRss:
    """Peak resident memory of a process and its children (a worker's sink), summed.

    Per process: VmHWM where Linux has it, else the largest sampled RSS.
    """

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peaks: dict[int, int] = {}

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            for proc in [self.proc, *self.proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss = proc.memory_info().rss
                    self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), rss)

    @property
    def mib(self) -> float:
        self.sample()
        total = 0
        for pid, sampled in self.peaks.items():
            peak = sampled
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            total += peak
        return round(total / (1 << 20), 1)


async def _drain(
    options: BenchOptions,
    name: str,
    out: _Topic,
    target: int,
    rss: Sequence[_PeakRss],
    alive: Callable[[], str | None],
) -> dict[str, Any]:
    """Wait until ``out`` holds ``target`` messages; events/s between first and last."""
    started = time.monotonic()
    last_say = 0.0
    while True:
        for r in rss:
            r.sample()
        done = await out.count()
        now = time.monotonic()
        if done >= target:
            break
        if now - last_say >= options.progress_every:
            _say(options, f"  {name}: {done:,}/{target:,} out after {now - started:.0f} s")
            last_say = now
        dead = alive()
        if dead is not None:
            raise RiverlineError(f"benchmark contender {name} stopped early: {dead}")
        if now - started > options.drain_timeout:
            raise RiverlineError(
                f"benchmark contender {name}: only {done:,} of {target:,} events out after "
                f"{options.drain_timeout:.0f} s; is the machine overloaded?"
            )
        await asyncio.sleep(0.25)
    first, last = await out.span_ms()
    seconds = max(0.001, (last - first) / 1000)
    return {
        "events": target,
        "events_per_s": round((target - 1) / seconds),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(sum(r.mib for r in rss), 1),
    }


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@contextlib.asynccontextmanager
async def _baseline(
    options: BenchOptions, kind: str, name: str, bootstrap: str, source: str, tmp: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], _Topic, Callable[[], str | None]]]:
    """A baseline process reading ``source`` into topics ``<ns><name>.*``, stopped at exit.

    Yields the process, its last topic and a check that says why it died, if it did.
    """
    prefix = f"{options.namespace}{name}"
    hops = ["predictions"] if kind == "naive" else ["events", "features", "predictions"]
    await _ensure(bootstrap, [TopicConfig(f"{prefix}.{h}", options.partitions) for h in hops])
    args = {
        "bootstrap": bootstrap,
        "source": source,
        "prefix": prefix,
        "batch_size": options.settings.batch_size,
        "fetch_max_wait_ms": options.settings.fetch_max_wait_ms,
        "record_batch_bytes": PRODUCER_BATCH_BYTES,
        "datadir": str(tmp / name),
    }
    log_path = tmp / f"{name}.log"
    proc = _start_baseline(kind, args, log_path, options.settings)

    def alive() -> str | None:
        if proc.poll() is None:
            return None
        return f"exit code {proc.returncode}; last lines of {log_path}:\n{_tail(log_path)}"

    try:
        async with _Topic(bootstrap, f"{prefix}.predictions") as out:
            yield proc, out, alive
    finally:
        await asyncio.to_thread(_stop, proc)


async def _run_baseline(
    options: BenchOptions, kind: str, bootstrap: str, raw_topic: str, n: int, tmp: Path
) -> dict[str, Any]:
    _say(options, f"{kind}: {_DESCRIBE[kind]}")
    async with _baseline(options, kind, kind, bootstrap, raw_topic, tmp) as (proc, out, alive):
        return await _drain(options, kind, out, n, [_PeakRss(proc.pid)], alive)


def _start_baseline(
    kind: str, args: dict[str, Any], log_path: Path, settings: Settings
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.baselines", kind, json.dumps(args)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=settings.child_env(),
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _ensure(bootstrap: str, configs: Sequence[TopicConfig]) -> None:
    await asyncio.to_thread(ensure_topics, bootstrap, configs)


def _riverline_settings(options: BenchOptions, bootstrap: str, home: Path) -> Settings:
    return options.settings.model_copy(
        update={
            "bootstrap": bootstrap,
            "namespace": options.namespace,
            "home": home,
            "cache_dir": options.settings.cache_root,
            "web_port": free_port(),
            "log_level": "warning",
        }
    )


async def _run_riverline(
    options: BenchOptions,
    bootstrap: str,
    spec_path: Path,
    n: int,
    tmp: Path,
    workers: int,
    latency: bool,
    produce: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Run ``workers`` workers until ``n`` predictions are out (then the latency run).

    ``produce``, if given, sends the events once every worker has its partitions, so a
    rebalance (a second worker joining) is not part of the measurement.
    """
    spec = load_spec(spec_path)
    topics = spec.topics(options.namespace)
    _say(options, f"riverline: {_DESCRIBE['riverline']} ({workers} worker(s))")
    procs = [
        WorkerProcess(
            _riverline_settings(options, bootstrap, tmp / f"home{i}"),
            [spec_path],
            tmp / f"worker{i}.log",
        )
        for i in range(workers)
    ]
    try:
        for w in procs:
            w.start()
        for w in procs:
            await asyncio.to_thread(w.wait_ready, options.drain_timeout)
        rss = [_PeakRss(w.proc.pid) for w in procs if w.proc is not None]
        if produce is not None:
            await produce()

        def alive() -> str | None:
            for w in procs:
                if w.proc is not None and w.proc.poll() is not None:
                    return f"a worker exited ({w.proc.returncode}); see {w.log_path}"
            return None

        async with _Topic(bootstrap, topics.predictions) as out:
            result = await _drain(options, "riverline", out, n, rss, alive)
            if latency:
                rate = _offered_rate(options, result)
                shares = _cpu_watch(bootstrap, rss[0].proc.pid)
                probe = StallProbe()
                result["latency"] = await _latency(
                    options,
                    "riverline",
                    bootstrap,
                    spec,
                    topics.raw,
                    out,
                    rate,
                    n * 10_000,
                    (shares, probe),
                )
                result["latency_cpu"] = shares.result
                result["latency_stalls"] = probe.result
                result["peak_rss_mib"] = round(sum(r.mib for r in rss), 1)
        return result
    finally:
        for w in procs:
            await asyncio.to_thread(w.stop)


def _cpu_watch(bootstrap: str, worker_pid: int) -> CpuShares:
    """The worker (its event loop's thread too), its sink, the broker and this process.

    This process is the load generator of the latency run; the measurement ends when
    the last output is out, before this process reads the topics back.
    """
    named: dict[str, int | None] = {"worker": worker_pid}
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(worker_pid).children(recursive=True):
            is_sink = "sink" in " ".join(child.cmdline())
            named["sink" if is_sink else f"worker child {child.pid}"] = child.pid
    port = bootstrap.split(",")[0].rpartition(":")[2]
    named["broker"] = listening_pid(int(port)) if port.isdigit() else None
    named["benchmark (load generator)"] = os.getpid()
    return CpuShares(named, thread=(worker_pid, worker_pid))


def _offered_rate(options: BenchOptions, riverline: dict[str, Any]) -> float:
    """The latency runs' offered events/s: a share of Riverline's measured maximum."""
    return max(1.0, riverline["events_per_s"] * options.latency_load)


def _event_id(msg: ConsumerRecord[bytes, bytes], id_field: str) -> str | None:
    """The event id of a raw or output message: Riverline's header, else the JSON body's."""
    header = dict(msg.headers or ()).get("rl.event_id")
    if header:
        return bytes(header).decode()
    try:
        body = json.loads(msg.value or b"")
    except ValueError:
        return None
    found = body.get(id_field, body.get("event_id")) if isinstance(body, dict) else None
    return None if found is None else str(found)


async def _latency(
    options: BenchOptions,
    who: str,
    bootstrap: str,
    spec: PipelineSpec,
    raw_topic: str,
    out: _Topic,
    rate: float,
    offset_ms: int,
    watches: Sequence[contextlib.AbstractContextManager[Any]] = (),
) -> dict[str, Any]:
    """End-to-end latency at a fixed offered load, the same way for every contender.

    Each event's latency is its first output message's timestamp minus its raw message's
    (both stamped by the producers, as Riverline's ``rl.raw_ts`` header is), joined by
    event id. ``watches`` (CPU shares, the stall probe) measure from the first event offered
    to the last output (not the reading of the topics that follows).
    """
    count = max(100, min(options.latency_events, int(rate * options.latency_seconds)))
    _say(options, f"{who} latency: {count:,} events offered at {rate:,.0f} events/s")
    values = _bench_events(spec, count, f"lat-{who}", offset_ms=offset_ms)
    keys = _keys(spec, values)
    async with _Topic(bootstrap, raw_topic) as source:
        raw_start = await source.ends()
        start = await out.ends()
        with contextlib.ExitStack() as watching:
            for watch in watches:
                watching.enter_context(watch)
            await _produce(bootstrap, raw_topic, values, keys, rate=rate)
            deadline = time.monotonic() + options.drain_timeout
            while sum((await out.ends()).values()) - sum(start.values()) < count:
                if time.monotonic() > deadline:
                    raise RiverlineError(f"{who} latency: not every offered event came out")
                await asyncio.sleep(0.05)
        sent = {
            eid: m.timestamp
            for m in await source.read(raw_start)
            if (eid := _event_id(m, spec.id_field)) is not None
        }
    came: dict[str, int] = {}
    for msg in await out.read(start):
        eid = _event_id(msg, spec.id_field)
        if eid in sent:
            came.setdefault(eid, msg.timestamp)
    latencies = [max(0.0, float(ts - sent[eid])) for eid, ts in came.items()]
    if len(latencies) < count:
        raise RiverlineError(f"{who} latency: {count - len(latencies):,} offered events missing")
    qs = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "offered_per_s": round(rate),
        "load": options.latency_load,
        "events": len(latencies),
        "p50_ms": round(qs[49], 1),
        "p95_ms": round(qs[94], 1),
        "p99_ms": round(qs[98], 1),
        "max_ms": round(max(latencies), 1),
    }


async def _baseline_latency(
    options: BenchOptions,
    kind: str,
    bootstrap: str,
    spec: PipelineSpec,
    rate: float,
    offset_ms: int,
    tmp: Path,
) -> dict[str, Any]:
    """A baseline's latency at Riverline's offered load: a fresh process on fresh topics."""
    name = f"{kind}-lat"
    source = f"{options.namespace}{name}.raw"
    await _ensure(bootstrap, [TopicConfig(source, options.partitions)])
    async with _baseline(options, kind, name, bootstrap, source, tmp) as (_, out, alive):
        # Warm-up: once these come out, the contender holds its partitions and runs.
        warm = _bench_events(spec, 20, f"warm-{kind}", offset_ms=0)
        await _produce(bootstrap, source, warm, _keys(spec, warm))
        await _drain(options, f"{kind} warm-up", out, len(warm), [], alive)
        return await _latency(options, kind, bootstrap, spec, source, out, rate, offset_ms)


async def _pipeline(options: BenchOptions, bootstrap: str) -> dict[str, Any]:
    settings = options.settings
    source = options.pipeline or settings.pipelines_dir / "transactions.toml"
    n = options.kafka_events
    results: dict[str, Any] = {}
    scaling: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="riverline-bench-") as tmp_name:
        tmp = Path(tmp_name)
        spec_path = _spec_with_partitions(source, options.partitions, tmp)
        spec = load_spec(spec_path)
        topics = spec.topics(options.namespace)
        ns_settings = settings.model_copy(update={"namespace": options.namespace})
        await _ensure(
            bootstrap, shared_topic_configs(ns_settings) + pipeline_topic_configs(ns_settings, spec)
        )
        _say(options, f"producing {n:,} {spec.name} events (JSON) to {topics.raw} ...")
        values = _bench_events(spec, n, "bench", offset_ms=0)
        keys = _keys(spec, values)
        _say(options, f"machine quiet: probing its CPUs for {options.quiet_probe_seconds:g} s")
        with StallProbe() as quiet:
            await asyncio.sleep(options.quiet_probe_seconds)
        await _produce(bootstrap, topics.raw, values, keys)
        del values, keys
        running: list[str] = [k for k in CONTENDERS if k in options.contenders]
        for kind in running:
            if kind == "riverline":
                results[kind] = await _run_riverline(
                    options, bootstrap, spec_path, n, tmp, 1, latency=True
                )
            else:
                results[kind] = await _run_baseline(options, kind, bootstrap, topics.raw, n, tmp)
            _say(options, f"  {kind}: {results[kind]['events_per_s']:,} events/s")
        # The baselines' latency at the load Riverline's was measured at, side by side.
        if "latency" in results.get("riverline", {}):
            rate = _offered_rate(options, results["riverline"])
            for kind in [k for k in results if k != "riverline"]:
                results[kind]["latency"] = await _baseline_latency(
                    options, kind, bootstrap, spec, rate, n * 10_000, tmp
                )
        if options.scaling:
            scaling = await _scaling(options, bootstrap, source, tmp)
    rows = [
        {
            "contender": kind,
            "events": r["events"],
            "events_per_s": r["events_per_s"],
            "peak_rss_mib": r["peak_rss_mib"],
            **{f"{q}_ms": r["latency"][f"{q}_ms"] for q in ("p50", "p99") if "latency" in r},
        }
        for kind, r in results.items()
    ]
    ratios: dict[str, float] = {}
    goals: dict[str, Any] = {}
    d = results.get("riverline", {}).get("events_per_s")
    for kind, goal in (("floor", 0.7), ("naive", 1.0), ("raw", None), ("empty", None)):
        if d and kind in results:
            ratio = round(d / results[kind]["events_per_s"], 3)
            ratios[f"riverline/{kind}"] = ratio
            if goal is not None:
                goals[f"riverline >= {goal} x {kind}"] = ratio >= goal
    latency = results.get("riverline", {}).get("latency")
    if latency:
        goals["p99 <= 25 ms"] = latency["p99_ms"] <= 25.0
    # What Riverline adds to a bare client hop (Faust and its own code), and to its own
    # agent with empty stages (the stages' work).
    over = {f"latency_over_{kind}": _latency_over(results, kind) for kind in ("raw", "empty")}
    report: dict[str, Any] = {
        "title": (
            f"pipeline: {spec.name}, {n:,} events, {options.partitions} partition(s), "
            f"batches of up to {settings.batch_size}"
        ),
        "pipeline": spec.label,
        "events": n,
        "partitions": options.partitions,
        "batch_size": settings.batch_size,
        "topology": (
            "riverline one-pass; baselines: raw -> events + features + predictions "
            "in one consumer (naive: raw -> predictions)"
        ),
        "measures": (
            "events/s between the first and the last message on the contender's last topic "
            "(message timestamps); peak RSS of the process(es) doing the work"
        ),
        "contenders": {k: _DESCRIBE[k] for k in results},
        "results": results,
        "ratios": ratios,
        "latency": latency,
        "latency_cpu": results.get("riverline", {}).get("latency_cpu"),
        **over,
        "machine_stalls": {
            "quiet": quiet.result,
            "latency_run": results.get("riverline", {}).get("latency_stalls"),
        },
        "goals": goals,
        "rows": rows,
    }
    if scaling:
        report["scaling"] = scaling
    return report


def _latency_over(results: dict[str, Any], kind: str) -> dict[str, float]:
    """Riverline's p50/p95/p99 minus ``kind``'s at the same load; empty if either is missing."""
    mine = results.get("riverline", {}).get("latency")
    theirs = results.get(kind, {}).get("latency")
    if not mine or not theirs:
        return {}
    return {f"{q}_ms": round(mine[f"{q}_ms"] - theirs[f"{q}_ms"], 1) for q in ("p50", "p95", "p99")}


async def _scaling(
    options: BenchOptions, bootstrap: str, source: Path, tmp: Path
) -> dict[str, Any]:
    """Riverline alone on a 4-partition copy of the pipeline, with 1 and with 2 workers."""
    partitions = 4
    rows = []
    for workers in (1, 2):
        sub = dataclasses.replace(options, run_tag=f"{options.run_tag}s{workers}")
        ns = sub.namespace
        folder = tmp / f"scaling{workers}"
        folder.mkdir()
        spec_path = _spec_with_partitions(source, partitions, folder)
        spec = load_spec(spec_path)
        ns_settings = options.settings.model_copy(update={"namespace": ns})
        await _ensure(
            bootstrap, shared_topic_configs(ns_settings) + pipeline_topic_configs(ns_settings, spec)
        )
        n = options.kafka_events
        _say(options, f"scaling: {n:,} events on {partitions} partitions, {workers} worker(s)")
        values = _bench_events(spec, n, "scale", offset_ms=0)
        keys = _keys(spec, values)
        raw = spec.topics(ns).raw
        r = await _run_riverline(
            sub,
            bootstrap,
            spec_path,
            n,
            folder,
            workers,
            latency=False,
            produce=functools.partial(_produce, bootstrap, raw, values, keys),
        )
        _say(options, f"  {workers} worker(s): {r['events_per_s']:,} events/s")
        rows.append({"partitions": partitions, "workers": workers, **r})
    return {"rows": rows}


def pipeline_section(options: BenchOptions) -> dict[str, Any]:
    """Raw aiokafka, Riverline with empty stages, the Faust floor, a naive pipeline, Riverline."""
    with _cluster(options) as bootstrap:
        return asyncio.run(_pipeline(options, bootstrap))


#: Every section, in the order ``riverline bench`` runs them.
SECTIONS: dict[str, Callable[[BenchOptions], dict[str, Any]]] = {
    "ingest": ingest_section,
    "features": features_section,
    "pipeline": pipeline_section,
}


def run_bench(options: BenchOptions, sections: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the named sections (default: all) and return the report (see the module doc)."""
    names = list(sections) if sections is not None else list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise RiverlineError(
            f"unknown benchmark section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}"
        )
    strangers = [c for c in options.contenders if c not in CONTENDERS]
    if strangers or not options.contenders:
        raise RiverlineError(
            f"unknown benchmark contender(s) {', '.join(strangers) or '(none given)'}; "
            f"known: {', '.join(CONTENDERS)}"
        )
    if not 0.0 < options.latency_load <= 1.0:
        raise RiverlineError(
            f"the latency load is a share of Riverline's measured events/s, more than 0 and at "
            f"most 1 (0.25 is a quarter); got {options.latency_load:g}"
        )
    report: dict[str, Any] = {
        "quick": options.quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sections": {},
    }
    for name in names:
        report["sections"][name] = SECTIONS[name](options)
    return report
