"""benchmarks.cpushare: CPU shares of named processes and one thread's run-queue waits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.cpushare import CpuShares

_SPIN = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"
_SLEEP = "import time\ntime.sleep(30)\n"


@pytest.fixture
def spinner_and_sleeper():
    procs = [subprocess.Popen([sys.executable, "-c", code]) for code in (_SPIN, _SLEEP)]
    time.sleep(0.3)  # both started
    yield procs[0].pid, procs[1].pid
    for p in procs:
        p.kill()
        p.wait()


def test_a_busy_process_has_a_large_share_and_a_sleeping_one_none(spinner_and_sleeper) -> None:
    busy, idle = spinner_and_sleeper
    with CpuShares({"busy": busy, "idle": idle, "gone": None}, thread=(busy, busy)) as shares:
        time.sleep(1.0)
    r = shares.result
    assert 0.9 <= r["seconds"] <= 5.0
    assert set(r["processes"]) == {"busy", "idle"}  # no pid, no share
    assert r["processes"]["busy"] > 0.3  # a spinning loop, even on a shared machine
    assert r["processes"]["idle"] < 0.05
    assert 0.0 <= r["machine_idle"] <= 1.0
    if Path(f"/proc/{busy}/task/{busy}/schedstat").exists():
        thread = r["thread"]
        assert thread["ran"] == pytest.approx(r["processes"]["busy"], abs=0.1)
        assert 0.0 <= thread["waited_for_cpu"] <= 1.0


def test_a_process_that_exits_during_the_block_has_no_share() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    with CpuShares({"short": proc.pid}) as shares:
        proc.wait()
    assert "short" not in shares.result["processes"]
