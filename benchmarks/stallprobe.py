"""Whether the machine's CPUs run steadily: one fixed unit of work, timed by its own CPU clock.

A thread's CPU clock (``time.thread_time``) does not advance while the thread waits for a
CPU, for a lock or for I/O, so on a machine whose CPUs are its own the same unit of work
takes about the same CPU time every time it runs. When it takes several times its usual
CPU time, the CPU under the thread was slowed or taken away below the operating system:
a virtual machine's host running something else on that core, a CPU quota on the virtual
machine, a busy hyperthread sibling. No process in the machine can avoid such a stall, and
every process on that CPU pays it.

``riverline bench`` runs a :class:`StallProbe` beside its latency run, and once with the
machine quiet, and reports both (``machine_stalls``). The probe is a
child process at the lowest priority (niceness 19) doing a unit of ~0.5 ms every 10 ms,
about 5% of one core at most; the guest's own scheduler may hold it back, which its CPU
clock does not count.

``python -m benchmarks.stallprobe FILE`` runs the probe until it is terminated, one line of
CPU milliseconds per unit in ``FILE``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

__all__ = ["SLOW", "StallProbe", "summarize"]

#: A unit that took at least this many times the median's CPU time was stalled.
SLOW: Final = 3.0
_UNIT_SECONDS: Final = 0.0005
_EVERY_SECONDS: Final = 0.01


def _work(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def _calibrate() -> int:
    """Iterations of :func:`_work` that take about half a millisecond of CPU here."""
    n = 1_000
    while True:
        start = time.thread_time()
        _work(n)
        took = time.thread_time() - start
        if took >= _UNIT_SECONDS / 4 or n >= 1 << 24:
            return max(1, int(n * _UNIT_SECONDS / max(took, 1e-9)))
        n *= 4


def summarize(units_ms: Sequence[float], seconds: float) -> dict[str, Any]:
    """What the probe saw: its units, their median CPU time and the stalled ones.

    ``stalled_share`` is the share of units that took at least :data:`SLOW` times the
    median; ``lost_share`` is the CPU time those units took beyond the median, as a share
    of all the probe's CPU time (the part of a CPU's time that went missing under it).

    >>> r = summarize([0.5] * 98 + [2.0, 10.0], 1.0)
    >>> (r["units"], r["median_ms"], r["stalled"], r["longest_ms"])
    (100, 0.5, 2, 10.0)
    >>> r["lost_share"]
    0.18
    """
    units = [float(u) for u in units_ms]
    if not units:
        return {"seconds": round(seconds, 1), "units": 0}
    median = statistics.median(units)
    stalled = [u for u in units if u >= SLOW * median]
    return {
        "seconds": round(seconds, 1),
        "units": len(units),
        "median_ms": round(median, 3),
        "stalled": len(stalled),
        "stalled_share": round(len(stalled) / len(units), 4),
        "longest_ms": round(max(units), 1),
        "lost_share": round(sum(u - median for u in stalled) / sum(units), 3),
    }


class StallProbe:
    """Runs the probe over a ``with`` block; :attr:`result` is :func:`summarize`'s dict.

    >>> with StallProbe() as probe:
    ...     time.sleep(0.5)
    >>> probe.result["units"] > 0
    True
    """

    def __init__(self) -> None:
        self.result: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> StallProbe:
        fd, name = tempfile.mkstemp(prefix="riverline-stallprobe-", suffix=".txt")
        os.close(fd)
        self._path = Path(name)
        self._t0 = time.monotonic()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.stallprobe", str(self._path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = time.monotonic() - self._t0
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        units = []
        with contextlib.suppress(OSError):
            for line in self._path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    units.append(float(line))
        self._path.unlink(missing_ok=True)
        self.result = summarize(units, seconds)


def main(argv: Sequence[str]) -> None:
    """Child process: units of work until terminated, their CPU ms to ``argv[0]``."""
    with contextlib.suppress(OSError):
        os.nice(19)
    n = _calibrate()
    with open(argv[0], "w", buffering=1) as out:
        while True:
            start = time.thread_time()
            _work(n)
            out.write(f"{(time.thread_time() - start) * 1000:.3f}\n")
            time.sleep(_EVERY_SECONDS)


if __name__ == "__main__":
    main(sys.argv[1:])
