"""The contenders of the pipeline section, each in its own process: baselines, Riverline.

A baseline (:mod:`benchmarks.baselines`) or Riverline's worker reads the section's raw
topic with its own consumer group and writes its own output topics; :func:`drain` waits
until the last of them holds every event and takes events/s from the first and last
message timestamps, and :class:`PeakRss` the peak memory of the process(es) doing the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import psutil

from benchmarks.cpushare import CpuShares, listening_pid
from benchmarks.kafka_io import Topic, ensure
from benchmarks.latency import measure_latency, offered_rate
from benchmarks.options import BenchOptions, say
from benchmarks.stallprobe import StallProbe
from streams.cli.workerproc import WorkerProcess
from streams.errors import RiverlineError
from streams.kafka.broker import free_port
from streams.kafka.topics import TopicConfig
from streams.settings import PRODUCER_BATCH_BYTES, Settings
from streams.spec import PipelineSpec, load_spec

__all__ = [
    "DESCRIBE",
    "PeakRss",
    "baseline",
    "drain",
    "riverline_settings",
    "run_baseline",
    "run_riverline",
]

#: What each contender runs.
DESCRIBE: Final = {
    "raw": (
        "aiokafka alone, set up as the worker's clients: batched consume of raw, each "
        "message's bytes to the 3 output topics"
    ),
    "empty": (
        "Riverline's agent with empty stages: Faust set up as the worker, Riverline's "
        "micro-batches and record-batch sends, each message's bytes to the 3 output topics"
    ),
    "floor": (
        "Faust alone, its clients set up as the worker's: 1 empty per-event agent, "
        "raw -> events + features + predictions"
    ),
    "naive": (
        "1 per-event Faust agent, its clients set up as the worker's: json.loads, dict "
        "features, River predict/learn, json.dumps"
    ),
    "riverline": (
        "riverline worker (one-pass, sink process): validate + lineage + Avro, Numba "
        "features, River, Avro out"
    ),
}


class PeakRss:
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


async def drain(
    options: BenchOptions,
    name: str,
    out: Topic,
    target: int,
    rss: Sequence[PeakRss],
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
            say(options, f"  {name}: {done:,}/{target:,} out after {now - started:.0f} s")
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
async def baseline(
    options: BenchOptions, kind: str, name: str, bootstrap: str, source: str, tmp: Path
) -> AsyncIterator[tuple[subprocess.Popen[bytes], Topic, Callable[[], str | None]]]:
    """A baseline process reading ``source`` into topics ``<ns><name>.*``, stopped at exit.

    Yields the process, its last topic and a check that says why it died, if it did.
    """
    prefix = f"{options.namespace}{name}"
    hops = ["predictions"] if kind == "naive" else ["events", "features", "predictions"]
    await ensure(bootstrap, [TopicConfig(f"{prefix}.{h}", options.partitions) for h in hops])
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
        async with Topic(bootstrap, f"{prefix}.predictions") as out:
            yield proc, out, alive
    finally:
        await asyncio.to_thread(_stop, proc)


async def run_baseline(
    options: BenchOptions, kind: str, bootstrap: str, raw_topic: str, n: int, tmp: Path
) -> dict[str, Any]:
    say(options, f"{kind}: {DESCRIBE[kind]}")
    async with baseline(options, kind, kind, bootstrap, raw_topic, tmp) as (proc, out, alive):
        return await drain(options, kind, out, n, [PeakRss(proc.pid)], alive)


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


def riverline_settings(options: BenchOptions, bootstrap: str, home: Path) -> Settings:
    """A worker's settings in this run: its namespace and cluster, its own home and web port."""
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


async def run_riverline(
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
    say(options, f"riverline: {DESCRIBE['riverline']} ({workers} worker(s))")
    procs = [
        WorkerProcess(
            riverline_settings(options, bootstrap, tmp / f"home{i}"),
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
        rss = [PeakRss(w.proc.pid) for w in procs if w.proc is not None]
        if produce is not None:
            await produce()

        def alive() -> str | None:
            for w in procs:
                if w.proc is not None and w.proc.poll() is not None:
                    return f"a worker exited ({w.proc.returncode}); see {w.log_path}"
            return None

        async with Topic(bootstrap, topics.predictions) as out:
            result = await drain(options, "riverline", out, n, rss, alive)
            if latency:
                await _riverline_latency(options, bootstrap, spec, out, rss, result)
        return result
    finally:
        for w in procs:
            await asyncio.to_thread(w.stop)


async def _riverline_latency(
    options: BenchOptions,
    bootstrap: str,
    spec: PipelineSpec,
    out: Topic,
    rss: Sequence[PeakRss],
    result: dict[str, Any],
) -> None:
    """Riverline's latency at a share of its measured events/s, with the CPU shares and
    stalls of the machine meanwhile, into ``result``."""
    shares = _cpu_watch(bootstrap, rss[0].proc.pid)
    probe = StallProbe()
    result["latency"] = await measure_latency(
        options,
        "riverline",
        bootstrap,
        spec,
        spec.topics(options.namespace).raw,
        out,
        offered_rate(options, result),
        result["events"] * 10_000,
        (shares, probe),
    )
    result["latency_cpu"] = shares.result
    result["latency_stalls"] = probe.result
    result["peak_rss_mib"] = round(sum(r.mib for r in rss), 1)


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
