"""Record MACs: every part of a record is covered, and only the right key verifies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import ConfigError
from streams.settings import DEV_SIGNING_KEY, Settings
from streams.trust.records import MAC_HEADER, IntegrityError, RecordSigner

SIGNER = RecordSigner(b"a key of this deployment")
HEADERS = [("rl.event_id", b"e1"), ("rl.source", b"p.raw:0:7")]


def _signed() -> list[tuple[str, bytes]]:
    return SIGNER.sign("p.predictions", b"k", b"value", HEADERS)


@pytest.mark.parametrize(
    ("topic", "key", "value", "headers"),
    [
        ("p.features", b"k", b"value", HEADERS),
        ("p.predictions", b"K", b"value", HEADERS),
        ("p.predictions", None, b"value", HEADERS),
        ("p.predictions", b"k", b"valuE", HEADERS),
        ("p.predictions", b"k", None, HEADERS),
        ("p.predictions", b"k", b"value", [("rl.event_id", b"e2"), ("rl.source", b"p.raw:0:7")]),
        ("p.predictions", b"k", b"value", HEADERS[:1]),
        ("p.predictions", b"k", b"value", [*HEADERS, ("rl.model", b"m@1")]),
        ("p.predictions", b"k", b"value", HEADERS[::-1]),
    ],
)
def test_any_change_to_the_record_fails(
    topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
) -> None:
    mac = [h for h in _signed() if h[0] == MAC_HEADER]
    assert not SIGNER.verify(topic, key, value, [*headers, *mac])


def test_the_signed_record_verifies_and_only_under_its_key() -> None:
    assert SIGNER.verify("p.predictions", b"k", b"value", _signed())
    assert not RecordSigner(b"another key").verify("p.predictions", b"k", b"value", _signed())


def test_no_mac_or_two_macs_fail() -> None:
    assert not SIGNER.verify("p.predictions", b"k", b"value", HEADERS)
    twice = [*_signed(), _signed()[-1]]
    assert not SIGNER.verify("p.predictions", b"k", b"value", twice)


def test_signing_again_replaces_the_mac() -> None:
    again = SIGNER.sign("p.predictions", b"k", b"value", _signed())
    assert again == _signed()


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.binary(max_size=40),
    st.binary(max_size=40),
    st.lists(st.tuples(st.text(max_size=8), st.binary(max_size=8)), max_size=4),
)
def test_fields_cannot_be_shifted_between_each_other(
    key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    """Moving bytes from the key into the value (or a header) changes the MAC."""
    headers = [(n, v) for n, v in headers if n != MAC_HEADER]
    signed = SIGNER.sign("t", key, value, headers)
    if key:
        assert not SIGNER.verify("t", key[:-1], key[-1:] + value, signed)
    assert SIGNER.verify("t", key, value, signed)


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(IntegrityError):
        RecordSigner(b"")


def test_the_built_in_key_needs_development_mode() -> None:
    with pytest.raises(ConfigError, match=r"RIVERLINE_SIGNING_KEY.*RIVERLINE_DEV_MODE=1"):
        Settings.from_env(signing_key=DEV_SIGNING_KEY, dev_mode=False).signing_key_bytes()
    dev = Settings.from_env(signing_key=DEV_SIGNING_KEY, dev_mode=True)
    assert dev.signing_key_bytes() == DEV_SIGNING_KEY.encode()
    own = Settings.from_env(signing_key="0f" * 32, dev_mode=False)
    assert own.signing_key_bytes() == b"0f" * 32


def test_the_mac_is_hmac_sha256_of_the_documented_layout_under_the_derived_key() -> None:
    # The layout is a format: records already on the topics must keep verifying.
    import hashlib
    import hmac
    import struct

    headers = [*HEADERS, ("rl.model", b""), ("ü", b"\x00\xff")]
    fields = [b"p.predictions", b"", b"value"]
    lengths = [13, -1, 5]
    for name, data in headers:
        fields += [name.encode(), data]
        lengths += [len(name.encode()), len(data)]
    key = hmac.digest(b"a key of this deployment", b"riverline/record-mac/v1", "sha256")
    layout = struct.pack(f">{len(lengths)}i", *lengths) + b"".join(fields)
    expected = hmac.new(key, layout, hashlib.sha256).hexdigest().encode()
    assert SIGNER.mac("p.predictions", None, b"value", [*headers, (MAC_HEADER, b"x")]) == expected
    assert SIGNER.sign("p.predictions", None, b"value", headers)[-1] == (MAC_HEADER, expected)
