"""docker-compose.yml, docker-compose.secure.yml and what they mount agree with each other
and with Riverline.

There is no Docker engine on the test machines, so these checks read the files
(``tests/composekit.py``); ``tests/integration/test_compose_secure_broker.py`` runs the
secure variant's broker settings and start script on a real broker.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from composekit import (
    COMPOSE,
    REFERENCE,
    SECURE_COMPOSE,
    SECURE_START,
    environment,
    interpolate,
    load,
    parse_properties,
    secure_services,
    server_properties,
)

from streams.kafka.auth import MECHANISM, PRINCIPALS
from streams.kafka.broker import BROKER_PRINCIPAL, render_server_properties
from streams.settings import REPO_ROOT, Settings

# The defaults, not this shell's RIVERLINE_* environment: compose ships with the defaults.
KAFKA_VERSION = Settings.model_fields["kafka_version"].default
WEB_PORT = Settings.model_fields["web_port"].default


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


_environment = environment


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port."""
    published = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published.append(
                (str(entry.get("host_ip", "")), int(entry["published"]), int(entry["target"]))
            )
            continue
        parts = str(entry).split(":")
        address = parts[0] if len(parts) == 3 else ""
        published.append((address, int(parts[-2]) if len(parts) > 1 else 0, int(parts[-1])))
    return published


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    return {container: host for _, host, container in _published(service)}


def test_services_present(services: dict[str, Any]) -> None:
    assert set(services) >= {"kafka", "worker", "prometheus", "grafana"}


def test_kafka_image_is_the_version_riverline_runs(services: dict[str, Any]) -> None:
    name, _, tag = services["kafka"]["image"].partition(":")
    assert name == "apache/kafka"
    assert tag == KAFKA_VERSION


def test_kafka_is_single_node_kraft_without_auto_create(services: dict[str, Any]) -> None:
    env = _environment(services["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert _host_ports(services["kafka"]) == {9092: 9092}
    assert "HOST://127.0.0.1:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_worker_talks_to_an_advertised_internal_listener(services: dict[str, Any]) -> None:
    worker_env = _environment(services["worker"])
    advertised = _environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    addresses = [listener.split("://", 1)[1] for listener in advertised.split(",")]
    assert worker_env["RIVERLINE_BOOTSTRAP"] in addresses
    assert worker_env["RIVERLINE_BOOTSTRAP"].startswith("kafka:")


def test_worker_runs_the_phishing_pipeline_from_the_repo(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert worker["build"]["context"] == "."
    assert (REPO_ROOT / worker["build"].get("dockerfile", "Dockerfile")).exists()
    command = worker["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[:2] == ["riverline", "worker"]
    pipeline = command[command.index("--pipeline") + 1]
    assert (REPO_ROOT / pipeline).exists()


def test_worker_web_port_is_published_and_reachable(services: dict[str, Any]) -> None:
    env = _environment(services["worker"])
    port = int(env.get("RIVERLINE_WEB_PORT", WEB_PORT))
    assert port == WEB_PORT
    assert env["RIVERLINE_WEB_HOST"] == "0.0.0.0"  # scraped from another container
    assert _host_ports(services["worker"]) == {port: port}


def test_prometheus_scrapes_the_worker_web_port(services: dict[str, Any]) -> None:
    port = int(_environment(services["worker"]).get("RIVERLINE_WEB_PORT", WEB_PORT))
    config = _load(REPO_ROOT / "deploy" / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_job = jobs["riverline-worker"]
    assert worker_job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in worker_job["static_configs"] for t in group["targets"]]
    assert targets == [f"worker:{port}"]
    assert _host_ports(services["prometheus"]) == {9090: 9090}
    assert _host_ports(services["grafana"]) == {3000: 3000}


def test_every_bind_mount_exists_in_the_repo(services: dict[str, Any]) -> None:
    named = set(_load(COMPOSE).get("volumes") or {}) | set(load(SECURE_COMPOSE)["volumes"])
    mounts = 0
    for name, service in [*services.items(), *load(SECURE_COMPOSE)["services"].items()]:
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source in named:
                continue
            mounts += 1
            assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
    assert mounts >= 4  # prometheus.yml, Grafana provisioning and dashboards, secure-start.sh


def test_grafana_dashboard_uses_the_provisioned_datasource() -> None:
    grafana = REPO_ROOT / "deploy" / "grafana"
    datasources = _load(grafana / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads((grafana / "dashboards" / "riverline.json").read_text())
    targets = [t for panel in dashboard["panels"] for t in panel["targets"]]
    assert targets
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"]
    exprs = " ".join(t["expr"] for t in targets)
    for metric in (
        "riverline_events_total",
        "riverline_dead_letters_total",
        "riverline_end_to_end_latency_seconds_bucket",
        "riverline_consumer_lag",
        "riverline_model_metric",
    ):
        assert metric in exprs


# ---------------------------------------------------------------------- safe defaults

#: Values for every variable the files require, as a user would export them.
PASSWORDS = {p: f"{p}-pw-0123456789abcdef" for p in (*PRINCIPALS, BROKER_PRINCIPAL)}
VARIABLES = {
    "RIVERLINE_SIGNING_KEY": "0123456789abcdef0123456789abcdef",
    **{f"RIVERLINE_KAFKA_{p.upper()}_PASSWORD": pw for p, pw in PASSWORDS.items()},
}
SECRET_NAME = re.compile(r"PASSWORD|SIGNING_KEY|SECRET|TOKEN")


def _interpolated(service: dict[str, Any]) -> dict[str, str]:
    return {key: interpolate(value, VARIABLES) for key, value in environment(service).items()}


@pytest.mark.parametrize("path", [COMPOSE, SECURE_COMPOSE], ids=lambda p: p.name)
def test_every_published_port_is_bound_to_loopback(path: Path) -> None:
    published = [
        (name, entry)
        for name, service in load(path)["services"].items()
        for entry in _published(service)
    ]
    if path == COMPOSE:
        assert {name for name, _ in published} == {"kafka", "worker", "prometheus", "grafana"}
    for name, (address, host_port, _) in published:
        assert address == "127.0.0.1", f"{name} publishes port {host_port} on {address or 'all'}"


def test_the_signing_key_must_be_set_and_has_no_default() -> None:
    for services in (load(COMPOSE)["services"], secure_services()):
        value = environment(services["worker"])["RIVERLINE_SIGNING_KEY"]
        match = REFERENCE.fullmatch(value)
        assert match is not None, value
        assert match["name"] == "RIVERLINE_SIGNING_KEY"
        assert match["op"] == ":?"  # refused when unset or empty, no default
        assert "openssl rand -hex 32" in match["arg"]  # the message says how to make one
        with pytest.raises(KeyError, match="RIVERLINE_SIGNING_KEY"):
            interpolate(value, {})
        for service in services.values():
            assert "RIVERLINE_DEV_MODE" not in environment(service)
    for path in (COMPOSE, SECURE_COMPOSE):
        assert Settings.model_fields["signing_key"].default.get_secret_value() not in (
            path.read_text()
        )


@pytest.mark.parametrize("path", [COMPOSE, SECURE_COMPOSE, SECURE_START], ids=lambda p: p.name)
def test_no_secret_is_written_in_the_files(path: Path) -> None:
    text = path.read_text()
    # Every secret is a required reference, never a literal and never a default.
    references = [m for m in REFERENCE.finditer(text) if SECRET_NAME.search(m["name"])]
    for match in references:
        assert match["op"] == ":?", match[0]
    if path != SECURE_START:
        for service in load(path)["services"].values():
            for key, value in environment(service).items():
                if SECRET_NAME.search(key):
                    assert REFERENCE.fullmatch(value), f"{key} is not a ${{...}} reference"
    # JAAS and SCRAM options: password="..." and user_NAME="..." hold references only.
    for match in re.finditer(r'(?:password|user_\w+)=\\?"?([^"\s,\]\\;]*)', text):
        value = match.group(1)
        assert value.startswith(("${", "$RIVERLINE_KAFKA_", "%s")), match[0]
    for password in PASSWORDS.values():
        assert password not in text


def _secure_kafka_properties() -> dict[str, str]:
    return server_properties(_interpolated(secure_services()["kafka"]))


def _local_secure_properties() -> dict[str, str]:
    text = render_server_properties(
        port=9092,
        controller_port=9093,
        log_dir=Path("/d"),
        broker_password=PASSWORDS[BROKER_PRINCIPAL],
    )
    return parse_properties(text)


def test_secure_broker_settings_agree_with_kafka_up_secure() -> None:
    compose = _secure_kafka_properties()
    local = _local_secure_properties()
    # The same authorizer, default and super users.
    for key in ("authorizer.class.name", "allow.everyone.if.no.acl.found", "super.users"):
        assert compose[key] == local[key], key
    assert compose["allow.everyone.if.no.acl.found"] == "false"
    assert compose["auto.create.topics.enable"] == local["auto.create.topics.enable"] == "false"
    # Every listener is SASL_PLAINTEXT, as locally.
    protocols = dict(
        item.split(":") for item in compose["listener.security.protocol.map"].split(",")
    )
    local_protocols = dict(
        item.split(":") for item in local["listener.security.protocol.map"].split(",")
    )
    assert set(protocols.values()) == set(local_protocols.values()) == {"SASL_PLAINTEXT"}
    names = {listener.split("://")[0] for listener in compose["listeners"].split(",")}
    assert names == set(protocols)
    # Client listeners (inter-broker among them): SCRAM-SHA-256 only, the broker logs in
    # as `broker` on the inter-broker one exactly as locally.
    local_client = local["inter.broker.listener.name"].lower()
    inter_broker = compose["inter.broker.listener.name"].lower()
    controller = compose["controller.listener.names"]
    assert controller == local["controller.listener.names"] == "CONTROLLER"
    for name in set(protocols) - {controller}:
        mechanisms = compose[f"listener.name.{name.lower()}.sasl.enabled.mechanisms"]
        assert mechanisms == local[f"listener.name.{local_client}.sasl.enabled.mechanisms"]
        assert mechanisms == MECHANISM
        assert f"listener.name.{name.lower()}.{MECHANISM.lower()}.sasl.jaas.config" in compose
    jaas = f"{MECHANISM.lower()}.sasl.jaas.config"
    assert (
        compose[f"listener.name.{inter_broker}.{jaas}"]
        == local[f"listener.name.{local_client}.{jaas}"]
    )
    assert (
        compose["sasl.mechanism.inter.broker.protocol"]
        == local["sasl.mechanism.inter.broker.protocol"]
    )
    # The controller listener: SASL/PLAIN with the single user broker, as locally.
    for key in (
        "sasl.mechanism.controller.protocol",
        "listener.name.controller.sasl.enabled.mechanisms",
        "listener.name.controller.plain.sasl.jaas.config",
    ):
        assert compose[key] == local[key], key
    # Nothing of the plain file is left that the secure one should have replaced.
    assert "PLAINTEXT:PLAINTEXT" not in compose["listener.security.protocol.map"]
    assert not any(v == "PLAINTEXT" for v in protocols.values())


def test_secure_start_formats_the_principals_kafka_up_secure_creates() -> None:
    text = SECURE_START.read_text()
    principals = re.search(r"^principals=\(([^)]*)\)", text, re.MULTILINE)
    assert principals is not None
    assert principals.group(1).split() == [*PRINCIPALS, BROKER_PRINCIPAL]
    kafka = secure_services()["kafka"]
    env = environment(kafka)
    for principal in principals.group(1).split():
        name = f"RIVERLINE_KAFKA_{principal.upper()}_PASSWORD"
        assert REFERENCE.fullmatch(env[name])["name"] == name  # type: ignore[index]
    # The command runs the mounted script, which then runs the image's own start.
    command = kafka["command"]
    assert command[0] == "bash"
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in kafka["volumes"]}
    assert (REPO_ROOT / mounts[command[1]]).resolve() == SECURE_START
    assert command[2:] == ["/etc/kafka/docker/run"]
    # The healthcheck logs in with the client config the script writes.
    default = re.search(r"RIVERLINE_KAFKA_CLIENT_CONFIG:-([^}]+)\}", text)
    assert default is not None
    assert f"--command-config {default.group(1)}" in " ".join(kafka["healthcheck"]["test"])
    assert "--bootstrap-server kafka:19092" in " ".join(kafka["healthcheck"]["test"])


def test_secure_variant_keeps_its_own_volumes() -> None:
    plain = load(COMPOSE)
    secure = secure_services()
    for name in ("kafka", "worker"):
        plain_sources = {str(v).split(":")[0] for v in plain["services"][name]["volumes"]}
        secure_sources = {str(v).split(":")[0] for v in secure[name]["volumes"]}
        assert not plain_sources & secure_sources, name
    assert set(load(SECURE_COMPOSE)["volumes"]) >= {"kafka-secure-data", "riverline-secure-home"}


def test_secure_worker_logs_in_as_riverline_after_the_acls_are_granted() -> None:
    services = secure_services()
    worker, acls = services["worker"], services["kafka-acls"]
    worker_env = _interpolated(worker)
    assert worker_env["RIVERLINE_KAFKA_SECURITY"] == "sasl_scram"
    assert worker_env["RIVERLINE_KAFKA_USERNAME"] == "riverline"
    assert worker_env["RIVERLINE_KAFKA_PASSWORD"] == PASSWORDS["riverline"]
    assert worker["depends_on"]["kafka-acls"] == {"condition": "service_completed_successfully"}
    acls_env = _interpolated(acls)
    assert acls_env["RIVERLINE_KAFKA_SECURITY"] == "sasl_scram"
    assert acls_env["RIVERLINE_KAFKA_USERNAME"] == "admin"
    assert acls_env["RIVERLINE_KAFKA_PASSWORD"] == PASSWORDS["admin"]
    assert acls_env["RIVERLINE_BOOTSTRAP"] == worker_env["RIVERLINE_BOOTSTRAP"] == "kafka:19092"
    assert acls["depends_on"]["kafka"] == {"condition": "service_healthy"}
    assert acls.get("restart") == "no"
    assert acls["image"] == worker["image"]
    # It grants the pipeline the worker runs.
    command = acls["command"]
    assert command[:3] == ["riverline", "kafka", "acls"]
    worker_pipeline = worker["command"][worker["command"].index("--pipeline") + 1]
    assert command[command.index("--pipeline") + 1] == worker_pipeline
    # The broker's advertised listeners are the addresses clients are given.
    advertised = _interpolated(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"INTERNAL://{worker_env['RIVERLINE_BOOTSTRAP']}" in advertised.split(",")
