"""Watching the command lines of every process while something runs (Linux ``/proc``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

PROC = Path("/proc")


class CmdlineSampler(threading.Thread):
    """Reads every process's command line until stopped; keeps each distinct one.

    ``seen`` maps each command line to whether its process belongs to the run under test:
    its environment holds ``marker`` (``NAME=value``). Other people's processes run on the
    machine too; a check can then look for a generic pattern only in the run's own.
    """

    def __init__(self, marker: bytes, interval: float = 0.002) -> None:
        super().__init__(name="cmdline-sampler", daemon=True)
        self.marker = marker
        self.interval = interval
        self.seen: dict[bytes, bool] = {}
        self.rounds = 0
        self._known: set[tuple[str, bytes]] = set()
        self._stop_sampling = threading.Event()

    def run(self) -> None:
        own = str(os.getpid())
        while not self._stop_sampling.is_set():
            for entry in os.scandir(PROC):
                if not entry.name.isdigit() or entry.name == own:
                    continue
                try:
                    cmdline = Path(entry.path, "cmdline").read_bytes()
                    if cmdline and (entry.name, cmdline) not in self._known:
                        self._known.add((entry.name, cmdline))
                        environ = Path(entry.path, "environ").read_bytes()
                        ours = self.marker in environ.split(b"\0")
                        self.seen[cmdline] = self.seen.get(cmdline, False) or ours
                except OSError:  # gone between listing and reading
                    continue
            self.rounds += 1
            self._stop_sampling.wait(self.interval)

    def stop(self) -> None:
        self._stop_sampling.set()
        self.join()

    def __enter__(self) -> CmdlineSampler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
