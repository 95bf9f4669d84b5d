"""benchmarks.stallprobe: a fixed unit of work timed by its own CPU clock."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from benchmarks.stallprobe import SLOW, StallProbe, summarize


def test_summary_counts_units_of_several_times_the_median_as_stalled() -> None:
    units = [1.0] * 95 + [SLOW * 1.0, 2.9, 8.0, 20.0, 0.9]
    r = summarize(units, 2.0)
    assert r["units"] == 100
    assert r["median_ms"] == 1.0
    assert r["stalled"] == 3  # 3.0, 8.0 and 20.0; 2.9 is under SLOW x the median
    assert r["stalled_share"] == 0.03
    assert r["longest_ms"] == 20.0
    assert r["lost_share"] == round((2.0 + 7.0 + 19.0) / sum(units), 3)


def test_a_steady_probe_has_nothing_stalled_and_no_units_no_numbers() -> None:
    assert summarize([0.5] * 50, 1.0)["stalled"] == 0
    assert summarize([0.5] * 50, 1.0)["lost_share"] == 0.0
    assert summarize([], 1.0) == {"seconds": 1.0, "units": 0}


def test_the_probe_runs_a_low_priority_child_while_the_block_runs() -> None:
    with StallProbe() as probe:
        time.sleep(0.3)
        child = probe._proc
        assert child is not None
        assert child.poll() is None
        assert psutil.Process(child.pid).nice() == 19
        time.sleep(0.7)
    assert child.poll() is not None  # stopped with the block
    r = probe.result
    assert 0.9 <= r["seconds"] <= 5.0
    # A unit every 10 ms plus its own ~0.5 ms: tens of units in a second.
    assert 20 <= r["units"] <= 110
    assert 0.05 <= r["median_ms"] <= 5.0
    assert 0 <= r["stalled"] <= r["units"]


def test_waiting_for_a_cpu_is_not_counted_as_a_stall() -> None:
    """Two spinning processes take both CPUs from the probe (niceness 19): its units wait
    longer for a CPU, but their CPU time stays the same, so few count as stalled."""
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"
    spinners = [
        subprocess.Popen([sys.executable, "-c", spin]) for _ in range(psutil.cpu_count() or 2)
    ]
    try:
        with StallProbe() as probe:
            time.sleep(2.0)
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    r = probe.result
    if r["units"] < 10:
        pytest.skip(f"the probe got only {r['units']} units beside the spinners")
    assert r["stalled_share"] < 0.25
