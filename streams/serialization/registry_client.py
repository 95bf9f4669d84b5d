"""A small client of the Confluent Schema Registry REST API (the calls Riverline makes).

Confluent's registry, Karapace and Apicurio's Confluent-compatible API
(``/apis/ccompat/v7``) answer the same requests; the base URL is everything before
``/subjects``. Authentication is HTTP basic (user and password, as Confluent Cloud's API
key and secret) or a bearer token. Every request is bounded by ``timeout`` seconds.

Errors: :class:`SchemaRegistryUnavailable` when the registry could not be reached or
answered 5xx (worth a retry later), :class:`SchemaRegistryError` when it refused the
request (4xx, with its ``error_code`` and message).
"""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from streams.errors import RiverlineError
from streams.settings import Settings

__all__ = [
    "CompatibilityVerdict",
    "SchemaRegistryClient",
    "SchemaRegistryError",
    "SchemaRegistryUnavailable",
]

_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
#: Confluent's error code for "subject not found" (no version registered yet).
_SUBJECT_NOT_FOUND = 40401
_MAX_BODY = 16 * 1024 * 1024


class SchemaRegistryError(RiverlineError):
    """The Schema Registry refused a request; ``status`` and ``error_code`` say how."""

    def __init__(self, message: str, *, status: int = 0, error_code: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code


class SchemaRegistryUnavailable(SchemaRegistryError):
    """The Schema Registry could not be reached, timed out, or failed (5xx)."""


@dataclass(frozen=True)
class CompatibilityVerdict:
    """Whether a schema may be registered under a subject, and the registry's reasons."""

    compatible: bool
    messages: tuple[str, ...] = ()


class SchemaRegistryClient:
    """Blocking calls to one registry, each bounded by ``timeout`` seconds.

    Parameters
    ----------
    url
        The base URL, e.g. ``http://localhost:8081`` (Confluent, Karapace) or
        ``http://localhost:8080/apis/ccompat/v7`` (Apicurio).
    user, password
        HTTP basic authentication (both or neither).
    token
        A bearer token (used when no user is given).
    timeout
        Seconds one request may take, connecting included.
    """

    def __init__(
        self,
        url: str,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        parts = urlsplit(self.url)
        self._https = parts.scheme.lower() == "https"
        self._host = parts.netloc.rsplit("@", 1)[-1]
        self._base = parts.path
        self._headers = {"Accept": _CONTENT_TYPE, "Content-Type": _CONTENT_TYPE}
        if user:
            pair = f"{user}:{password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif token:
            self._headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def from_settings(cls, settings: Settings) -> SchemaRegistryClient | None:
        """The client of ``settings.schema_registry_url``, or None when it is unset."""
        if not settings.schema_registry_url:
            return None
        password = settings.schema_registry_password
        token = settings.schema_registry_token
        return cls(
            settings.schema_registry_url,
            user=settings.schema_registry_user,
            password=password.get_secret_value() if password else None,
            token=token.get_secret_value() if token else None,
            timeout=settings.schema_registry_timeout,
        )

    def schema_by_id(self, schema_id: int) -> tuple[str, str]:
        """``(schema text, schema type)`` of a registered id (type ``AVRO`` when unsaid)."""
        body = self._call("GET", f"/schemas/ids/{schema_id}")
        return str(body["schema"]), str(body.get("schemaType") or "AVRO")

    def register(self, subject: str, schema: str) -> int:
        """Register an Avro schema under ``subject`` (the same schema again: its id)."""
        body = self._call(
            "POST", f"/subjects/{quote(subject, safe='')}/versions", {"schema": schema}
        )
        return int(body["id"])

    def lookup(self, subject: str, schema: str) -> int | None:
        """The id of ``schema`` if it is registered under ``subject``, else None."""
        try:
            body = self._call("POST", f"/subjects/{quote(subject, safe='')}", {"schema": schema})
        except SchemaRegistryUnavailable:
            raise
        except SchemaRegistryError as exc:
            if exc.status == 404:
                return None
            raise
        return int(body["id"])

    def set_compatibility(self, subject: str, mode: str) -> None:
        """Set the subject's compatibility mode (``BACKWARD_TRANSITIVE``, ``FULL``, ...)."""
        self._call("PUT", f"/config/{quote(subject, safe='')}", {"compatibility": mode})

    def check_compatibility(self, subject: str, schema: str) -> CompatibilityVerdict:
        """Whether ``schema`` may join ``subject`` under its mode (a new subject: yes)."""
        path = f"/compatibility/subjects/{quote(subject, safe='')}/versions/latest?verbose=true"
        try:
            body = self._call("POST", path, {"schema": schema})
        except SchemaRegistryUnavailable:
            raise
        except SchemaRegistryError as exc:
            if exc.error_code == _SUBJECT_NOT_FOUND or exc.status == 404:
                return CompatibilityVerdict(True)
            raise
        messages = body.get("messages") or ()
        return CompatibilityVerdict(
            bool(body.get("is_compatible")), tuple(str(m) for m in messages)
        )

    def _call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        where = f"{method} {self.url}{path.split('?')[0]}"
        # One connection per request, closed here: registries keep connections alive
        # even when asked not to, and a worker must not hold sockets nobody uses.
        connection = self._connection()
        try:
            connection.request(method, self._base + path, body=data, headers=self._headers)
            response = connection.getresponse()
            status, reason, text = response.status, response.reason, response.read(_MAX_BODY)
        except (OSError, http.client.HTTPException) as exc:  # refused, timeouts, resets
            raise SchemaRegistryUnavailable(
                f"the Schema Registry did not answer {where} within {self.timeout:g} s: "
                f"{exc!r}. Check RIVERLINE_SCHEMA_REGISTRY_URL and that the registry runs."
            ) from exc
        finally:
            connection.close()
        body = _json_object(text)
        if status >= 400:
            raise _refusal(status, reason, body or {}, where)
        if body is None:
            raise SchemaRegistryError(
                f"{where}: the answer is not a JSON object ({text[:200]!r}); is "
                "RIVERLINE_SCHEMA_REGISTRY_URL the registry's API (Apicurio: .../apis/ccompat/v7)?"
            )
        return body

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, timeout=self.timeout)
        return http.client.HTTPConnection(self._host, timeout=self.timeout)


def _json_object(text: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(text or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _refusal(status: int, reason: str, body: dict[str, Any], where: str) -> SchemaRegistryError:
    code = body.get("error_code")
    error_code = code if isinstance(code, int) else 0
    said = body.get("message") or reason
    hint = ""
    if status in (401, 403):
        hint = " Check RIVERLINE_SCHEMA_REGISTRY_USER/_PASSWORD or RIVERLINE_SCHEMA_REGISTRY_TOKEN."
    kind = SchemaRegistryUnavailable if status >= 500 else SchemaRegistryError
    return kind(
        f"the Schema Registry refused {where} (HTTP {status}"
        f"{f', error {error_code}' if error_code else ''}): {said}.{hint}",
        status=status,
        error_code=error_code,
    )
