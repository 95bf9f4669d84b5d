"""Who may do what on the worker's admin API: bearer tokens with a role.

Tokens are configured as sha256 digests (``RIVERLINE_ADMIN_TOKENS``:
``name:role:sha256hex,...``) so the settings never hold a usable secret. Roles are
ordered: a ``viewer`` may read, an ``operator`` may also promote, roll back and reset.
No token gives 401, a token without the role gives 403; every decision says why.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from streams.errors import ConfigError

__all__ = ["ROLES", "AccessDecision", "AccessPolicy", "token_digest"]

ROLES = ("viewer", "operator")


def token_digest(token: str) -> str:
    """The sha256 hex digest that ``RIVERLINE_ADMIN_TOKENS`` stores for a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AccessDecision:
    status: int  # 200, 401 or 403
    principal: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class _Grant:
    name: str
    role: str
    digest: str


class AccessPolicy:
    """Bearer-token checks for the admin API.

    Examples
    --------
    >>> policy = AccessPolicy.parse(f"ops:operator:{token_digest('s3cret')}")
    >>> policy.check("Bearer s3cret", "operator").status
    200
    >>> policy.check(None, "viewer").status
    401
    """

    def __init__(self, grants: list[_Grant]) -> None:
        self._grants = grants

    @classmethod
    def parse(cls, spec: str) -> AccessPolicy:
        grants = []
        for item in filter(None, (s.strip() for s in spec.split(","))):
            parts = item.split(":")
            if len(parts) != 3 or parts[1] not in ROLES or len(parts[2]) != 64:
                raise ConfigError(
                    f"RIVERLINE_ADMIN_TOKENS entry {parts[0]!r} must be name:role:sha256hex "
                    f"with role one of {', '.join(ROLES)}; make the digest with "
                    "`python -c \"import hashlib;print(hashlib.sha256(b'TOKEN').hexdigest())\"`."
                )
            grants.append(_Grant(parts[0], parts[1], parts[2].lower()))
        return cls(grants)

    def check(self, authorization: str | None, role: str) -> AccessDecision:
        """Decide on an ``Authorization`` header for an action that needs ``role``."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        if not authorization or not authorization.startswith("Bearer "):
            return AccessDecision(401, "", "a bearer token is required")
        digest = token_digest(authorization.removeprefix("Bearer ").strip())
        for grant in self._grants:
            if hmac.compare_digest(grant.digest, digest):
                if ROLES.index(grant.role) >= ROLES.index(role):
                    return AccessDecision(200, grant.name, f"{grant.role} may do this")
                return AccessDecision(
                    403, grant.name, f"{grant.name} is a {grant.role}; this needs {role}"
                )
        return AccessDecision(401, "", "the token is not recognised")
