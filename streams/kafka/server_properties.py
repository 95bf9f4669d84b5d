"""The ``server.properties`` of Riverline's local single-node broker, plaintext or secure."""

from __future__ import annotations

import re
from pathlib import Path

from streams.errors import KafkaSetupError
from streams.kafka.auth import MECHANISM

__all__ = ["BROKER_PRINCIPAL", "render_server_properties"]

#: The broker's own principal on its SASL listener (inter-broker traffic); a super user.
BROKER_PRINCIPAL = "broker"
#: The secure broker's client (and inter-broker) listener name and protocol.
_SECURE_LISTENER = "SASL_PLAINTEXT"


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
