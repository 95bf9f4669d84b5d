"""Backpressure: a producer bursts at 10x the pipeline's measured throughput; the worker's
RSS stays bounded (peak reported, sampled with psutil), nothing is lost, lag drains.

The burst lasts ``RIVERLINE_BURST_SECONDS`` (3 s in ``make test``, whose machine is
shared; ``make chaos`` runs the issue's 60 s).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from faultkit import Producer, make_events, make_rig, produce_all, verify

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

BURST_SECONDS = float(os.environ.get("RIVERLINE_BURST_SECONDS", "3"))
WARM_UP = 2000
#: The worker may grow by at most this much over its RSS before the burst.
RSS_HEADROOM = 400 * 2**20


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.1)


def test_a_burst_at_ten_times_throughput_keeps_memory_bounded(
    settings_factory: Any, tmp_path: Path, record_property: Any
) -> None:
    rig = make_rig(settings_factory, tmp_path, checkpoint_interval=2.0)
    worker = rig.worker
    worker.start()
    sampler: RssSampler | None = None
    try:
        worker.wait_ready()
        # Throughput: how fast the worker works through a backlog.
        all_events = make_events(WARM_UP, 500, seed=3)
        produce_all(rig.settings, rig.raw, all_events[: WARM_UP // 4])
        rig.wait_for(lambda: rig.processed() >= WARM_UP // 4, "the first events")
        t0, n0 = time.monotonic(), rig.processed()
        produce_all(rig.settings, rig.raw, all_events[WARM_UP // 4 :])
        rig.wait_for(lambda: rig.processed() >= WARM_UP, "the warm-up events")
        throughput = (WARM_UP - n0) / (time.monotonic() - t0)
        assert worker.proc is not None
        before = psutil.Process(worker.proc.pid).memory_info().rss
        sampler = RssSampler(worker.proc.pid)
        sampler.start()

        rate = 10 * throughput
        burst = make_events(WARM_UP + int(rate * BURST_SECONDS), 500, seed=3)[WARM_UP:]
        producer = Producer(rig.settings, rig.raw, burst, rate=rate)
        started = time.monotonic()
        producer.start()
        producer.join(timeout=BURST_SECONDS * 5 + 60)
        assert producer.error is None, producer.error
        produced_in = time.monotonic() - started
        lag_after_burst = WARM_UP + len(burst) - rig.processed()
        rig.wait_drained(WARM_UP + len(burst), timeout=600)
        drained_in = time.monotonic() - started
    finally:
        if sampler is not None:
            sampler.stopped.set()
        code = worker.stop()
    assert code == 0
    verdict = verify(rig, all_events + burst)
    peak = sampler.peak if sampler is not None else 0
    record_property("backpressure_peak_rss_mib", round(peak / 2**20, 1))
    print(
        f"\nthroughput {throughput:.0f} events/s; burst {len(burst)} events at {rate:.0f}/s "
        f"in {produced_in:.1f} s; lag after the burst {lag_after_burst}; drained "
        f"{drained_in:.1f} s after the burst began; worker RSS {before / 2**20:.0f} MiB "
        f"before, peak {peak / 2**20:.0f} MiB\n{verdict.summary()}"
    )
    assert lag_after_burst > 0, "the burst did not outrun the worker"
    assert peak - before < RSS_HEADROOM, f"RSS grew {(peak - before) / 2**20:.0f} MiB"
    assert verdict.lost == []
    assert verdict.gaps == {}
    assert verdict.unaccounted_raw == []
    assert verdict.features_differ == []
