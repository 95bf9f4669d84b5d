"""A worker as a child process: started, waited for, stopped (demo, tests, benchmark)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from streams.errors import RiverlineError
from streams.settings import Settings

__all__ = ["WorkerProcess"]


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class WorkerProcess:
    """``riverline worker`` in a subprocess with its log in a file."""

    def __init__(
        self,
        settings: Settings,
        pipelines: Sequence[Path],
        log_path: Path,
        role: str = "all",
    ) -> None:
        """``role``: what the worker runs (``riverline worker --role``)."""
        self.settings = settings
        self.role = role
        self.pipelines = list(pipelines)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.web_host}:{self.settings.web_port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "streams", "worker", "--role", self.role]
        for p in self.pipelines:
            cmd += ["--pipeline", str(p)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.settings.child_env()
            )

    def get_json(self, path: str, timeout: float = 2.0) -> dict[str, object]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read() or b"{}"))

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the worker has its partitions; raise with its log tail if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RiverlineError(
                    f"the worker exited with code {self.proc.returncode} before it was ready. "
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                if self.get_json("/ready").get("ready"):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise RiverlineError(
            f"the worker was not ready after {timeout:.0f} s. "
            f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def dump(self, settle: float = 1.0) -> None:
        """Ask a running worker to log what it waits on (SIGUSR1), for a stuck test."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(settle)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
