"""The broker's processes and files: Java, pid files, signals, ports, locks, log tails."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil

from streams.errors import KafkaSetupError

__all__ = [
    "alive",
    "cmdline",
    "file_lock",
    "free_port",
    "java_major",
    "last_lines",
    "live_process",
    "new_cluster_id",
    "port_free",
    "read_pid",
    "require_java",
    "terminate",
    "wait_gone",
]

_JAVA_HINT = "Install Java 17 or newer: apt-get install openjdk-17-jre-headless"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the JVM does: a port in TIME_WAIT after our last broker counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaSetupError(
            f"Java is needed to run the local Kafka broker and `java` is not on PATH. "
            f"{_JAVA_HINT} (or set RIVERLINE_BOOTSTRAP to use an existing cluster)."
        )
    try:
        done = subprocess.run(
            [java, "-version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KafkaSetupError(f"could not run {java} -version: {exc}. {_JAVA_HINT}") from exc
    output = done.stderr + done.stdout
    major = java_major(output)
    if major is None or major < 17:
        found = output.strip().splitlines()[0] if output.strip() else "no version output"
        raise KafkaSetupError(
            f"Kafka 4 needs Java 17 or newer; {java} reports: {found}. {_JAVA_HINT}"
        )
    return java


def java_major(version_output: str) -> int | None:
    """The Java major version in ``java -version`` output.

    Examples
    --------
    >>> java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> java_major('java version "1.8.0_392"')
    8
    >>> java_major("command not found") is None
    True
    """
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    first = int(match.group(1))
    return int(match.group(2) or 0) if first == 1 else first


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's
    ``Uuid.randomUuid``, which never starts with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def live_process(pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc if alive(proc) else None


def alive(proc: psutil.Process) -> bool:
    # A killed broker nobody reaps stays a zombie: gone for our purposes.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def wait_gone(proc: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def terminate(proc: psutil.Process, timeout: float) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
    if wait_gone(proc, timeout):
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGKILL)
    if not wait_gone(proc, 10.0):
        raise KafkaSetupError(f"the broker (pid {proc.pid}) survived SIGKILL; stop it by hand")


def last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, held across processes for the ``with`` block."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
