"""HTTP client of the worker's admin API (``agents.admin``), for ``riverline models``.

The worker is at ``http://web_host:web_port``; the bearer token is ``RIVERLINE_ADMIN_TOKEN``.
Every failure is an :class:`AdminError` whose message says what to do: the worker is not
running, the token is missing or unknown (401), or its role is too low (403).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from streams.errors import RiverlineError
from streams.settings import Settings

__all__ = ["AdminClient", "AdminError"]


class AdminError(RiverlineError):
    """The admin API refused a request, or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class AdminClient:
    """``GET /models`` and ``POST /models/{promote,rollback,reset}`` on a running worker.

    Examples
    --------
    >>> AdminClient("http://127.0.0.1:6066", token=None).url
    'http://127.0.0.1:6066'
    """

    def __init__(self, url: str, token: str | None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminClient:
        token = settings.admin_token.get_secret_value() if settings.admin_token else None
        return cls(f"http://{settings.web_host}:{settings.web_port}", token)

    def models(self, pipeline: str | None = None) -> dict[str, Any]:
        query = f"?pipeline={pipeline}" if pipeline else ""
        return self._call("GET", f"/models{query}")

    def promote(self, pipeline: str | None, model: str, why: str) -> dict[str, Any]:
        return self._call(
            "POST", "/models/promote", {"pipeline": pipeline, "model": model, "why": why}
        )

    def rollback(self, pipeline: str | None, why: str) -> dict[str, Any]:
        return self._call("POST", "/models/rollback", {"pipeline": pipeline, "why": why})

    def reset(self, pipeline: str | None, why: str) -> dict[str, Any]:
        return self._call("POST", "/models/reset", {"pipeline": pipeline, "why": why})

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return dict(json.loads(resp.read()))
        except urllib.error.HTTPError as exc:
            try:
                reason = json.loads(exc.read()).get("error", "")
            except ValueError:
                reason = exc.reason
            hint = {
                401: " Set RIVERLINE_ADMIN_TOKEN to a token listed in the worker's "
                "RIVERLINE_ADMIN_TOKENS.",
                403: " Use a token with the operator role.",
            }.get(exc.code, "")
            raise AdminError(
                f"{method} {path} was refused ({exc.code}): {reason}.{hint}", exc.code
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise AdminError(
                f"no worker answers at {self.url} ({exc}). Start one with `riverline worker`, "
                "or set RIVERLINE_WEB_HOST / RIVERLINE_WEB_PORT to where it listens."
            ) from exc
