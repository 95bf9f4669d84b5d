"""Kafka authentication and authorization: client credentials from settings, and ACLs.

Riverline's secured deployment uses SASL/SCRAM-SHA-256 over ``SASL_PLAINTEXT`` and the
``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``. Four principals:

``producer``
    WRITE and DESCRIBE on ``P.raw`` and ``P.labels`` of each pipeline P, nothing else.
``consumer``
    READ and DESCRIBE on ``P.predictions``, and READ on consumer groups named
    ``consumer-*``, nothing else.
``riverline``
    The service: everything on the topics prefixed ``P.`` and ``riverline`` (shared
    topics, Faust's internal topics and its consumer group ``riverline``), DESCRIBE and
    IDEMPOTENT_WRITE on the cluster.
``admin``
    A super user (``super.users``): creates the ACLs and anything else.

Client settings come from :class:`~streams.settings.Settings` (``kafka_security``,
``kafka_username``, ``kafka_password``) and nowhere else. This module does not import
Faust: :func:`faust_credentials` returns plain values; the Faust app wires them as::

    creds = faust_credentials(settings)
    broker_credentials = (
        None if creds is None
        else faust.SASLCredentials(username=creds.username, password=creds.password,
                                   mechanism=creds.mechanism)
    )
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from aiokafka import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest

from streams.errors import ConfigError, KafkaSetupError
from streams.settings import Settings

__all__ = [
    "MECHANISM",
    "PRINCIPALS",
    "AclBinding",
    "FaustCredentials",
    "apply_acls",
    "client_kwargs",
    "faust_credentials",
    "grant_pipeline_acls",
    "pipeline_acls",
    "scram_client_kwargs",
    "service_acls",
]

#: The SASL mechanism of every secured Riverline listener.
MECHANISM = "SCRAM-SHA-256"

#: The principals ``kafka up --secure`` creates, in the order it reports them.
PRINCIPALS = ("admin", "producer", "consumer", "riverline")

#: The consumer groups the ``consumer`` principal may use: ``consumer-`` + anything.
CONSUMER_GROUP_PREFIX = "consumer-"

_CLUSTER = "kafka-cluster"


class ResourceType(IntEnum):
    """Kafka's ``ResourceType`` codes (CreateAcls protocol)."""

    TOPIC = 2
    GROUP = 3
    CLUSTER = 4


class PatternType(IntEnum):
    """Kafka's ``PatternType`` codes."""

    LITERAL = 3
    PREFIXED = 4


class Operation(IntEnum):
    """Kafka's ``AclOperation`` codes."""

    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DESCRIBE = 8
    IDEMPOTENT_WRITE = 12


_ALLOW = 3  # AclPermissionType.ALLOW; Riverline never writes DENY rules.


@dataclass(frozen=True)
class AclBinding:
    """One ALLOW rule: ``principal`` may do ``operation`` on a resource (from any host)."""

    principal: str
    """A SCRAM user name (``producer``); sent as ``User:producer``."""
    resource: ResourceType
    name: str
    pattern: PatternType
    operation: Operation

    def __str__(self) -> str:
        how = "prefixed" if self.pattern is PatternType.PREFIXED else "literal"
        return (
            f"User:{self.principal} {self.operation.name} "
            f"{self.resource.name} {self.name!r} ({how})"
        )


@dataclass(frozen=True)
class FaustCredentials:
    """What ``faust.SASLCredentials`` takes (see the module docstring)."""

    username: str
    password: str
    mechanism: str = MECHANISM

    def __repr__(self) -> str:  # never show the password in a log or a traceback
        return f"FaustCredentials(username={self.username!r}, mechanism={self.mechanism!r})"


# ---------------------------------------------------------------------- clients


def scram_client_kwargs(username: str, password: str) -> dict[str, Any]:
    """aiokafka client keyword arguments that log in as ``username`` with SCRAM-SHA-256.

    Examples
    --------
    >>> sorted(scram_client_kwargs("producer", "pw"))
    ['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
    """
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": MECHANISM,
        "sasl_plain_username": username,
        "sasl_plain_password": password,
    }


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin) from settings.

    Empty for ``kafka_security="plaintext"``; the SASL/SCRAM arguments for
    ``"sasl_scram"``, which needs ``kafka_username`` and ``kafka_password``.

    Examples
    --------
    >>> client_kwargs(Settings(kafka_security="plaintext"))
    {}
    >>> client_kwargs(Settings(kafka_security="sasl_scram", kafka_username="riverline",
    ...                        kafka_password="s3cret"))["sasl_plain_username"]
    'riverline'
    """
    if settings.kafka_security == "plaintext":
        return {}
    username, password = _username_password(settings)
    return scram_client_kwargs(username, password)


def faust_credentials(settings: Settings) -> FaustCredentials | None:
    """The values for ``faust.App(broker_credentials=faust.SASLCredentials(...))``.

    None for ``kafka_security="plaintext"`` (pass ``broker_credentials=None``).
    """
    if settings.kafka_security == "plaintext":
        return None
    username, password = _username_password(settings)
    return FaustCredentials(username=username, password=password)


def _username_password(settings: Settings) -> tuple[str, str]:
    if not settings.kafka_username or settings.kafka_password is None:
        raise ConfigError(
            "RIVERLINE_KAFKA_SECURITY=sasl_scram needs RIVERLINE_KAFKA_USERNAME and "
            "RIVERLINE_KAFKA_PASSWORD (for the worker: the 'riverline' principal; "
            "`riverline kafka up --secure` says where the local broker's passwords are)."
        )
    return settings.kafka_username, settings.kafka_password.get_secret_value()


# ---------------------------------------------------------------------- ACLs


def service_acls(namespace: str = "") -> list[AclBinding]:
    """What the ``riverline`` principal needs besides its pipelines' topics.

    The shared topics (``riverline.dlq``, ...), Faust's internal topics
    (``riverline-...``) and its consumer group (``riverline``) all start with
    ``{namespace}riverline``.
    """
    prefix = f"{namespace}riverline"
    return [
        AclBinding("riverline", ResourceType.TOPIC, prefix, PatternType.PREFIXED, Operation.ALL),
        AclBinding("riverline", ResourceType.GROUP, prefix, PatternType.PREFIXED, Operation.ALL),
        AclBinding(
            "riverline", ResourceType.CLUSTER, _CLUSTER, PatternType.LITERAL, Operation.DESCRIBE
        ),
        AclBinding(
            "riverline",
            ResourceType.CLUSTER,
            _CLUSTER,
            PatternType.LITERAL,
            Operation.IDEMPOTENT_WRITE,
        ),
    ]


def pipeline_acls(pipeline: str, namespace: str = "") -> list[AclBinding]:
    """The rules of one pipeline's topics ``{namespace}{pipeline}.*``.

    Examples
    --------
    >>> for rule in pipeline_acls("phishing")[:3]:
    ...     print(rule)
    User:producer WRITE TOPIC 'phishing.raw' (literal)
    User:producer DESCRIBE TOPIC 'phishing.raw' (literal)
    User:producer WRITE TOPIC 'phishing.labels' (literal)
    """
    base = f"{namespace}{pipeline}."
    rules: list[AclBinding] = []
    for topic in ("raw", "labels"):
        for operation in (Operation.WRITE, Operation.DESCRIBE):
            rules.append(
                AclBinding(
                    "producer", ResourceType.TOPIC, base + topic, PatternType.LITERAL, operation
                )
            )
    for operation in (Operation.READ, Operation.DESCRIBE):
        rules.append(
            AclBinding(
                "consumer", ResourceType.TOPIC, base + "predictions", PatternType.LITERAL, operation
            )
        )
    rules.append(
        AclBinding(
            "consumer",
            ResourceType.GROUP,
            f"{namespace}{CONSUMER_GROUP_PREFIX}",
            PatternType.PREFIXED,
            Operation.READ,
        )
    )
    rules.append(
        AclBinding("riverline", ResourceType.TOPIC, base, PatternType.PREFIXED, Operation.ALL)
    )
    return rules


async def create_acls(
    bootstrap: str, admin_kwargs: Mapping[str, Any], rules: Iterable[AclBinding]
) -> None:
    """Create the rules (as a super user); creating an existing rule changes nothing."""
    # aiokafka has the CreateAcls request but no admin method for it: the public client
    # sends it to any broker (each forwards ACL changes to the controller).
    client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id="riverline-acls", **admin_kwargs)
    await client.bootstrap()
    try:
        for rule in rules:
            request = CreateAclsRequest(
                resource_type=int(rule.resource),
                resource_name=rule.name,
                resource_pattern_type_filter=int(rule.pattern),
                principal=f"User:{rule.principal}",
                host="*",
                operation=int(rule.operation),
                permission_type=_ALLOW,
            )
            response = await client.send(client.get_random_node(), request)
            for code, message in response.creation_responses:
                if code:
                    error = for_code(code)
                    raise KafkaSetupError(
                        f"the broker at {bootstrap} refused the ACL {rule}: "
                        f"{error.__name__}: {message}. Are the admin credentials a super user?"
                    )
    finally:
        await client.close()


def apply_acls(
    bootstrap: str, admin_kwargs: Mapping[str, Any], rules: Iterable[AclBinding]
) -> None:
    """:func:`create_acls` from synchronous code (with or without a running event loop)."""
    rules = list(rules)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(create_acls(bootstrap, admin_kwargs, rules))
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="riverline-acls", daemon=True)
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, KafkaSetupError):
            raise exc
        raise KafkaSetupError(
            f"could not create ACLs on {bootstrap}: {type(exc).__name__}: {exc}"
        ) from exc


def grant_pipeline_acls(
    bootstrap: str,
    admin_kwargs: Mapping[str, Any],
    pipelines: Iterable[str],
    *,
    namespace: str = "",
) -> list[AclBinding]:
    """Grant the service rules and each pipeline's rules; return what was granted."""
    rules = service_acls(namespace)
    for pipeline in pipelines:
        rules += pipeline_acls(pipeline, namespace)
    apply_acls(bootstrap, admin_kwargs, rules)
    return rules
