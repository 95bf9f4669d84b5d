"""Client credentials from settings, the ACL rules, and the secure broker's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError, KafkaSetupError
from streams.kafka.auth import (
    AclBinding,
    Operation,
    PatternType,
    ResourceType,
    client_kwargs,
    faust_credentials,
    pipeline_acls,
    service_acls,
)
from streams.kafka.broker import LocalBroker, render_server_properties
from streams.settings import Settings

SECRET = "correct-horse-battery-staple"


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return dict(pairs)


def test_plaintext_settings_give_no_credentials() -> None:
    settings = Settings(kafka_security="plaintext", kafka_username="x", kafka_password=SECRET)
    assert client_kwargs(settings) == {}
    assert faust_credentials(settings) is None


def test_scram_settings_give_aiokafka_sasl_arguments() -> None:
    settings = Settings(
        kafka_security="sasl_scram", kafka_username="riverline", kafka_password=SECRET
    )
    assert client_kwargs(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "riverline",
        "sasl_plain_password": SECRET,
    }
    creds = faust_credentials(settings)
    assert creds is not None
    assert (creds.username, creds.password, creds.mechanism) == (
        "riverline",
        SECRET,
        "SCRAM-SHA-256",
    )
    assert SECRET not in repr(creds)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_passwords_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIVERLINE_KAFKA_SECURITY", "sasl_scram")
    monkeypatch.setenv("RIVERLINE_KAFKA_USERNAME", "producer")
    monkeypatch.setenv("RIVERLINE_KAFKA_PASSWORD", SECRET)
    monkeypatch.setenv("RIVERLINE_KAFKA_ADMIN_PASSWORD", "admin-" + SECRET)
    settings = Settings.from_env()
    assert client_kwargs(settings)["sasl_plain_password"] == SECRET
    assert settings.kafka_admin_password is not None
    assert settings.kafka_admin_password.get_secret_value() == "admin-" + SECRET


@pytest.mark.parametrize("missing", ["kafka_username", "kafka_password"])
def test_scram_without_username_or_password_says_what_to_set(missing: str) -> None:
    values: dict[str, object] = {
        "kafka_security": "sasl_scram",
        "kafka_username": "riverline",
        "kafka_password": SECRET,
        missing: None,
    }
    with pytest.raises(ConfigError, match="RIVERLINE_KAFKA_USERNAME and RIVERLINE_KAFKA_PASSWORD"):
        client_kwargs(Settings(**values))  # type: ignore[arg-type]


def test_unknown_security_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="kafka_security"):
        Settings.from_env(kafka_security="ssl")


def _allowed(rules: list[AclBinding], principal: str) -> set[tuple[str, str, str, str]]:
    return {
        (r.resource.name, r.name, r.pattern.name, r.operation.name)
        for r in rules
        if r.principal == principal
    }


def test_pipeline_acls_producer_writes_raw_and_labels_only() -> None:
    rules = pipeline_acls("phishing", namespace="t1.")
    assert _allowed(rules, "producer") == {
        ("TOPIC", "t1.phishing.raw", "LITERAL", "WRITE"),
        ("TOPIC", "t1.phishing.raw", "LITERAL", "DESCRIBE"),
        ("TOPIC", "t1.phishing.labels", "LITERAL", "WRITE"),
        ("TOPIC", "t1.phishing.labels", "LITERAL", "DESCRIBE"),
    }


def test_pipeline_acls_consumer_reads_predictions_only() -> None:
    rules = pipeline_acls("phishing", namespace="t1.")
    assert _allowed(rules, "consumer") == {
        ("TOPIC", "t1.phishing.predictions", "LITERAL", "READ"),
        ("TOPIC", "t1.phishing.predictions", "LITERAL", "DESCRIBE"),
        ("GROUP", "t1.consumer-", "PREFIXED", "READ"),
    }


def test_riverline_owns_its_pipeline_and_shared_topics_and_group() -> None:
    rules = pipeline_acls("phishing") + service_acls()
    assert _allowed(rules, "riverline") == {
        ("TOPIC", "phishing.", "PREFIXED", "ALL"),
        ("TOPIC", "riverline", "PREFIXED", "ALL"),
        ("GROUP", "riverline", "PREFIXED", "ALL"),
        ("CLUSTER", "kafka-cluster", "LITERAL", "DESCRIBE"),
        ("CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE"),
    }
    assert not _allowed(rules, "admin")  # a super user needs no rule


def test_acl_codes_are_kafkas() -> None:
    # org.apache.kafka.common.{resource.ResourceType,resource.PatternType,acl.AclOperation}
    assert (ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER) == (2, 3, 4)
    assert (PatternType.LITERAL, PatternType.PREFIXED) == (3, 4)
    assert (Operation.ALL, Operation.READ, Operation.WRITE, Operation.DESCRIBE) == (2, 3, 4, 8)
    assert Operation.IDEMPOTENT_WRITE == 12


def test_secure_server_properties(tmp_path: Path) -> None:
    props = _properties(
        render_server_properties(
            port=29092,
            controller_port=29093,
            log_dir=tmp_path / "kraft",
            broker_password="broker-pw_1",
        )
    )
    assert props["listeners"] == "SASL_PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:29092"
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "SCRAM-SHA-256"
    assert props["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-256"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin;User:broker"
    assert "ANONYMOUS" not in props["super.users"]


def test_plaintext_server_properties_have_no_security(tmp_path: Path) -> None:
    text = render_server_properties(port=1, controller_port=2, log_dir=tmp_path)
    assert "sasl" not in text
    assert "authorizer" not in text


def test_broker_password_must_be_safe_in_jaas(tmp_path: Path) -> None:
    with pytest.raises(KafkaSetupError, match="URL-safe"):
        render_server_properties(
            port=1, controller_port=2, log_dir=tmp_path, broker_password='x"; evil'
        )


def _broker(tmp_path: Path, **overrides: object) -> LocalBroker:
    settings = Settings.from_env(
        home=tmp_path / "home", cache_dir=tmp_path / "cache", bootstrap=None, **overrides
    )
    return LocalBroker(settings, data_dir=tmp_path / "data", secure=True)


def test_configured_passwords_win_over_generated_ones(tmp_path: Path) -> None:
    broker = _broker(tmp_path, kafka_producer_password=SECRET)
    (tmp_path / "data").mkdir()
    broker.credentials_path.write_text(
        '{"generated": {"admin": "a", "consumer": "c", "riverline": "r", "broker": "b"}}'
    )
    passwords = {k: v.get_secret_value() for k, v in broker.credentials().items()}
    assert passwords == {
        "admin": "a",
        "producer": SECRET,
        "consumer": "c",
        "riverline": "r",
        "broker": "b",
    }
    assert broker.client_kwargs("producer")["sasl_plain_password"] == SECRET


def test_missing_password_says_which_variable_to_set(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    (tmp_path / "data").mkdir()
    broker.credentials_path.write_text('{"generated": {"broker": "b"}}')
    with pytest.raises(KafkaSetupError, match="RIVERLINE_KAFKA_ADMIN_PASSWORD"):
        broker.credentials()


def test_secure_mode_is_detected_from_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env(home=tmp_path / "h", cache_dir=tmp_path / "c", bootstrap=None)
    assert not LocalBroker(settings, data_dir=tmp_path / "data").secure
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "credentials.json").write_text("{}")
    assert LocalBroker(settings, data_dir=tmp_path / "data").secure
