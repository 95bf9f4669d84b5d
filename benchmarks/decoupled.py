"""A decoupled pipeline's processes in the benchmark: one learner, serving workers, their gauges.

:class:`Fleet` starts a learner (``riverline worker --role learn``) and serving workers
(``--role serve``), each with its own home as if on its own machine, and reads the
learner's ``/status.json``; :class:`GaugeSampler` samples gauges from the serving workers'
``/metrics`` while a run goes on; :func:`copy_log` fills a fresh learning log with the
records serving workers wrote to another (their MACs made anew for the new topic); and
:func:`time_learner` times a learner over a pre-filled log.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.contenders import PeakRss, riverline_settings
from benchmarks.kafka_io import Topic
from benchmarks.options import BenchOptions, say
from streams.cli.workerproc import WorkerProcess
from streams.errors import RiverlineError
from streams.trust.records import RecordSigner

__all__ = [
    "Fleet",
    "GaugeSampler",
    "copy_log",
    "decoupled_spec",
    "learn_rate",
    "spread",
    "time_learner",
]

#: Seconds between two looks at the learner's status while it is timed.
_STATUS_EVERY: Final = 0.1


def decoupled_spec(spec_path: Path) -> Path:
    """Make the spec at ``spec_path`` (a copy) decoupled: ``[pipeline] mode = "decoupled"``."""
    text = spec_path.read_text()
    text = re.sub(r'(?m)^mode\s*=\s*"[a-z]+"\n', "", text)
    spec_path.write_text(text.replace("[pipeline]\n", '[pipeline]\nmode = "decoupled"\n', 1))
    return spec_path


def spread(values: Sequence[float]) -> dict[str, float] | None:
    """p50, p95 and max of ``values`` (nearest rank); None if there are none.

    >>> spread([3.0, 1.0, 2.0, 10.0])
    {'p50': 2.0, 'p95': 10.0, 'max': 10.0}
    >>> spread([]) is None
    True
    """
    if not values:
        return None
    ranked = sorted(values)

    def rank(q: float) -> float:
        return ranked[max(0, min(len(ranked) - 1, round(q * len(ranked)) - 1))]

    return {"p50": round(rank(0.50), 3), "p95": round(rank(0.95), 3), "max": round(ranked[-1], 3)}


class Fleet:
    """One learner and some serving workers of a decoupled pipeline, stopped at exit."""

    def __init__(
        self, options: BenchOptions, bootstrap: str, spec_path: Path, pipeline: str, folder: Path
    ) -> None:
        self.options = options
        self.bootstrap = bootstrap
        self.spec_path = spec_path
        self.pipeline = pipeline
        self.folder = folder
        self.learner: WorkerProcess | None = None
        self.servers: list[WorkerProcess] = []
        self.learner_rss: list[PeakRss] = []
        self.serving_rss: list[PeakRss] = []

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for worker in self.processes:
            await asyncio.to_thread(worker.stop, 60.0)

    @property
    def processes(self) -> list[WorkerProcess]:
        """The serving workers started, then the learner if it was."""
        return [*self.servers, *([self.learner] if self.learner is not None else [])]

    def _process(self, name: str, role: str) -> WorkerProcess:
        settings = riverline_settings(self.options, self.bootstrap, self.folder / f"home-{name}")
        return WorkerProcess(settings, [self.spec_path], self.folder / f"{name}.log", role=role)

    def start_learner(self) -> WorkerProcess:
        """Start the learner; :meth:`wait_learner` waits until it is active."""
        self.learner = self._process("learner", "learn")
        self.learner.start()
        assert self.learner.proc is not None
        self.learner_rss = [PeakRss(self.learner.proc.pid)]
        return self.learner

    async def wait_learner(self) -> None:
        """Until the learner holds the log and has published its first versions."""
        deadline = time.monotonic() + self.options.drain_timeout
        while True:
            status = await asyncio.to_thread(self.status)
            if status.get("active") and status.get("published", 0) >= 1:
                return
            self.check(deadline, "the learner to become active")
            await asyncio.sleep(0.25)

    async def start_servers(self, count: int) -> None:
        """Start ``count`` serving workers; return when each holds its partitions and serves."""
        self.servers = [self._process(f"serve{i}", "serve") for i in range(count)]
        for worker in self.servers:
            worker.start()
        for worker in self.servers:
            await asyncio.to_thread(worker.wait_ready, self.options.drain_timeout)
        self.serving_rss = [PeakRss(w.proc.pid) for w in self.servers if w.proc is not None]

    def status(self) -> dict[str, Any]:
        """The learner's entry of its ``/status.json``; empty while it does not answer."""
        if self.learner is None:
            return {}
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            document: Any = self.learner.get_json("/status.json", timeout=2.0)
            return dict(document["learners"][self.pipeline])
        return {}

    def alive(self) -> str | None:
        """Why a process of the fleet stopped, if one did."""
        for worker in self.processes:
            if worker.proc is not None and worker.proc.poll() is not None:
                code, log = worker.proc.returncode, worker.log_path
                return f"a {worker.role} worker exited ({code}); see {log}"
        return None

    def check(self, deadline: float, what: str) -> None:
        """Raise if a process of the fleet stopped, or if ``deadline`` passed."""
        dead = self.alive()
        if dead is not None:
            raise RiverlineError(f"benchmark, decoupled: {dead}")
        if time.monotonic() > deadline:
            raise RiverlineError(
                f"benchmark, decoupled: timed out waiting for {what} "
                f"({self.options.drain_timeout:.0f} s); is the machine overloaded?"
            )

    async def backlog(self, log: str) -> int:
        """Records of the learning log ``log`` the learner has not learned yet."""
        async with Topic(self.bootstrap, log) as topic:
            return await self._backlog(topic)

    async def caught_up(self, log: str) -> None:
        """Until the learner has learned the whole learning log ``log``."""
        deadline = time.monotonic() + self.options.drain_timeout
        async with Topic(self.bootstrap, log) as topic:
            while await self._backlog(topic) > 0:
                self.check(deadline, "the learner to learn the whole learning log")
                await asyncio.sleep(0.25)

    async def _backlog(self, log: Topic) -> int:
        end = await log.count()
        status = await asyncio.to_thread(self.status)
        return max(0, end - int(status.get("position", 0)))


class GaugeSampler:
    """Samples gauges from workers' ``/metrics`` in a thread, every ``every`` seconds while
    it is entered (from ``every`` seconds in).

    ``values`` holds every sample of each named gauge (every label set, every worker).
    """

    def __init__(
        self, workers: Sequence[WorkerProcess], names: Sequence[str], every: float = 1.0
    ) -> None:
        self.urls = [f"{w.url}/metrics" for w in workers]
        self.values: dict[str, list[float]] = {name: [] for name in names}
        self.scrapes = 0
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gauge-sampler", daemon=True)

    def __enter__(self) -> GaugeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        # The first look one interval in: a serving worker swaps in the newest version
        # before its next batch, so an idle one still names the version it last served.
        while not self._stop.wait(self.every):
            for url in self.urls:
                with contextlib.suppress(OSError, ValueError):
                    self._scrape(url)

    def _scrape(self, url: str) -> None:
        with urllib.request.urlopen(url, timeout=5.0) as resp:
            text = resp.read().decode()
        self.scrapes += 1
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in self.values:
                    self.values[sample.name].append(float(sample.value))


async def copy_log(bootstrap: str, source: str, target: str, signer: RecordSigner) -> int:
    """Copy every record of the learning log ``source`` to ``target``; returns how many.

    Values, keys and headers stay as the serving workers wrote them; only the MAC is made
    anew, since it covers the topic's name.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await producer.start()
    copied = 0
    try:
        async with Topic(bootstrap, source) as log:
            async for batch in log.batches():
                futures = []
                for m in batch:
                    headers = signer.sign(target, m.key, m.value, list(m.headers or ()))
                    futures.append(await producer.send(target, m.value, key=m.key, headers=headers))
                await asyncio.gather(*futures)
                copied += len(batch)
    finally:
        await producer.stop()
    return copied


async def time_learner(options: BenchOptions, fleet: Fleet, records: int) -> dict[str, Any]:
    """Start the fleet's learner on a pre-filled log of ``records`` and time it to the end.

    The learner's ``/status.json`` is read every 0.1 s (it answers between two batches, so
    each look says how far it had learned then); :func:`learn_rate` makes records/s of them.
    """
    fleet.start_learner()
    deadline = time.monotonic() + options.drain_timeout
    looks: list[tuple[float, int]] = []  # (when, position) while the learner answers
    status: dict[str, Any] = {}
    last_say = time.monotonic()
    while int(status.get("position", 0)) < records:
        fleet.check(deadline, f"the learner to learn {records:,} records")
        await asyncio.sleep(_STATUS_EVERY)
        status = await asyncio.to_thread(fleet.status)
        if status:
            looks.append((time.monotonic(), int(status["position"])))
        if time.monotonic() - last_say >= options.progress_every:
            say(options, f"  learner: {int(status.get('position', 0)):,}/{records:,} learned")
            last_say = time.monotonic()
    return {**learn_rate(looks, records), **_learned(status, records, fleet.learner_rss)}


def learn_rate(looks: Sequence[tuple[float, int]], records: int) -> dict[str, Any]:
    """Records/s of a learner from its ``looks`` ((seconds, log position) pairs).

    The clock runs from the first look past the log's start (its fresh versions published,
    learning under way) to the first at the end (``records``); the records read from the
    log in between, over that time, is the rate. A log learned whole between two looks is
    timed from the look before (a lower bound).

    >>> learn_rate([(0.0, 0), (1.0, 100), (2.0, 300), (3.0, 500)], 500)
    {'records_per_s': 200, 'seconds': 2.0, 'timed_records': 400}
    >>> learn_rate([(0.0, 0), (0.5, 500)], 500)
    {'records_per_s': 1000, 'seconds': 0.5, 'timed_records': 500}
    """
    started = next(i for i, (_, position) in enumerate(looks) if position > 0)
    if looks[started][1] >= records:
        if started == 0:
            raise RiverlineError(
                f"benchmark, decoupled: the learner learned all {records:,} records before its "
                "status first answered, so it could not be timed; give it more (--events)."
            )
        started -= 1  # learned whole between two looks: from the look before
    (t0, p0), (t1, p1) = looks[started], looks[-1]
    seconds = max(0.001, t1 - t0)
    return {
        "records_per_s": round((p1 - p0) / seconds),
        "seconds": round(seconds, 2),
        "timed_records": p1 - p0,
    }


def _learned(status: dict[str, Any], records: int, rss: Sequence[PeakRss]) -> dict[str, Any]:
    return {
        "records": records,
        "learned": int(status.get("learned", 0)),
        "repeats": int(status.get("repeats", 0)),
        "position": int(status.get("position", 0)),
        "peak_rss_mib": round(sum(r.mib for r in rss), 1),
    }
