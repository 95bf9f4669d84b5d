"""Record integrity: a keyed MAC on every record Riverline writes to Kafka.

Riverline reads some of its own topics back: checkpoints when a worker starts, its
outputs in the offline sink, dead letters and alerts on the status page, predictions in
``riverline tail`` and the demo's report. Anyone who can write to those topics could
otherwise feed it state or history. So every record Riverline writes carries a header
``rl.mac``: HMAC-SHA256, under a key derived from ``RIVERLINE_SIGNING_KEY``, over the
whole record (topic, key, value and every other header, in order). A reader checks it
before it parses a byte of the payload and treats a record that fails like a record that
is not there.

The derived key is not the signing key itself, so a record MAC can never stand in for a
model artifact's signature (:mod:`streams.models.registry`) or the other way round.

Examples
--------
>>> signer = RecordSigner(b"a secret")
>>> headers = signer.sign("t", b"k", b"v", [("rl.event_id", b"e1")])
>>> [name for name, _ in headers]
['rl.event_id', 'rl.mac']
>>> signer.verify("t", b"k", b"v", headers)
True
>>> signer.verify("t", b"k", b"V", headers)   # the value changed
False
>>> signer.verify("other", b"k", b"v", headers)   # moved to another topic
False
>>> RecordSigner(b"another secret").verify("t", b"k", b"v", headers)
False
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence

from streams.errors import RiverlineError

__all__ = ["MAC_HEADER", "IntegrityError", "RecordSigner"]

#: The header that carries a record's MAC (hex).
MAC_HEADER = "rl.mac"
_MAC_HEADER_BYTES = MAC_HEADER.encode()
#: What the record key is derived for: a new purpose (or layout) gets a new label.
_PURPOSE = b"riverline/record-mac/v1"
#: SHA-256's block size: HMAC pads its key to it.
_BLOCK = 64


class IntegrityError(RiverlineError):
    """A record read back from a Riverline topic is unsigned or its MAC does not match."""


def _message(
    topic: str, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]
) -> bytes:
    """The bytes a MAC covers: every field's length (-1 for none), then the fields.

    The lengths come first, all in one ``struct`` call, so no two different records
    give the same bytes. ``headers`` must not hold ``rl.mac``.
    """
    fields: list[bytes] = [topic.encode(), key or b"", value or b""]
    lengths = [len(fields[0]), -1 if key is None else len(fields[1])]
    lengths.append(-1 if value is None else len(fields[2]))
    for name, data in headers:
        encoded = name.encode()
        fields.append(encoded)
        fields.append(data)
        lengths.append(len(encoded))
        lengths.append(len(data))
    return struct.pack(f">{len(lengths)}i", *lengths) + b"".join(fields)


class RecordSigner:
    """Signs and verifies whole Kafka records with a key derived from the signing key."""

    def __init__(self, signing_key: bytes) -> None:
        if not signing_key:
            raise IntegrityError("the signing key is empty; set RIVERLINE_SIGNING_KEY.")
        # HMAC-SHA256 (RFC 2104) from its two keyed hash states, keyed once: each MAC
        # continues copies of them, fewer calls per record than hmac.HMAC.copy().
        key = hmac.digest(signing_key, _PURPOSE, "sha256").ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def _mac(self, message: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest().encode()

    def mac(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes]],
    ) -> bytes:
        """The hex MAC of a record; ``rl.mac`` headers among ``headers`` are left out."""
        kept = ((name, data) for name, data in headers if name != MAC_HEADER)
        return self._mac(_message(topic, key, value, kept))

    def sign(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> list[tuple[str, bytes]]:
        """``headers`` with the record's ``rl.mac`` appended (any earlier one dropped)."""
        kept = [(name, data) for name, data in headers if name != MAC_HEADER]
        kept.append((MAC_HEADER, self._mac(_message(topic, key, value, kept))))
        return kept

    def verify(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]],
    ) -> bool:
        """True if the record carries exactly one ``rl.mac`` and it matches."""
        found: list[bytes] = []
        rest: list[tuple[str, bytes]] = []
        for name, data in headers:
            if name == MAC_HEADER:
                found.append(data or b"")
            else:
                rest.append((name, data or b""))
        if len(found) != 1:
            return False
        return hmac.compare_digest(found[0], self._mac(_message(topic, key, value, rest)))
