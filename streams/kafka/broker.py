"""The local single-node Apache Kafka broker (KRaft, broker and controller in one JVM).

Jars come from Maven Central once (``deploy/kafka/pom.xml``, shipped in the package) and
are cached per Kafka version under ``Settings.cache_root``; each broker has its own data
dir holding its ``server.properties``, pid file, log and KRaft storage. The broker runs
detached from the process that started it, so it outlives ``riverline kafka up`` and
ignores Ctrl-C.

When ``Settings.bootstrap`` is set, Riverline starts nothing and only reports on that
cluster.

Its parts: the ``server.properties`` it runs with (:mod:`~streams.kafka.server_properties`),
the passwords of a secure broker (:mod:`~streams.kafka.credentials`), its processes and
files (:mod:`~streams.kafka.process`) and the reachability probe
(:mod:`~streams.kafka.probe`). This module re-exports what callers of a local broker need:
:func:`render_server_properties`, :data:`BROKER_PRINCIPAL`, :func:`broker_reachable`
and :func:`free_port`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from pydantic import SecretStr

from streams.errors import KafkaSetupError
from streams.kafka.auth import (
    PRINCIPALS,
    AclBinding,
    apply_acls,
    client_kwargs,
    pipeline_acls,
    scram_client_kwargs,
    service_acls,
)
from streams.kafka.credentials import BrokerCredentials, java_argfile, redact_scram, write_private
from streams.kafka.probe import broker_reachable, probe
from streams.kafka.process import (
    alive,
    cmdline,
    file_lock,
    free_port,
    last_lines,
    live_process,
    new_cluster_id,
    port_free,
    read_pid,
    require_java,
    terminate,
    wait_gone,
)
from streams.kafka.server_properties import BROKER_PRINCIPAL, render_server_properties
from streams.settings import Settings, bundled_path

__all__ = [
    "BROKER_PRINCIPAL",
    "BrokerStatus",
    "LocalBroker",
    "broker_reachable",
    "free_port",
    "render_server_properties",
]

#: The POM and Log4j2 configuration the broker is fetched and run with.
KAFKA_DEPLOY_DIR = bundled_path("kafka")

_MAVEN_HINT = "Install Maven: apt-get install maven"
_COMPLETE_MARKER = ".complete"
_LOG_TAIL_LINES = 20
#: The StorageTool arguments while formatting (mode 0600, removed once the JVM exits).
_FORMAT_ARGFILE = "format.args"


@dataclass(frozen=True)
class BrokerStatus:
    """What is known about the cluster Riverline would talk to."""

    bootstrap: str
    managed: bool
    """True if this is the broker Riverline started (pid file present, process alive)."""
    pid: int | None
    reachable: bool
    """The cluster answered a metadata request and has at least one broker."""
    detail: str
    """One human line: where, version, data dir, or why it is not reachable."""


class LocalBroker:
    """A single-node Kafka broker Riverline obtains, starts and stops.

    Parameters
    ----------
    settings
        Kafka version, ports, heap, timeouts, ``home`` and ``bootstrap``.
    data_dir
        Where this broker keeps its storage, pid file and log
        (default ``settings.kafka_dir / "data"``).
    port, controller_port
        Override ``settings.kafka_port`` and ``settings.kafka_controller_port``.
    secure
        SASL/SCRAM-SHA-256 with ACLs (see :func:`render_server_properties` and
        :mod:`streams.kafka.auth`). None: secure if the data dir was formatted secure or
        ``settings.kafka_security`` is ``"sasl_scram"``. A data dir keeps the mode it was
        formatted with.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        data_dir: Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        secure: bool | None = None,
    ) -> None:
        self._settings = settings
        self._data_dir = (data_dir or settings.kafka_dir / "data").resolve()
        self._credentials = BrokerCredentials(settings, self._data_dir)
        self._requested_secure = secure
        if secure is None:
            secure = self.credentials_path.exists() or settings.kafka_security == "sasl_scram"
        self._secure = secure
        self._port = port if port is not None else settings.kafka_port
        self._controller_port = (
            controller_port if controller_port is not None else settings.kafka_controller_port
        )

    # ------------------------------------------------------------------ paths

    @property
    def bootstrap(self) -> str:
        """``settings.bootstrap`` if set, else this broker's ``127.0.0.1:port``."""
        return self._settings.bootstrap or f"127.0.0.1:{self._port}"

    @property
    def data_dir(self) -> Path:
        return self._data_dir

    @property
    def secure(self) -> bool:
        return self._secure

    @property
    def credentials_path(self) -> Path:
        """The generated passwords of a secure data dir (JSON, mode 0600)."""
        return self._credentials.path

    @property
    def libs_dir(self) -> Path:
        return self._settings.kafka_libs_dir

    @property
    def log_path(self) -> Path:
        """The broker's stdout and stderr (Log4j2 console output) for its latest start."""
        return self._data_dir / "broker.log"

    @property
    def pid_path(self) -> Path:
        return self._data_dir / "broker.pid"

    @property
    def _properties_path(self) -> Path:
        return self._data_dir / "server.properties"

    @property
    def _storage_dir(self) -> Path:
        return self._data_dir / "kraft"

    def server_properties(self) -> str:
        """The ``server.properties`` text this broker runs with."""
        broker_password = None
        if self._secure:
            broker_password = self.credentials()[BROKER_PRINCIPAL].get_secret_value()
        return render_server_properties(
            port=self._port,
            controller_port=self._controller_port,
            log_dir=self._storage_dir,
            broker_password=broker_password,
        )

    # ------------------------------------------------------------------ credentials

    def credentials(self) -> dict[str, SecretStr]:
        """The password of each principal of this secure broker, by principal name.

        ``settings.kafka_<principal>_password`` where set, else the one generated at
        format time into :attr:`credentials_path`.
        """
        return self._credentials.passwords()

    def client_kwargs(self, principal: str = "admin") -> dict[str, Any]:
        """aiokafka client arguments that log in to this broker as ``principal``."""
        if not self._secure:
            return {}
        password = self.credentials()[principal].get_secret_value()
        return scram_client_kwargs(principal, password)

    def grant_pipelines(self, pipelines: list[str]) -> list[AclBinding]:
        """Create the ACLs of these pipelines (``settings.namespace`` applied) as admin."""
        namespace = self._settings.namespace
        rules = [rule for name in pipelines for rule in pipeline_acls(name, namespace)]
        apply_acls(self.bootstrap, self.client_kwargs("admin"), rules)
        return rules

    # ------------------------------------------------------------------ fetch

    def fetch(self, log: Callable[[str], None] = print) -> Path:
        """Download the broker jars with Maven unless cached; return the jars dir."""
        libs = self.libs_dir
        if (libs / _COMPLETE_MARKER).exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaSetupError(
                f"Maven (mvn) is needed once to download the Kafka "
                f"{self._settings.kafka_version} jars into {libs}, and it is not on PATH. "
                f"{_MAVEN_HINT} (or set RIVERLINE_BOOTSTRAP to use an existing cluster)."
            )
        pom = KAFKA_DEPLOY_DIR / "pom.xml"
        if not pom.exists():
            raise KafkaSetupError(
                f"{pom} is missing: this Riverline installation is incomplete; reinstall it."
            )
        libs.parent.mkdir(parents=True, exist_ok=True)
        # Two processes may fetch at once (make -j, parallel test sessions); one downloads.
        with file_lock(libs.parent / ".fetch.lock"):
            if (libs / _COMPLETE_MARKER).exists():
                return libs
            version = self._settings.kafka_version
            log(f"fetching Kafka {version} jars from Maven Central into {libs} (once, ~42 MB)")
            staging = libs.parent / f"libs.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            cmd = [
                mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}", "-DincludeScope=runtime",
                f"-Dkafka.version={version}",
            ]  # fmt: skip
            try:
                done = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    check=False,
                    env=self._settings.child_env(),
                    cwd=libs.parent,
                )
            except OSError as exc:
                raise KafkaSetupError(f"could not run Maven ({mvn}): {exc}. {_MAVEN_HINT}") from exc
            broker_jar = staging / f"kafka_2.13-{version}.jar"
            if done.returncode != 0 or not broker_jar.exists():
                shutil.rmtree(staging, ignore_errors=True)
                output = last_lines(done.stdout + done.stderr, _LOG_TAIL_LINES)
                raise KafkaSetupError(
                    f"Maven could not fetch the Kafka {version} jars "
                    f"(exit code {done.returncode}; ran: {' '.join(cmd)}). Check the network "
                    f"access to Maven Central and that RIVERLINE_KAFKA_VERSION={version} "
                    f"exists. Maven said:\n{output}"
                )
            shutil.rmtree(libs, ignore_errors=True)
            staging.rename(libs)
            jars = sorted(p.name for p in libs.glob("*.jar"))
            (libs / _COMPLETE_MARKER).write_text("\n".join(jars) + "\n")
            size = sum(p.stat().st_size for p in libs.glob("*.jar")) / 1e6
            log(f"fetched {len(jars)} jars ({size:.0f} MB) into {libs}")
        return libs

    # ------------------------------------------------------------------ up / down

    def up(self, log: Callable[[str], None] = print) -> BrokerStatus:
        """Start the broker unless it runs already, and wait until it answers.

        With ``settings.bootstrap`` set, start nothing and report on that cluster.
        """
        if self._settings.bootstrap:
            status = self.status()
            if not status.reachable:
                raise KafkaSetupError(
                    f"RIVERLINE_BOOTSTRAP is set and {status.detail}. Start that cluster, "
                    f"fix the address, or unset RIVERLINE_BOOTSTRAP to let Riverline run a "
                    f"local broker."
                )
            log(status.detail)
            return status

        self._data_dir.mkdir(parents=True, exist_ok=True)
        with file_lock(self._data_dir / "broker.lock"):
            self._check_security_mode()
            proc = self._process(log)
            if proc is not None:
                status = self._join_running(proc, log)
            else:
                java = require_java()
                self._check_ports_free()
                libs = self.fetch(log)
                log4j = KAFKA_DEPLOY_DIR / "log4j2.yaml"
                formatted = (self._storage_dir / "meta.properties").exists()
                if self._secure and not formatted:
                    self._data_dir.chmod(0o700)
                    self._credentials.ensure(log)
                write_private(self._properties_path, self.server_properties())
                if not formatted:
                    self._format(java, libs, log4j, log)
                status = self._start(java, libs, log4j, log)
            if self._secure:
                apply_acls(
                    self.bootstrap,
                    self.client_kwargs("admin"),
                    service_acls(self._settings.namespace),
                )
                log(
                    f"SASL/SCRAM-SHA-256 with ACLs at {self.bootstrap}; principals "
                    f"{', '.join(PRINCIPALS)}; passwords from RIVERLINE_KAFKA_<PRINCIPAL>"
                    f"_PASSWORD or {self.credentials_path}"
                )
            return status

    def _check_security_mode(self) -> None:
        formatted = (self._storage_dir / "meta.properties").exists()
        has_credentials = self.credentials_path.exists()
        if self._requested_secure is False and has_credentials:
            raise KafkaSetupError(
                f"the broker data in {self._data_dir} was formatted with SASL/SCRAM "
                f"(`kafka up --secure`); it stays secure. Use another RIVERLINE_HOME for a "
                f"plaintext broker, or remove {self._data_dir} to start over."
            )
        if self._secure and formatted and not has_credentials:
            raise KafkaSetupError(
                f"the broker data in {self._data_dir} was formatted without security, so "
                f"it has no SCRAM users. Use another RIVERLINE_HOME for a secure broker, or "
                f"stop it (`riverline kafka down`) and remove {self._data_dir} to start over."
            )

    def down(self, log: Callable[[str], None] = print) -> bool:
        """Stop the broker this data dir's pid file names; True if something was stopped.

        SIGTERM first (a clean shutdown), SIGKILL after ``settings.kafka_stop_timeout``.
        Never touches a process Riverline did not start.
        """
        if not self._data_dir.exists():
            log(f"no local broker: {self._data_dir} does not exist")
            return False
        with file_lock(self._data_dir / "broker.lock"):
            proc = self._process(log)
            if proc is None:
                log(f"no local broker running from {self._data_dir}")
                return False
            log(f"stopping Kafka (pid {proc.pid}) at 127.0.0.1:{self._port}")
            terminate(proc, self._settings.kafka_stop_timeout)
            self.pid_path.unlink(missing_ok=True)
            log(f"stopped Kafka (pid {proc.pid}); data kept in {self._data_dir}")
            return True

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for chaos tests); data and pid file are kept."""
        proc = self._process()
        if proc is None:
            raise KafkaSetupError(f"no local broker is running from {self._data_dir} to kill")
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
        wait_gone(proc, 10.0)

    def status(self) -> BrokerStatus:
        """Whether the broker runs (if Riverline manages it) and whether it answers."""
        bootstrap = self.bootstrap
        if self._settings.bootstrap:
            ok, info = probe(bootstrap, 5.0, client_kwargs(self._settings))
            where = f"external cluster {bootstrap}"
            detail = f"{where}: {info}" if ok else f"{where} does not answer: {info}"
            return BrokerStatus(bootstrap, managed=False, pid=None, reachable=ok, detail=detail)

        proc = self._process()
        version = self._settings.kafka_version
        security = self._probe_security()
        if proc is None:
            ok, info = probe(bootstrap, 2.0, security)
            stale = self._stale_pid()
            why = f" (stale pid file: pid {stale} is not a running broker)" if stale else ""
            detail = f"no Riverline broker running from {self._data_dir}{why}"
            if ok:
                detail += f"; another broker answers at {bootstrap}: {info}"
            return BrokerStatus(bootstrap, managed=False, pid=None, reachable=ok, detail=detail)
        ok, info = probe(bootstrap, 5.0, security)
        mode = ", SASL/SCRAM" if self._secure else ""
        where = f"Kafka {version} at {bootstrap} (pid {proc.pid}{mode}, data {self._data_dir})"
        if not ok:
            info = f"does not answer: {info}; log {self.log_path}"
        detail = f"{where}: {info}"
        return BrokerStatus(bootstrap, managed=True, pid=proc.pid, reachable=ok, detail=detail)

    # ------------------------------------------------------------------ internals

    def _probe_security(self) -> dict[str, Any]:
        try:
            return self.client_kwargs("admin")
        except KafkaSetupError:
            return {}  # the probe then says what the broker answers to no credentials

    def _java_env(self) -> dict[str, str]:
        """The child environment without Riverline's passwords: the JVM needs none."""
        env = self._settings.child_env()
        return {
            k: v
            for k, v in env.items()
            if not k.startswith("RIVERLINE_KAFKA_") or not k.endswith("PASSWORD")
        }

    def _process(self, log: Callable[[str], None] | None = None) -> psutil.Process | None:
        """The live broker process named by the pid file, or None (stale file removed)."""
        pid = read_pid(self.pid_path)
        if pid is None:
            return None
        proc = live_process(pid)
        # A pid is reused after its process exits: it is ours only if it runs our config.
        if proc is not None and str(self._properties_path) in cmdline(proc):
            return proc
        if log is not None:
            log(f"removing stale pid file {self.pid_path} (pid {pid} is not our broker)")
            self.pid_path.unlink(missing_ok=True)
        return None

    def _stale_pid(self) -> int | None:
        return read_pid(self.pid_path)

    def _join_running(self, proc: psutil.Process, log: Callable[[str], None]) -> BrokerStatus:
        running = self._properties_path.read_text() if self._properties_path.exists() else ""
        if running != self.server_properties():
            raise KafkaSetupError(
                f"a broker already runs from {self._data_dir} (pid {proc.pid}) with other "
                f"settings (ports?). Stop it with `riverline kafka down` and start again."
            )
        status = self._wait_until_answering(proc)
        log(f"already running: {status.detail}")
        return status

    def _check_ports_free(self) -> None:
        for port, setting in (
            (self._port, "RIVERLINE_KAFKA_PORT"),
            (self._controller_port, "RIVERLINE_KAFKA_CONTROLLER_PORT"),
        ):
            if not port_free(port):
                raise KafkaSetupError(
                    f"port {port} on 127.0.0.1 is already in use by another process, so the "
                    f"local broker cannot listen there. Choose another port with {setting}, "
                    f"stop that process, or, if it is a Kafka broker you want to use, set "
                    f"RIVERLINE_BOOTSTRAP=127.0.0.1:{port}."
                )

    def _java_cmd(self, java: str, libs: Path, log4j: Path) -> list[str]:
        heap = self._settings.kafka_heap
        return [
            java, f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*",
        ]  # fmt: skip

    def _format(self, java: str, libs: Path, log4j: Path, log: Callable[[str], None]) -> None:
        log(f"formatting new KRaft storage in {self._storage_dir}")
        arguments = [
            "kafka.tools.StorageTool", "format", "--cluster-id", new_cluster_id(),
            "--config", str(self._properties_path), "--standalone",
            *(self._credentials.scram_arguments() if self._secure else []),
        ]  # fmt: skip
        # The main class and its arguments come from a file the launcher reads, so
        # /proc/<pid>/cmdline shows only its path; -XX:-UsePerfData keeps the JVM from
        # publishing the expanded command in /tmp/hsperfdata_<user>/<pid>.
        with java_argfile(self._data_dir / _FORMAT_ARGFILE, arguments) as argfile:
            cmd = [*self._java_cmd(java, libs, log4j), "-XX:-UsePerfData", argfile]
            done = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
                env=self._java_env(),
                cwd=self._data_dir,
            )
        if done.returncode != 0:
            output = redact_scram(done.stdout + done.stderr)
            raise KafkaSetupError(
                f"formatting Kafka storage in {self._storage_dir} failed "
                f"(exit code {done.returncode}):\n{last_lines(output, _LOG_TAIL_LINES)}"
            )

    def _start(
        self, java: str, libs: Path, log4j: Path, log: Callable[[str], None]
    ) -> BrokerStatus:
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_name("broker.log.1"))
        cmd = [*self._java_cmd(java, libs, log4j), "kafka.Kafka", str(self._properties_path)]
        version = self._settings.kafka_version
        log(f"starting Kafka {version} at {self.bootstrap} (log {self.log_path})")
        started = time.monotonic()
        # sh starts java in the background and exits: java is then nobody's child (it
        # outlives us, never becomes our zombie) and, in a new session, misses Ctrl-C.
        launcher = 'log=$1; shift; "$@" >>"$log" 2>&1 </dev/null & echo $!'
        try:
            done = subprocess.run(
                ["/bin/sh", "-c", launcher, "sh", str(self.log_path), *cmd],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=True,
                env=self._java_env(),
                cwd=self._data_dir,
                start_new_session=True,
            )
            pid = int(done.stdout.strip())
        except (OSError, ValueError, subprocess.CalledProcessError) as exc:
            raise KafkaSetupError(f"could not launch the broker ({java}): {exc}") from exc
        self.pid_path.write_text(f"{pid}\n")
        proc = live_process(pid)
        if proc is None:
            self.pid_path.unlink(missing_ok=True)
            raise KafkaSetupError(self._died_message())
        status = self._wait_until_answering(proc)
        log(f"Kafka up in {time.monotonic() - started:.1f} s: {status.detail}")
        return status

    def _wait_until_answering(self, proc: psutil.Process) -> BrokerStatus:
        timeout = self._settings.kafka_start_timeout
        deadline = time.monotonic() + timeout
        while True:
            if not alive(proc):
                self.pid_path.unlink(missing_ok=True)
                raise KafkaSetupError(self._died_message())
            status = self.status()
            if status.reachable:
                return status
            if time.monotonic() >= deadline:
                terminate(proc, self._settings.kafka_stop_timeout)
                self.pid_path.unlink(missing_ok=True)
                raise KafkaSetupError(
                    f"the broker at {self.bootstrap} did not answer within {timeout:g} s "
                    f"(RIVERLINE_KAFKA_START_TIMEOUT), so it was stopped. Last "
                    f"{_LOG_TAIL_LINES} lines of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.25)

    def _died_message(self) -> str:
        return (
            f"the broker exited during start-up. Last {_LOG_TAIL_LINES} lines of "
            f"{self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the broker log ('' if it does not exist)."""
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                text = fh.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return last_lines(text, lines) or "(the log is empty)"
