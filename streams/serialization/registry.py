"""Confluent ids resolved by a Schema Registry, cached, and a catalog that uses them.

A Confluent-framed value names its schema by an id the registry assigned. Riverline asks
the registry once per id (``GET /schemas/ids/<id>``), keeps the answer (ids never change
their schema) and matches the schema to a catalog version by the fingerprint of its
Parsing Canonical Form: docs, defaults and aliases do not matter, the written bytes do.

The worker asks on its event loop, so every request is bounded by
``RIVERLINE_SCHEMA_REGISTRY_TIMEOUT``; after a failure, ids it does not know yet are
dead letters (``schema_registry_unavailable``) for ``RIVERLINE_SCHEMA_REGISTRY_RETRY``
seconds without another request, so a registry that is down costs one timeout per
interval, never a crash. Ids known before keep working.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from fastavro.schema import to_parsing_canonical_form

from streams.errors import ConfigError, DecodeError
from streams.serialization.catalog import SchemaCatalog, SchemaVersion, compute_fingerprint
from streams.serialization.registry_client import (
    SchemaRegistryClient,
    SchemaRegistryError,
    SchemaRegistryUnavailable,
)
from streams.settings import Settings

__all__ = ["RegistrySchemas", "load_catalog"]

#: Most ids remembered as unusable (not registered, not Avro); past it the memory is
#: cleared, so a producer sending random ids cannot grow it without bound.
_MAX_MISSES = 10_000


class RegistrySchemas:
    """A registry's ids and fingerprints, cached; what a catalog asks a registry for.

    Parameters
    ----------
    client
        The registry's client (its timeout bounds each request).
    frames_outputs
        Write Riverline's own topics in Confluent framing (``RIVERLINE_OUTPUT_FORMAT``).
    retry_after
        Seconds after a failed request during which unknown ids fail at once.
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        client: SchemaRegistryClient,
        *,
        frames_outputs: bool = False,
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.frames_outputs = frames_outputs
        self.retry_after = retry_after
        self._clock = clock
        self._fingerprints: dict[int, bytes] = {}
        self._misses: dict[int, DecodeError] = {}
        self._ids: dict[tuple[str, bytes], int] = {}
        self._down_until = -1.0
        self._down_reason = ""
        #: Registry requests made for ids (for tests and the curious).
        self.lookups = 0

    def fingerprint(self, schema_id: int) -> bytes:
        """The fingerprint of id's schema, fetched once.

        Raises
        ------
        DecodeError
            ``unknown_confluent_id`` (the registry has no such id),
            ``schema_not_in_catalog`` (not an Avro schema Riverline can read) or
            ``schema_registry_unavailable`` (no answer: try again later).
        """
        known = self._fingerprints.get(schema_id)
        if known is not None:
            return known
        miss = self._misses.get(schema_id)
        if miss is not None:
            raise miss
        if self._clock() < self._down_until:
            raise DecodeError(
                "schema_registry_unavailable",
                f"Confluent schema id {schema_id} is not known yet and the Schema Registry "
                f"is unavailable ({self._down_reason}); retrying after "
                f"{self.retry_after:g} s",
            )
        return self._fetch(schema_id)

    def _fetch(self, schema_id: int) -> bytes:
        self.lookups += 1
        try:
            text, kind = self.client.schema_by_id(schema_id)
        except SchemaRegistryError as exc:
            if isinstance(exc, SchemaRegistryUnavailable) or exc.status != 404:
                # Refused credentials too: asking again per message would not help.
                self._down_until = self._clock() + self.retry_after
                self._down_reason = str(exc)
                raise DecodeError("schema_registry_unavailable", str(exc)) from exc
            raise self._miss(
                schema_id,
                "unknown_confluent_id",
                f"Confluent schema id {schema_id} is not registered in the Schema Registry at "
                f"{self.client.url}; the producer used another registry?",
            ) from exc
        if kind.upper() != "AVRO":
            raise self._miss(
                schema_id,
                "schema_not_in_catalog",
                f"Confluent schema id {schema_id} is a {kind} schema; Riverline reads Avro",
            )
        try:
            fp = compute_fingerprint(to_parsing_canonical_form(json.loads(text)))
        except Exception as exc:  # fastavro raises several unrelated types for bad schemas
            raise self._miss(
                schema_id,
                "schema_not_in_catalog",
                f"Confluent schema id {schema_id} is not an Avro schema Riverline can read "
                f"({exc}); is it one with references?",
            ) from exc
        self._fingerprints[schema_id] = fp
        return fp

    def _miss(self, schema_id: int, reason: str, message: str) -> DecodeError:
        if len(self._misses) >= _MAX_MISSES:
            self._misses.clear()
        error = self._misses[schema_id] = DecodeError(reason, message)
        return error

    def register(self, subject: str, sv: SchemaVersion) -> int:
        """The id of ``sv`` under ``subject``, registered once per process.

        Raises
        ------
        SchemaRegistryError
            If the registry refuses it (incompatible under the subject's mode, no
            permission) or cannot be reached.
        """
        key = (subject, sv.fingerprint)
        schema_id = self._ids.get(key)
        if schema_id is None:
            schema_id = self.client.register(subject, json.dumps(sv.schema))
            self._ids[key] = schema_id
            self._fingerprints[schema_id] = sv.fingerprint
        return schema_id


def load_catalog(settings: Settings) -> SchemaCatalog:
    """The schema catalog of ``settings``, with its Schema Registry if one is set.

    Raises
    ------
    ConfigError
        ``RIVERLINE_OUTPUT_FORMAT=confluent`` without ``RIVERLINE_SCHEMA_REGISTRY_URL``.
    """
    client = SchemaRegistryClient.from_settings(settings)
    confluent = settings.output_format == "confluent"
    if client is None:
        if confluent:
            raise ConfigError(
                "RIVERLINE_OUTPUT_FORMAT=confluent needs a Schema Registry for the ids: set "
                "RIVERLINE_SCHEMA_REGISTRY_URL, or use the default single_object"
            )
        return SchemaCatalog.load(settings.schemas_dir)
    ids = RegistrySchemas(
        client, frames_outputs=confluent, retry_after=settings.schema_registry_retry
    )
    return SchemaCatalog.load(settings.schemas_dir, registry=ids)
