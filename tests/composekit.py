"""Reading docker-compose.yml and docker-compose.secure.yml as Docker Compose would.

There is no Docker engine on the test machines: the compose tests read the files, merge
the secure file over the plain one, interpolate ``${VAR:?message}`` references and render
the Kafka service's environment into ``server.properties`` as the ``apache/kafka`` image
does (``KafkaDockerWrapper``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from streams.settings import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
SECURE_COMPOSE = REPO_ROOT / "docker-compose.secure.yml"
SECURE_START = REPO_ROOT / "deploy" / "kafka" / "secure-start.sh"

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}`` (and without the colon).
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")

#: The KAFKA_* variables the image does not turn into server properties.
_NOT_PROPERTIES = {
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_JMX_HOSTNAME",
}


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _volume_target(entry: Any) -> str:
    if isinstance(entry, dict):
        return str(entry["target"])
    return str(entry).split(":")[1]


def merge_service(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base`` by Compose's merge rules, for the keys these files use.

    Mappings (environment, depends_on, healthcheck, build) merge key by key; ``volumes``
    merge by mount target; ``ports`` add up; anything else (command, image) is replaced.
    """
    merged = dict(base)
    for key, value in override.items():
        if key == "environment":
            merged[key] = {**environment(base), **environment(override)}
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        elif key == "volumes":
            by_target = {_volume_target(v): v for v in base.get(key, [])}
            by_target.update({_volume_target(v): v for v in value})
            merged[key] = list(by_target.values())
        elif key == "ports":
            merged[key] = [*base.get(key, []), *(p for p in value if p not in base.get(key, []))]
        else:
            merged[key] = value
    return merged


def secure_services() -> dict[str, dict[str, Any]]:
    """The services of ``docker compose -f docker-compose.yml -f docker-compose.secure.yml``."""
    services = dict(load(COMPOSE)["services"])
    for name, service in load(SECURE_COMPOSE)["services"].items():
        services[name] = merge_service(services.get(name, {}), service)
    return services


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """``value`` with each ``${NAME...}`` replaced as Compose would, from ``variables``."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group("name", "op", "arg")
        given = variables.get(name)
        if op in (":?", "?"):
            if not given if op == ":?" else given is None:
                raise KeyError(f"{name} is required: {arg}")
            return str(given)
        if op in (":-", "-"):
            return str(given) if (given if op == ":-" else given is not None) else str(arg)
        return str(given or "")

    return REFERENCE.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def server_properties(env: Mapping[str, str]) -> dict[str, str]:
    """The ``server.properties`` the ``apache/kafka`` image renders from ``KAFKA_*``.

    ``KAFKA_`` dropped, lower case, ``_`` is ``.``, then ``...`` is ``-`` and ``..`` is
    ``_`` (so ``__`` is ``_`` and ``___`` is ``-``).

    Examples
    --------
    >>> server_properties({"KAFKA_LISTENER_NAME_SASL__PLAINTEXT_SCRAM___SHA___256_X": "1"})
    {'listener.name.sasl_plaintext.scram-sha-256.x': '1'}
    """
    properties = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name in _NOT_PROPERTIES:
            continue
        key = name.removeprefix("KAFKA_").lower().replace("_", ".")
        properties[key.replace("...", "-").replace("..", "_")] = value
    return properties


def parse_properties(text: str) -> dict[str, str]:
    lines = (line for line in text.splitlines() if line and not line.startswith("#"))
    return dict(line.split("=", 1) for line in lines)
