"""Riverline's error types: one root, so callers can catch everything Riverline raises."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "FeatureError",
    "KafkaSetupError",
    "RiverlineError",
    "SpecError",
]


class RiverlineError(Exception):
    """Root of every error Riverline raises on purpose.

    Messages say what was wrong, where, and what to do about it.
    """


class ConfigError(RiverlineError):
    """A setting is missing or invalid."""


class SpecError(RiverlineError):
    """A pipeline spec (TOML) is invalid."""


class FeatureError(RiverlineError):
    """A batch or a saved feature state that the feature engine cannot use."""


class KafkaSetupError(RiverlineError):
    """The local broker could not be obtained, started, reached or stopped."""


class DecodeError(RiverlineError):
    """A raw message could not be decoded or validated.

    ``reason`` is a short, stable code (``not_json``, ``missing_field``, ...) used as the
    dead-letter reason and as a metric label; the message says what was wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
