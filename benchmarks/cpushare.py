"""Where the CPU went while something was measured: each process's share, one thread's waits.

``riverline bench`` wraps its latency run in :class:`CpuShares`, so a tail that comes from
a full machine (the broker, the load generator and the worker sharing a few cores) shows
in the report next to the latency itself. Process CPU comes from psutil; a thread's time
on a CPU and its time waiting for one (runnable, not running) from
``/proc/<pid>/task/<tid>/schedstat`` (Linux; left out elsewhere).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psutil

__all__ = ["CpuShares", "listening_pid"]


def _schedstat(pid: int, tid: int) -> tuple[int, int] | None:
    """Nanoseconds a thread has run and has waited runnable for a CPU, if Linux says."""
    try:
        ran, waited, _slices = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        return int(ran), int(waited)
    except (OSError, ValueError):
        return None


def _cpu_seconds(proc: psutil.Process | None) -> float | None:
    if proc is None:
        return None
    try:
        times = proc.cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def _machine() -> tuple[float, float]:
    """Idle and total CPU seconds of the machine, all CPUs together."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return idle, sum(t)


class CpuShares:
    """CPU used by named processes, as shares of one core, over a ``with`` block.

    ``thread`` is a ``(pid, tid)`` whose run-queue waits are reported too (on Linux), e.g.
    the thread running a worker's event loop (its tid is its pid).

    >>> with CpuShares({"me": None}) as shares:
    ...     pass
    >>> sorted(shares.result)
    ['cores', 'machine_idle', 'processes', 'seconds']
    """

    def __init__(
        self, processes: Mapping[str, int | None], thread: tuple[int, int] | None = None
    ) -> None:
        self._procs: dict[str, psutil.Process | None] = {}
        for name, pid in processes.items():
            proc = None
            if pid is not None:
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(pid)
            self._procs[name] = proc
        self._thread = thread
        self.result: dict[str, Any] = {}

    def __enter__(self) -> CpuShares:
        self._t0 = time.monotonic()
        self._cpu0 = {name: _cpu_seconds(p) for name, p in self._procs.items()}
        self._thread0 = _schedstat(*self._thread) if self._thread else None
        self._machine0 = _machine()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = max(time.monotonic() - self._t0, 1e-9)
        shares = {}
        for name, proc in self._procs.items():
            before, after = self._cpu0[name], _cpu_seconds(proc)
            if before is not None and after is not None:
                shares[name] = round((after - before) / seconds, 3)
        idle0, total0 = self._machine0
        idle1, total1 = _machine()
        self.result = {
            "seconds": round(seconds, 1),
            "cores": psutil.cpu_count() or 1,
            # Of all the machine's CPU time in the block, the share no process used.
            "machine_idle": round((idle1 - idle0) / max(total1 - total0, 1e-9), 3),
            "processes": shares,
        }
        after_thread = _schedstat(*self._thread) if self._thread else None
        if self._thread0 is not None and after_thread is not None:
            ran, waited = (b - a for a, b in zip(self._thread0, after_thread, strict=True))
            self.result["thread"] = {
                "ran": round(ran / 1e9 / seconds, 3),
                "waited_for_cpu": round(waited / 1e9 / seconds, 3),
            }


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (a broker), if this user may see it."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    return None
