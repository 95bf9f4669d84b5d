"""Lineage: the headers every message Riverline writes carries.

A prediction can be traced to its raw offset, writer schema, feature set and model from
these alone; the prediction record repeats them as fields for header-less consumers.

Riverline's headers are those named ``rl.*``. Producers cannot be trusted with them:
:func:`untrusted_headers` renames the ones a message arrives with, and
:func:`lineage_headers` is the one way to read them back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "EVENT_ID",
    "EVENT_TS",
    "FEATURES",
    "HEADERS",
    "INGEST_TS",
    "MODEL",
    "PIPELINE",
    "PREFIX",
    "RAW_TS",
    "SCHEMA",
    "SOURCE",
    "UNTRUSTED",
    "Lineage",
    "lineage_headers",
    "untrusted_headers",
]

#: The prefix of every header Riverline writes.
PREFIX = "rl."
#: What :func:`untrusted_headers` puts before a producer's ``rl.*`` header name.
UNTRUSTED = "untrusted."

EVENT_ID = "rl.event_id"
SCHEMA = "rl.schema"
SOURCE = "rl.source"
FEATURES = "rl.features"
MODEL = "rl.model"
PIPELINE = "rl.pipeline"
EVENT_TS = "rl.event_ts"
INGEST_TS = "rl.ingest_ts"
#: Kafka timestamp of the raw message (the producer's create time), for end-to-end latency.
RAW_TS = "rl.raw_ts"

_new = object.__new__

HEADERS = (EVENT_ID, SCHEMA, SOURCE, FEATURES, MODEL, PIPELINE, EVENT_TS, INGEST_TS)


#: The record MAC header (streams.trust.records): not lineage.
_MAC = "rl.mac"


@dataclass(frozen=True)
class Lineage:
    """Where an event came from and what touched it. Timestamps are epoch milliseconds."""

    event_id: str
    schema: str
    source: str
    pipeline: str
    event_ts: int
    ingest_ts: int
    raw_ts: int
    features: str = ""
    model: str = ""

    @classmethod
    def of(
        cls,
        event_id: str,
        schema: str,
        source: str,
        pipeline: str,
        event_ts: int,
        ingest_ts: int,
        raw_ts: int,
    ) -> Lineage:
        """A new event's lineage (no feature set or model yet), as the constructor makes
        it, without the frozen constructor's ``object.__setattr__`` per field: once per
        event."""
        new = _new(cls)
        new.__dict__.update(
            event_id=event_id,
            schema=schema,
            source=source,
            pipeline=pipeline,
            event_ts=event_ts,
            ingest_ts=ingest_ts,
            raw_ts=raw_ts,
            features="",
            model="",
        )
        return new

    def with_features(self, label: str) -> Lineage:
        return self._with(label, self.model)

    def with_model(self, label: str) -> Lineage:
        return self._with(self.features, label)

    def _with(self, features: str, model: str) -> Lineage:
        # Twice per event: a copy of the fields, not the frozen constructor.
        new = _new(Lineage)
        fields = new.__dict__
        fields.update(self.__dict__)
        fields["features"] = features
        fields["model"] = model
        return new

    def to_headers(self) -> list[tuple[str, bytes]]:
        # An event's outputs share all but the feature set and model: those headers are
        # encoded once, kept beside the fields, and carried over by with_features/with_model.
        shared = self.__dict__.get("_encoded")
        if shared is None:
            shared = self.__dict__["_encoded"] = (
                (
                    (EVENT_ID, self.event_id.encode()),
                    (SCHEMA, self.schema.encode()),
                    (SOURCE, self.source.encode()),
                ),
                (
                    (PIPELINE, self.pipeline.encode()),
                    (EVENT_TS, str(self.event_ts).encode()),
                    (INGEST_TS, str(self.ingest_ts).encode()),
                    (RAW_TS, str(self.raw_ts).encode()),
                ),
            )
        return [
            *shared[0],
            (FEATURES, self.features.encode()),
            (MODEL, self.model.encode()),
            *shared[1],
        ]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes]]) -> Lineage:
        """Read lineage back; missing headers become empty strings or 0."""
        found = lineage_headers(headers)

        def ms(key: str) -> int:
            try:
                return int(found.get(key, "0"))
            except ValueError:
                return 0

        return cls(
            event_id=found.get(EVENT_ID, ""),
            schema=found.get(SCHEMA, ""),
            source=found.get(SOURCE, ""),
            pipeline=found.get(PIPELINE, ""),
            event_ts=ms(EVENT_TS),
            ingest_ts=ms(INGEST_TS),
            raw_ts=ms(RAW_TS),
            features=found.get(FEATURES, ""),
            model=found.get(MODEL, ""),
        )


_V = TypeVar("_V")


def untrusted_headers(headers: Iterable[tuple[str, _V]]) -> tuple[tuple[str, _V], ...]:
    """The headers of an incoming message with every ``rl.*`` name made ``untrusted.rl.*``.

    Only Riverline writes ``rl.*`` headers; one a producer sent could pass for lineage or
    for a dead letter's error headers. Renamed, it stays visible to whoever inspects the
    message but is never read as Riverline's. Names match ``rl.`` in any letter case;
    order and values are kept.

    Examples
    --------
    >>> untrusted_headers([("trace", b"t1"), ("rl.event_id", b"forged"), ("RL.x", b"")])
    (('trace', b't1'), ('untrusted.rl.event_id', b'forged'), ('untrusted.RL.x', b''))
    """
    return tuple(
        (UNTRUSTED + name, value) if name[:3].lower() == PREFIX else (name, value)
        for name, value in headers
    )


def lineage_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Riverline's ``rl.*`` headers by name: the one rule for reading them.

    Values are decoded as UTF-8, an invalid byte becoming U+FFFD, and a null value as
    ``""``. When a name occurs more than once, **the last one wins**: Riverline appends
    its own headers after those it carries over (a dead letter's ``rl.error.*`` after the
    original's), as Kafka's ``Headers.lastHeader`` reads them. Other headers, and the
    record's MAC ``rl.mac`` (:mod:`streams.trust.records`), are left out.

    Examples
    --------
    >>> lineage_headers([("rl.event_id", b"e1"), ("trace", b"t"), ("rl.event_id", b"e2"),
    ...                  ("rl.model", None)])
    {'rl.event_id': 'e2', 'rl.model': ''}
    """
    found: dict[str, str] = {}
    for name, value in headers or ():
        if name.startswith(PREFIX) and name != _MAC:
            found[name] = bytes(value).decode("utf-8", "replace") if value else ""
    return found
