from __future__ import annotations

import pytest

from streams.errors import ConfigError
from streams.trust.access import AccessPolicy, token_digest

POLICY = AccessPolicy.parse(
    f"alice:operator:{token_digest('op-token')},bob:viewer:{token_digest('view-token')}"
)


@pytest.mark.parametrize(
    ("header", "role", "status", "principal"),
    [
        (None, "viewer", 401, ""),
        ("Basic abc", "viewer", 401, ""),
        ("Bearer nope", "viewer", 401, ""),
        ("Bearer view-token", "viewer", 200, "bob"),
        ("Bearer view-token", "operator", 403, "bob"),
        ("Bearer op-token", "operator", 200, "alice"),
        ("Bearer op-token", "viewer", 200, "alice"),
    ],
)
def test_tokens_and_roles(header, role, status, principal) -> None:
    decision = POLICY.check(header, role)
    assert (decision.status, decision.principal) == (status, principal)


def test_a_malformed_entry_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match="name:role:sha256hex"):
        AccessPolicy.parse("alice:root:abc")


def test_no_tokens_configured_lets_nobody_in() -> None:
    assert AccessPolicy.parse("").check("Bearer anything", "viewer").status == 401
