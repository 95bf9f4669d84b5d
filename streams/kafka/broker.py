"""The local single-node Apache Kafka broker (KRaft, broker and controller in one JVM).

Jars come from Maven Central once (``deploy/kafka/pom.xml``) and are cached per Kafka
version under ``Settings.cache_root``; each broker has its own data dir holding its
``server.properties``, pid file, log and KRaft storage. The broker runs detached from the
process that started it, so it outlives ``riverline kafka up`` and ignores Ctrl-C.

When ``Settings.bootstrap`` is set, Riverline starts nothing and only reports on that
cluster.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import SecretStr

from streams.errors import KafkaSetupError
from streams.kafka.auth import (
    MECHANISM,
    PRINCIPALS,
    AclBinding,
    apply_acls,
    client_kwargs,
    pipeline_acls,
    scram_client_kwargs,
    service_acls,
)
from streams.settings import REPO_ROOT, Settings

__all__ = [
    "BROKER_PRINCIPAL",
    "BrokerStatus",
    "LocalBroker",
    "broker_reachable",
    "free_port",
    "render_server_properties",
]

#: The POM and Log4j2 configuration the broker is fetched and run with.
KAFKA_DEPLOY_DIR = REPO_ROOT / "deploy" / "kafka"

_JAVA_HINT = "Install Java 17 or newer: apt-get install openjdk-17-jre-headless"
_MAVEN_HINT = "Install Maven: apt-get install maven"
_COMPLETE_MARKER = ".complete"
_PROBE_THREAD = "riverline-kafka-probe"
_LOG_TAIL_LINES = 20
_CREDENTIALS_FILE = "credentials.json"
#: The broker's own principal on its SASL listener (inter-broker traffic); a super user.
BROKER_PRINCIPAL = "broker"
_SCRAM_ITERATIONS = 8192
#: The StorageTool arguments while formatting (mode 0600, removed once the JVM exits).
_FORMAT_ARGFILE = "format.args"
#: The secure broker's client (and inter-broker) listener name and protocol.
_SECURE_LISTENER = "SASL_PLAINTEXT"


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


def render_server_properties(
    *, port: int, controller_port: int, log_dir: Path, broker_password: str | None = None
) -> str:
    """The ``server.properties`` of a single combined broker and controller on 127.0.0.1.

    The controller quorum is dynamic (KIP-853, the Kafka 4 default):
    ``controller.quorum.bootstrap.servers`` here and ``format --standalone`` at format
    time, so a data dir keeps working when its ports change.

    With ``broker_password`` the client listener is ``SASL_PLAINTEXT`` with SCRAM-SHA-256
    only, the ``StandardAuthorizer`` denies whatever no ACL allows, and ``admin`` and the
    broker's own principal ``broker`` (which logs in with ``broker_password``) are the
    super users. The controller listener (127.0.0.1 only) cannot use SCRAM: SCRAM users
    live in the metadata log that the controller itself serves. Left ``PLAINTEXT``, its
    principal would be ``User:ANONYMOUS``, which the controller must allow to register
    brokers, i.e. a super user any local process could use; so it is ``SASL_PLAINTEXT``
    with ``PLAIN``, whose only user, ``broker``, is defined in this file (mode 0600).

    Examples
    --------
    >>> text = render_server_properties(port=9092, controller_port=9093, log_dir=Path("/d"))
    >>> "listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093" in text
    True
    >>> "auto.create.topics.enable=false" in text
    True
    """
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Riverline creates every topic it uses; a typo must fail, not make a new topic.
        "auto.create.topics.enable": "false",
        # A restarted combined node cannot re-register until its previous broker session
        # expires (9 s by default); a short session makes restarts (and chaos tests) quick.
        "broker.session.timeout.ms": "3000",
        "broker.heartbeat.interval.ms": "1000",
    }
    if broker_password is not None:
        settings.update(_secure_properties(port, controller_port, broker_password))
    lines = ["# Written by Riverline (streams/kafka/broker.py) at every start; edits are lost."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def _secure_properties(port: int, controller_port: int, broker_password: str) -> dict[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", broker_password):
        # It sits inside quoted JAAS options; generated passwords are URL-safe base64.
        raise KafkaSetupError("the broker's own password must be URL-safe base64 characters")
    login = f'username="{BROKER_PRINCIPAL}" password="{broker_password}"'
    scram_jaas = f"org.apache.kafka.common.security.scram.ScramLoginModule required {login};"
    plain_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'{login} user_{BROKER_PRINCIPAL}="{broker_password}";'
    )
    client = _SECURE_LISTENER.lower()
    return {
        "listeners": (
            f"{_SECURE_LISTENER}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        ),
        "advertised.listeners": f"{_SECURE_LISTENER}://127.0.0.1:{port}",
        "listener.security.protocol.map": (
            f"{_SECURE_LISTENER}:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
        ),
        "inter.broker.listener.name": _SECURE_LISTENER,
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.{client}.sasl.enabled.mechanisms": MECHANISM,
        f"listener.name.{client}.{MECHANISM.lower()}.sasl.jaas.config": scram_jaas,
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": plain_jaas,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:admin;User:{BROKER_PRINCIPAL}",
    }


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
        return self._data_dir / _CREDENTIALS_FILE

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
        stored = self._stored_passwords()
        passwords: dict[str, SecretStr] = {}
        for principal in (*PRINCIPALS, BROKER_PRINCIPAL):
            configured = getattr(self._settings, f"kafka_{principal}_password", None)
            if isinstance(configured, SecretStr):
                passwords[principal] = configured
            elif principal in stored:
                passwords[principal] = SecretStr(stored[principal])
            else:
                raise KafkaSetupError(
                    f"no password for the Kafka principal '{principal}' of the secure broker "
                    f"in {self._data_dir}: {self.credentials_path} does not name it, so it "
                    f"was set with RIVERLINE_KAFKA_{principal.upper()}_PASSWORD when the "
                    f"broker was formatted. Set that variable again."
                )
        return passwords

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

    def _stored_passwords(self) -> dict[str, str]:
        try:
            data = json.loads(self.credentials_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise KafkaSetupError(
                f"cannot read {self.credentials_path}: {type(exc).__name__}. Restore it, or "
                f"remove {self._data_dir} to start over with a new secure broker."
            ) from exc
        generated = data.get("generated", {})
        return {str(k): str(v) for k, v in generated.items()}

    def _ensure_credentials(self, log: Callable[[str], None]) -> None:
        """Before a first format: generate the passwords settings do not give (0600 file)."""
        stored = self._stored_passwords()
        generated = dict(stored)
        for principal in (*PRINCIPALS, BROKER_PRINCIPAL):
            configured = getattr(self._settings, f"kafka_{principal}_password", None)
            if configured is None and principal not in generated:
                generated[principal] = secrets.token_urlsafe(24)
        if generated != stored or not self.credentials_path.exists():
            document = {"mechanism": MECHANISM, "generated": generated}
            _write_private(self.credentials_path, json.dumps(document, indent=2) + "\n")
        named = sorted(set(generated) - {BROKER_PRINCIPAL})
        if named:
            log(
                f"generated Kafka passwords for {', '.join(named)} in "
                f"{self.credentials_path} (mode 0600)"
            )

    def _scram_arguments(self) -> list[str]:
        """``--add-scram`` options with salted credentials (RFC 5802).

        A salted password logs in as well as the password itself, so these go to
        ``StorageTool`` through an argument file (:func:`_java_argfile`), never on a
        command line.
        """
        arguments: list[str] = []
        for principal, password in self.credentials().items():
            salt = os.urandom(16)
            salted = hashlib.pbkdf2_hmac(
                "sha256", password.get_secret_value().encode(), salt, _SCRAM_ITERATIONS
            )
            arguments += [
                "--add-scram",
                f"{MECHANISM}=[name={principal},iterations={_SCRAM_ITERATIONS},"
                f'salt="{base64.b64encode(salt).decode()}",'
                f'saltedpassword="{base64.b64encode(salted).decode()}"]',
            ]
        return arguments

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
            raise KafkaSetupError(f"{pom} is missing; Riverline needs its source checkout.")
        libs.parent.mkdir(parents=True, exist_ok=True)
        # Two processes may fetch at once (make -j, parallel test sessions); one downloads.
        with _file_lock(libs.parent / ".fetch.lock"):
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
                output = _last_lines(done.stdout + done.stderr, _LOG_TAIL_LINES)
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
        with _file_lock(self._data_dir / "broker.lock"):
            self._check_security_mode()
            proc = self._process(log)
            if proc is not None:
                status = self._join_running(proc, log)
            else:
                java = _require_java()
                self._check_ports_free()
                libs = self.fetch(log)
                log4j = KAFKA_DEPLOY_DIR / "log4j2.yaml"
                formatted = (self._storage_dir / "meta.properties").exists()
                if self._secure and not formatted:
                    self._data_dir.chmod(0o700)
                    self._ensure_credentials(log)
                _write_private(self._properties_path, self.server_properties())
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
        with _file_lock(self._data_dir / "broker.lock"):
            proc = self._process(log)
            if proc is None:
                log(f"no local broker running from {self._data_dir}")
                return False
            log(f"stopping Kafka (pid {proc.pid}) at 127.0.0.1:{self._port}")
            _terminate(proc, self._settings.kafka_stop_timeout)
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
        _wait_gone(proc, 10.0)

    def status(self) -> BrokerStatus:
        """Whether the broker runs (if Riverline manages it) and whether it answers."""
        bootstrap = self.bootstrap
        if self._settings.bootstrap:
            ok, info = _probe(bootstrap, 5.0, client_kwargs(self._settings))
            where = f"external cluster {bootstrap}"
            detail = f"{where}: {info}" if ok else f"{where} does not answer: {info}"
            return BrokerStatus(bootstrap, managed=False, pid=None, reachable=ok, detail=detail)

        proc = self._process()
        version = self._settings.kafka_version
        security = self._probe_security()
        if proc is None:
            ok, info = _probe(bootstrap, 2.0, security)
            stale = self._stale_pid()
            why = f" (stale pid file: pid {stale} is not a running broker)" if stale else ""
            detail = f"no Riverline broker running from {self._data_dir}{why}"
            if ok:
                detail += f"; another broker answers at {bootstrap}: {info}"
            return BrokerStatus(bootstrap, managed=False, pid=None, reachable=ok, detail=detail)
        ok, info = _probe(bootstrap, 5.0, security)
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
        pid = _read_pid(self.pid_path)
        if pid is None:
            return None
        proc = _live_process(pid)
        # A pid is reused after its process exits: it is ours only if it runs our config.
        if proc is not None and str(self._properties_path) in _cmdline(proc):
            return proc
        if log is not None:
            log(f"removing stale pid file {self.pid_path} (pid {pid} is not our broker)")
            self.pid_path.unlink(missing_ok=True)
        return None

    def _stale_pid(self) -> int | None:
        return _read_pid(self.pid_path)

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
            if not _port_free(port):
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
            "kafka.tools.StorageTool", "format", "--cluster-id", _new_cluster_id(),
            "--config", str(self._properties_path), "--standalone",
            *(self._scram_arguments() if self._secure else []),
        ]  # fmt: skip
        # The main class and its arguments come from a file the launcher reads, so
        # /proc/<pid>/cmdline shows only its path; -XX:-UsePerfData keeps the JVM from
        # publishing the expanded command in /tmp/hsperfdata_<user>/<pid>.
        with _java_argfile(self._data_dir / _FORMAT_ARGFILE, arguments) as argfile:
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
            output = _redact_scram(done.stdout + done.stderr)
            raise KafkaSetupError(
                f"formatting Kafka storage in {self._storage_dir} failed "
                f"(exit code {done.returncode}):\n{_last_lines(output, _LOG_TAIL_LINES)}"
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
        proc = _live_process(pid)
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
            if not _alive(proc):
                self.pid_path.unlink(missing_ok=True)
                raise KafkaSetupError(self._died_message())
            status = self.status()
            if status.reachable:
                return status
            if time.monotonic() >= deadline:
                _terminate(proc, self._settings.kafka_stop_timeout)
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
        return _last_lines(text, lines) or "(the log is empty)"


# ---------------------------------------------------------------------- probing


def broker_reachable(
    bootstrap: str, timeout: float = 5.0, security: Mapping[str, Any] | None = None
) -> bool:
    """True if the cluster at ``bootstrap`` answers a metadata request within ``timeout``.

    ``security``: aiokafka client arguments (:func:`streams.kafka.auth.client_kwargs`).
    """
    ok, _ = _probe(bootstrap, timeout, security or {})
    return ok


class _DropProbeNoise(logging.Filter):
    """Hide aiokafka's connection errors while probing: not answering is an answer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName or not record.threadName.startswith(_PROBE_THREAD)


_PROBE_FILTER = _DropProbeNoise()


async def _describe_cluster(
    bootstrap: str, seconds: float, security: Mapping[str, Any]
) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="riverline-probe",
        request_timeout_ms=max(1, int(seconds * 1000)),
        **security,
    )
    try:
        async with asyncio.timeout(seconds):
            await admin.start()
            return await admin.describe_cluster()
    finally:
        await admin.close()


def _probe(bootstrap: str, timeout: float, security: Mapping[str, Any]) -> tuple[bool, str]:
    """(answered, one line about the cluster or why it did not answer)."""
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.admin.client"):
        logging.getLogger(name).addFilter(_PROBE_FILTER)  # no-op when already added
    outcome: list[tuple[bool, str]] = []

    def run() -> None:
        # A thread of its own, so probing works with or without a running event loop.
        try:
            info = asyncio.run(_describe_cluster(bootstrap, timeout, security))
        except TimeoutError:
            outcome.append((False, f"no answer within {timeout:g} s"))
        except Exception as exc:  # any failure to talk to Kafka means "not reachable"
            outcome.append((False, f"{type(exc).__name__}: {exc}"))
        else:
            brokers = info.get("brokers") or []
            if not brokers:
                outcome.append((False, "the cluster has no registered broker yet"))
            else:
                outcome.append(
                    (
                        True,
                        f"cluster {info.get('cluster_id')}, {len(brokers)} broker(s), "
                        f"controller {info.get('controller_id')}",
                    )
                )

    thread = threading.Thread(target=run, name=f"{_PROBE_THREAD}-{bootstrap}", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)
    return outcome[0] if outcome else (False, f"no answer within {timeout:g} s")


# ---------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the JVM does: a port in TIME_WAIT after our last broker counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _require_java() -> str:
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
    major = _java_major(output)
    if major is None or major < 17:
        found = output.strip().splitlines()[0] if output.strip() else "no version output"
        raise KafkaSetupError(
            f"Kafka 4 needs Java 17 or newer; {java} reports: {found}. {_JAVA_HINT}"
        )
    return java


def _java_major(version_output: str) -> int | None:
    """The Java major version in ``java -version`` output.

    Examples
    --------
    >>> _java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> _java_major('java version "1.8.0_392"')
    8
    >>> _java_major("command not found") is None
    True
    """
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        return None
    first = int(match.group(1))
    return int(match.group(2) or 0) if first == 1 else first


def _new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as Kafka's
    ``Uuid.randomUuid``, which never starts with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _live_process(pid: int) -> psutil.Process | None:
    try:
        proc = psutil.Process(pid)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc if _alive(proc) else None


def _alive(proc: psutil.Process) -> bool:
    # A killed broker nobody reaps stays a zombie: gone for our purposes.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _wait_gone(proc: psutil.Process, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(proc):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _terminate(proc: psutil.Process, timeout: float) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGTERM)
    if _wait_gone(proc, timeout):
        return
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(signal.SIGKILL)
    if not _wait_gone(proc, 10.0):
        raise KafkaSetupError(f"the broker (pid {proc.pid}) survived SIGKILL; stop it by hand")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (it may hold passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # an older file keeps its mode through O_CREAT
        fh.write(text)


@contextlib.contextmanager
def _java_argfile(path: Path, arguments: list[str]) -> Iterator[str]:
    """Write ``arguments`` (a main class and its arguments) to a private ``@argfile``.

    Yields the ``@path`` argument for the ``java`` launcher, which reads the file in its
    own process. It expands an ``@argfile`` only before the main class, so the main class
    goes in the file too. The file is removed when the block ends.
    """
    _write_private(path, _argfile_text(arguments))
    try:
        yield f"@{path}"
    finally:
        path.unlink(missing_ok=True)


def _argfile_text(arguments: list[str]) -> str:
    r"""One argument per line, double-quoted, as the ``java`` launcher reads an argfile.

    Inside double quotes it takes ``\\`` and ``\"`` as escapes; a line break cannot be
    written, so an argument with one is refused.

    Examples
    --------
    >>> print(_argfile_text(["Main", 'a "b" c', "C:\\x"]), end="")
    "Main"
    "a \"b\" c"
    "C:\\x"
    """
    lines = []
    for argument in arguments:
        if "\n" in argument or "\r" in argument:
            raise KafkaSetupError("an argument with a line break cannot go in a java argfile")
        escaped = argument.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'"{escaped}"\n')
    return "".join(lines)


def _redact_scram(text: str) -> str:
    """``text`` with the (salted) passwords and salts of SCRAM options hidden.

    Examples
    --------
    >>> _redact_scram('bad value [name=a,salt="c2FsdA==",saltedpassword="cHc="]')
    'bad value [name=a,salt="<hidden>",saltedpassword="<hidden>"]'
    """
    return re.sub(r'(salt|saltedpassword|password)=("[^"]*"|[^,\]\s]*)', r'\1="<hidden>"', text)


def _last_lines(text: str, count: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-count:])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, held across processes for the ``with`` block."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
