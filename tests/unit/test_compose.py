"""docker-compose.yml and what it mounts agree with each other and with Riverline.

There is no Docker engine on the test machines, so these checks read the files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
# The defaults, not this shell's RIVERLINE_* environment: compose ships with the defaults.
KAFKA_VERSION = Settings.model_fields["kafka_version"].default
WEB_PORT = Settings.model_fields["web_port"].default


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _host_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    ports = {}
    for entry in service.get("ports", []):
        host, _, container = str(entry).rpartition(":")
        ports[int(container)] = int(host)
    return ports


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
    assert "localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


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
    named = set(_load(COMPOSE).get("volumes") or {})
    mounts = 0
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source in named:
                continue
            mounts += 1
            assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
    assert mounts >= 3  # prometheus.yml, Grafana provisioning and dashboards


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
