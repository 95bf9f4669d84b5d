"""Decoding raw events (JSON, Avro single-object, Confluent) and encoding Riverline's own.

Wire formats on ``P.raw`` are detected per message:

* ``C3 01`` + 8-byte little-endian CRC-64-AVRO fingerprint + body: Avro single-object.
* ``00`` + 4-byte big-endian Confluent schema id + body: Confluent framing; ids map to
  catalog versions through the Schema Registry, if the catalog has one, else through
  ``schemas/confluent-ids.toml``.
* anything else: a UTF-8 JSON object.

A value that starts with either Avro magic but is too short to hold its header is
``truncated`` (no JSON text starts with those bytes).

Every decoded record conforms to the subject's latest (reader) schema, fields in schema
order. **Logical types are returned as their underlying values**: ``timestamp-millis``
is an ``int`` of epoch milliseconds (UTC), ``timestamp-micros`` epoch microseconds,
``date`` days since the epoch, ``uuid`` a string, ``decimal`` raw bytes. Writers accept
those ints (and ``datetime`` objects, which fastavro converts).

Avro is untrusted input. Before fastavro reads a body, a validating walk over the bytes
(compiled once per writer schema) checks everything fastavro lets through: union and
enum indices in range, varints no longer than their type allows, booleans 0 or 1,
string/bytes/collection lengths within the remaining bytes, at most ``max_items``
values inside arrays and maps per message (so a few bytes cannot claim a billion
nulls), bounded nesting of recursive types, finite floats and doubles (on raw events;
optional for Riverline's own records), and that the body is consumed exactly. A
hostile message of ``max_bytes`` therefore costs bounded time and memory. The walk is
:mod:`~streams.serialization.avro_walk`; :mod:`~streams.serialization.avro_reader` runs
it and fastavro for one writer and reader version.

JSON is validated and coerced against the latest schema: see :class:`EventDecoder` (the
coercers are :mod:`~streams.serialization.json_coercion`).
Whatever JSON admits but Avro or UTF-8 cannot hold is refused there: a string with a lone
UTF-16 surrogate (``"\\ud800"``), more array and map values than ``max_items``, recursive
types nested deeper than Avro reading allows. A decoded record therefore re-encodes, and
reads back equal, under the same bounds.

A decoder that knows the pipeline's id, key and time fields also refuses an event id or
partitioning key longer than ``max_id_bytes`` of UTF-8 (they travel in headers and keys
of every output), and an event time before 1970 or further ahead of the ingest time than
``max_event_time_ahead`` (one such event would move every watermark into the future).

Decode failures raise :class:`~streams.errors.DecodeError` with a stable ``reason``:
``empty``, ``too_large``, ``bad_key``, ``not_json``, ``not_object``, ``missing_field``,
``wrong_type``, ``non_finite``, ``bad_enum``, ``bad_timestamp``, ``unknown_fingerprint``,
``unknown_confluent_id``, ``truncated``, ``trailing_bytes``, ``bad_union_index``,
``bad_enum_index``, ``oversized_collection``, ``invalid_avro``, ``bad_string``,
``id_too_long``, ``bad_event_time``, ``schema_not_in_catalog``,
``schema_registry_unavailable``.

Riverline's own records (:func:`decode_single_object`) are read in either Avro framing,
told apart by the first byte, so its readers follow ``RIVERLINE_OUTPUT_FORMAT``.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any, Final

from fastavro import schemaless_writer
from fastavro.validation import ValidationError
from fastavro.validation import validate as _validate_record

from streams.errors import ConfigError, DecodeError, RiverlineError
from streams.serialization.avro_reader import AvroReader
from streams.serialization.avro_walk import field_error
from streams.serialization.avro_writer import AvroWriter, Unsupported, compile_writer
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.json_coercion import (
    DEFAULT_MAX_ITEMS,
    JsonCompiler,
    check_text,
    describe_value,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENT_TIME_AHEAD",
    "DEFAULT_MAX_ID_BYTES",
    "DEFAULT_MAX_ITEMS",
    "REASONS",
    "SINGLE_OBJECT_MAGIC",
    "DecodedEvent",
    "EncodeError",
    "EventDecoder",
    "decode_single_object",
    "encode_confluent",
    "encode_framed",
    "encode_single_object",
]

#: Every DecodeError reason this module raises (stable: dead-letter reasons, metric labels).
REASONS: Final = (
    "empty",
    "too_large",
    "bad_key",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "non_finite",
    "bad_enum",
    "bad_timestamp",
    "unknown_fingerprint",
    "unknown_confluent_id",
    "truncated",
    "trailing_bytes",
    "bad_union_index",
    "bad_enum_index",
    "oversized_collection",
    "invalid_avro",
    "bad_string",
    "id_too_long",
    "bad_event_time",
    "schema_not_in_catalog",
    "schema_registry_unavailable",
)

SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
DEFAULT_MAX_BYTES: Final = 1 << 20
#: UTF-8 bytes allowed in an event id or partitioning key (``Settings.max_id_bytes``).
DEFAULT_MAX_ID_BYTES: Final = 1024
#: Seconds an event time may be ahead of the ingest time (``Settings.max_event_time_ahead``).
DEFAULT_MAX_EVENT_TIME_AHEAD: Final = 86_400.0

_SINGLE_OBJECT_HEADER = 10
_CONFLUENT_HEADER = 5
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The last millisecond of 9999-12-31, the latest time a datetime holds.
_MAX_EVENT_MS: Final = 253_402_300_799_999
_MICROS = frozenset(("timestamp-micros", "local-timestamp-micros"))


class EncodeError(RiverlineError):
    """A record could not be encoded with the given schema (a bug in the caller's data)."""


@dataclass(frozen=True)
class DecodedEvent:
    """A raw event after validation.

    ``record`` conforms to the subject's latest schema (fields in schema order, logical
    types as plain ints); ``writer`` is the version the producer wrote with (the latest
    for JSON); ``ignored`` names top-level JSON keys the schema does not know (dropped,
    listed so the caller can count them; always empty for Avro); ``event_ms`` is the
    checked event time in epoch milliseconds when the decoder knows the time field
    (``timestamp-micros`` converted), else None.
    """

    record: dict[str, Any]
    writer: SchemaVersion
    wire_format: str
    ignored: tuple[str, ...] = ()
    event_ms: int | None = None


def _is_number(schema: Any) -> bool:
    """Whether a field type (or a branch of its union) holds numbers."""
    if isinstance(schema, list):
        return any(_is_number(b) for b in schema)
    if isinstance(schema, dict):
        schema = schema.get("type")
    return schema in ("int", "long", "float", "double")


def _is_micros(schema: Any) -> bool:
    """Whether a field type (or a branch of its union) counts microseconds."""
    if isinstance(schema, list):
        return any(_is_micros(b) for b in schema)
    return isinstance(schema, dict) and schema.get("logicalType") in _MICROS


def _iso(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC where a datetime can hold them."""
    if 0 <= ms <= _MAX_EVENT_MS:
        return (_EPOCH + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
    return f"{ms} ms"


class EventDecoder:
    """Decodes the raw messages of one subject into records of its latest schema.

    JSON objects are coerced: ``timestamp-millis`` fields take epoch-ms integers or
    ISO-8601 strings (naive times are UTC); enums take a valid symbol; nullable unions
    take null or the value (Avro's ``{"type": value}`` form is accepted too); a missing
    field gets its default or is ``missing_field``; ints accept integral floats
    (``3.0``); floats and doubles accept ints (``float`` fields are rounded to 32 bits,
    as Avro stores them); NaN and infinities are ``non_finite``; strings (and map keys)
    UTF-8 cannot encode are ``bad_string``. Unknown top-level keys are dropped and listed
    in :attr:`DecodedEvent.ignored`.

    Avro messages are decoded with the writer version their fingerprint or Confluent id
    names (which must belong to this subject) and resolved into the latest version.
    ``max_items`` bounds the values inside arrays and maps of one message (JSON too).

    Parameters
    ----------
    catalog, subject
        Where the schemas come from, and whose events these are.
    max_bytes, max_items
        Bounds on one message: its value's size and the values in its arrays and maps.
    id_field, key_field, time_field
        The pipeline's event id, partitioning key and event time fields (``""``: not
        checked). The id and key, as text, may take at most ``max_id_bytes`` of UTF-8
        (``id_too_long``). The event time must be epoch milliseconds (or microseconds,
        for ``timestamp-micros``) from 1970 on, and at most ``max_event_time_ahead``
        seconds ahead of the ``now_ms`` given to :meth:`decode` (``bad_event_time``).
        Each must name a field of the latest schema.
    """

    def __init__(
        self,
        catalog: SchemaCatalog,
        subject: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_items: int = DEFAULT_MAX_ITEMS,
        id_field: str = "",
        key_field: str = "",
        time_field: str = "",
        max_id_bytes: int = DEFAULT_MAX_ID_BYTES,
        max_event_time_ahead: float = DEFAULT_MAX_EVENT_TIME_AHEAD,
    ) -> None:
        self.catalog = catalog
        self.subject = subject
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.latest = catalog.latest(subject)
        compiler = JsonCompiler(self.latest.parsed.get("__named_schemas", {}), max_items)
        self._coerce = compiler.compile(self.latest.parsed)
        self._budget = compiler.budget
        self._fields = frozenset(self.latest.field_names)
        self._by_fp: dict[bytes, AvroReader] = {}
        self._by_id: dict[int, AvroReader] = {}
        self._check_arguments(
            {"id_field": id_field, "key_field": key_field, "time_field": time_field},
            max_id_bytes,
            max_event_time_ahead,
        )
        self.max_id_bytes = max_id_bytes
        self.max_event_time_ahead = max_event_time_ahead
        #: (field, what it is) of the fields whose text length is bounded.
        self._ids = tuple(
            (name, role)
            for name, role in ((id_field, "event id"), (key_field, "partitioning key"))
            if name and not (role == "partitioning key" and name == id_field)
        )
        self._id_chars = max_id_bytes // 4  # strings this long cannot exceed the bound
        self.time_field = time_field
        self._time_divisor = self._time_divisor_of(time_field) if time_field else 1
        self._ahead_ms = int(max_event_time_ahead * 1000)
        self._checks = bool(self._ids or time_field)

    def _check_arguments(
        self, fields: dict[str, str], max_id_bytes: int, max_event_time_ahead: float
    ) -> None:
        for role, name in fields.items():
            if name and name not in self._fields:
                raise ConfigError(
                    f"{role} {name!r} is not a field of {self.latest.label}; fix the "
                    f"pipeline spec or the schema"
                )
        if max_id_bytes < 1:
            raise ConfigError(
                f"max_id_bytes must be at least 1, not {max_id_bytes}; fix RIVERLINE_MAX_ID_BYTES"
            )
        if not 0 <= max_event_time_ahead < math.inf:
            raise ConfigError(
                f"max_event_time_ahead must be a finite number of seconds >= 0, not "
                f"{max_event_time_ahead}; fix RIVERLINE_MAX_EVENT_TIME_AHEAD"
            )

    def _time_divisor_of(self, time_field: str) -> int:
        """What divides the time field's value into epoch milliseconds (1 or 1000)."""
        ftype = next(f["type"] for f in self.latest.parsed["fields"] if f["name"] == time_field)
        if not _is_number(ftype):
            raise ConfigError(
                f"time_field {time_field!r} of {self.latest.label} is not a number; make "
                f'it epoch milliseconds, {{"type": "long", "logicalType": "timestamp-millis"}}'
            )
        return 1000 if _is_micros(ftype) else 1

    def decode(
        self, key: bytes | None, value: bytes | None, *, now_ms: int | None = None
    ) -> DecodedEvent:
        """Validate one raw message; raises DecodeError (see the module docstring).

        ``now_ms`` is the ingest time (epoch ms) the event time may not run ahead of by
        more than ``max_event_time_ahead``; None checks only that the event time is from
        1970 through 9999.
        """
        value = self._check_envelope(key, value)
        record, writer, wire_format, ignored = self._read(value)
        if not self._checks:
            return DecodedEvent(record, writer, wire_format, ignored)
        for name, role in self._ids:
            self._check_id(record[name], name, role)
        event_ms = self._event_ms(record[self.time_field], now_ms) if self.time_field else None
        return DecodedEvent(record, writer, wire_format, ignored, event_ms)

    def _check_envelope(self, key: bytes | None, value: bytes | None) -> bytes:
        """The value as bytes, once it is known to be there, small enough and keyed in UTF-8."""
        if not value:
            raise DecodeError("empty", "the message has no value (empty or null)")
        n = len(value)
        if n > self.max_bytes:
            raise DecodeError(
                "too_large",
                f"the value is {n} bytes, over the limit of {self.max_bytes} "
                f"(RIVERLINE_MAX_MESSAGE_BYTES)",
            )
        if key is not None:
            try:
                key.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError(
                    "bad_key", f"the key is not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from exc
        return value if type(value) is bytes else bytes(value)

    def _read(self, value: bytes) -> tuple[dict[str, Any], SchemaVersion, str, tuple[str, ...]]:
        """(record, writer version, wire format, ignored keys) of a value, by its framing."""
        n = len(value)
        first = value[0]
        if first == 0xC3 and n >= 2 and value[1] == 0x01:
            if n < _SINGLE_OBJECT_HEADER:
                raise DecodeError(
                    "truncated",
                    f"Avro single-object message of {n} bytes is shorter than its "
                    f"{_SINGLE_OBJECT_HEADER}-byte header",
                )
            fp = value[2:_SINGLE_OBJECT_HEADER]
            reader = self._by_fp.get(fp) or self._fingerprint_reader(fp)
            return (
                reader.read(value, _SINGLE_OBJECT_HEADER),
                reader.writer,
                "avro-single-object",
                (),
            )
        if first == 0:
            if n < _CONFLUENT_HEADER:
                raise DecodeError(
                    "truncated",
                    f"Confluent-framed message of {n} bytes is shorter than its "
                    f"{_CONFLUENT_HEADER}-byte header",
                )
            schema_id = int.from_bytes(value[1:_CONFLUENT_HEADER], "big")
            reader = self._by_id.get(schema_id) or self._confluent_reader(schema_id)
            return reader.read(value, _CONFLUENT_HEADER), reader.writer, "confluent", ()
        record, ignored = self._decode_json(value)
        return record, self.latest, "json", ignored

    def _decode_json(self, value: bytes) -> tuple[dict[str, Any], tuple[str, ...]]:
        try:
            obj = json.loads(value.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise DecodeError(
                "not_json", f"the value is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        except RecursionError as exc:
            raise DecodeError(
                "not_json", "the value is not valid JSON: nested too deeply to parse"
            ) from exc
        except ValueError as exc:  # syntax, or an integer of more digits than Python reads
            raise DecodeError("not_json", f"the value is not valid JSON: {exc}") from exc
        if type(obj) is not dict:
            raise DecodeError(
                "not_object",
                f"expected a JSON object with the fields of {self.latest.label}, got "
                f"{describe_value(obj)}",
            )
        self._budget[0] = self.max_items
        try:
            record = self._coerce(obj, "")
        except RecursionError as exc:  # only recursive schemas can nest this deep
            raise DecodeError("wrong_type", "the object is nested too deeply") from exc
        ignored: tuple[str, ...] = ()
        if len(obj) != len(record) or not self._fields.issuperset(obj):
            ignored = tuple(k for k in obj if k not in self._fields)
            for k in ignored:
                if not k.isascii():
                    check_text(k, "", f"the unknown key {k!r}")
        return record, ignored

    def _check_id(self, value: Any, name: str, role: str) -> None:
        if type(value) is str:
            if len(value) <= self._id_chars:
                return
            size = len(value.encode("utf-8", "surrogatepass"))
        else:  # what ingestion makes of it: str(value)
            size = len(str(value).encode("utf-8", "surrogatepass"))
        if size > self.max_id_bytes:
            raise field_error(
                "id_too_long",
                name,
                f"the {role} is {size} bytes of UTF-8, over the limit of {self.max_id_bytes} "
                f"(RIVERLINE_MAX_ID_BYTES); it travels in the key and headers of every output",
            )

    def _event_ms(self, value: Any, now_ms: int | None) -> int:
        """The event time in epoch ms, or ``bad_event_time``."""
        name = self.time_field
        kind = type(value)
        if kind is int:
            ms = value // self._time_divisor
        elif kind is float and math.isfinite(value):
            ms = int(value) // self._time_divisor
        else:
            raise field_error(
                "bad_event_time", name, f"expected epoch milliseconds, got {describe_value(value)}"
            )
        if ms < 0:
            raise field_error(
                "bad_event_time",
                name,
                f"{ms} ms is before 1970-01-01T00:00:00Z; event times are epoch milliseconds",
            )
        if now_ms is not None and ms > now_ms + self._ahead_ms:
            raise field_error(
                "bad_event_time",
                name,
                f"{_iso(ms)} is {(ms - now_ms) / 1000:.0f} s ahead of the ingest time "
                f"{_iso(now_ms)}, more than the {self.max_event_time_ahead:g} s allowed "
                f"(RIVERLINE_MAX_EVENT_TIME_AHEAD)",
            )
        if ms > _MAX_EVENT_MS:
            raise field_error("bad_event_time", name, f"{ms} ms is after the year 9999")
        return ms

    def _fingerprint_reader(self, fp: bytes) -> AvroReader:
        writer = self.catalog.by_fingerprint(fp, self.subject)
        if writer is None:
            other = self.catalog.by_fingerprint(fp)
            where = f" (it is {other.label}, not a version of {self.subject!r})" if other else ""
            raise DecodeError(
                "unknown_fingerprint",
                f"schema fingerprint {fp.hex()} is not in the catalog for subject "
                f"{self.subject!r}{where}; add the producer's schema as "
                f"schemas/{self.subject}/v<N>.avsc",
            )
        reader = AvroReader(writer, self.latest, require_finite=True, max_items=self.max_items)
        self._by_fp[fp] = reader
        return reader

    def _confluent_reader(self, schema_id: int) -> AvroReader:
        if self.catalog.registry is not None:
            resolved = self.catalog.resolve_confluent_id(schema_id, self.subject)
            return self._confluent_cached(schema_id, resolved)
        writer = self.catalog.by_confluent_id(schema_id)
        if writer is None or writer.subject != self.subject:
            where = f" (it maps to {writer.label}, not {self.subject!r})" if writer else ""
            raise DecodeError(
                "unknown_confluent_id",
                f"Confluent schema id {schema_id} is not mapped to subject "
                f"{self.subject!r}{where}; add it to schemas/confluent-ids.toml",
            )
        return self._confluent_cached(schema_id, writer)

    def _confluent_cached(self, schema_id: int, writer: SchemaVersion) -> AvroReader:
        reader = AvroReader(writer, self.latest, require_finite=True, max_items=self.max_items)
        self._by_id[schema_id] = reader
        return reader


_READERS: weakref.WeakKeyDictionary[SchemaCatalog, dict[Any, AvroReader]] = (
    weakref.WeakKeyDictionary()
)


def decode_single_object(
    catalog: SchemaCatalog,
    data: bytes,
    reader: SchemaVersion | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
    require_finite: bool = False,
    signed: bool = False,
) -> tuple[SchemaVersion, dict[str, Any]]:
    """Decode an Avro single-object (or Confluent-framed) message; returns (writer, record).

    For Riverline's own topics; a value starting with ``00`` is Confluent framing, its id
    resolved by the catalog (:meth:`SchemaCatalog.resolve_confluent_id`). The record is
    resolved into ``reader`` (default: the latest version of the writer's subject).
    Bounded and checked exactly as :class:`EventDecoder` checks raw Avro, except that NaN
    and infinities are returned as written unless ``require_finite`` (what Riverline
    wrote, it reads back faithfully; finiteness of model inputs is enforced where events
    enter, on ``P.raw``). ``signed=True``: the caller verified the record's ``rl.mac``, so
    Riverline wrote these bytes and the walk that bounds hostile sizes is skipped (fastavro
    still has to consume exactly the body; ``require_finite`` keeps the walk).
    """
    if not data:
        raise DecodeError("empty", "the message has no value (empty or null)")
    if len(data) > max_bytes:
        raise DecodeError("too_large", f"the value is {len(data)} bytes, over {max_bytes}")
    if type(data) is not bytes:
        data = bytes(data)
    confluent = data[0] == 0
    if not (
        confluent or data.startswith(SINGLE_OBJECT_MAGIC) or SINGLE_OBJECT_MAGIC.startswith(data)
    ):
        raise DecodeError(
            "invalid_avro", "not Avro single-object encoding (C3 01) nor Confluent framing (00)"
        )
    header = _CONFLUENT_HEADER if confluent else _SINGLE_OBJECT_HEADER
    if len(data) < header:
        raise DecodeError(
            "truncated", f"Avro message of {len(data)} bytes is shorter than its header"
        )
    ident = data[:header]
    cache = _READERS.setdefault(catalog, {})
    key = (ident, None if reader is None else reader.label, max_items, require_finite)
    avro = cache.get(key)
    if avro is None:
        writer = _writer_of(catalog, ident, reader)
        target = reader if reader is not None else catalog.latest(writer.subject)
        avro = AvroReader(writer, target, require_finite=require_finite, max_items=max_items)
        cache[key] = avro
    return avro.writer, avro.read(data, header, bounded=require_finite or not signed)


def _writer_of(catalog: SchemaCatalog, ident: bytes, reader: SchemaVersion | None) -> SchemaVersion:
    """The writer version a message header names (reader's subject first)."""
    subject = reader.subject if reader is not None else None
    if ident[0] == 0:
        return catalog.resolve_confluent_id(int.from_bytes(ident[1:], "big"), subject)
    fp = ident[2:]
    writer = (subject and catalog.by_fingerprint(fp, subject)) or catalog.by_fingerprint(fp)
    if writer is None:
        raise DecodeError(
            "unknown_fingerprint", f"schema fingerprint {fp.hex()} is not in the catalog"
        )
    return writer


#: Compiled writers by schema version; ``None`` where fastavro writes every record.
_WRITERS: dict[SchemaVersion, AvroWriter | None] = {}


def _encode(header: bytes, sv: SchemaVersion, record: dict[str, Any], check: bool) -> bytes:
    """``header`` + the Avro body of ``record``: compiled where it can, else fastavro's."""
    try:
        if check:
            _validate_record(record, sv.parsed, raise_errors=True)
        try:
            writer = _WRITERS[sv]
        except KeyError:
            writer = _WRITERS[sv] = compile_writer(sv.parsed)
        if writer is not None:
            out = bytearray(header)
            try:
                writer.write(record, out)
                return bytes(out)
            except Unsupported:
                pass  # a value it does not handle; fastavro writes it (or says what is wrong)
        buf = BytesIO()
        buf.write(header)
        schemaless_writer(buf, sv.parsed, record)
        return buf.getvalue()
    except (ValidationError, ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        raise EncodeError(f"cannot encode record as {sv.label}: {exc}") from exc


def encode_single_object(
    sv: SchemaVersion, record: dict[str, Any], *, validate: bool = False
) -> bytes:
    """``C3 01`` + fingerprint + Avro body of ``record`` (timestamps as ints or datetimes).

    fastavro's writer coerces some wrong values silently (a float into an int field);
    pass ``validate=True`` to check the record first (slower). The body is the one
    fastavro writes, by a writer compiled for the schema (:mod:`streams.serialization.avro_writer`).
    """
    return _encode(SINGLE_OBJECT_MAGIC + sv.fingerprint, sv, record, validate)


def encode_framed(
    header: bytes, sv: SchemaVersion, record: dict[str, Any], *, validate: bool = False
) -> bytes:
    """``header`` (from :meth:`SchemaCatalog.output_header`) + the Avro body of ``record``."""
    return _encode(header, sv, record, validate)


def encode_confluent(
    schema_id: int, sv: SchemaVersion, record: dict[str, Any], *, validate: bool = False
) -> bytes:
    """``00`` + 4-byte big-endian schema id + Avro body (Confluent wire format)."""
    if not 0 <= schema_id < 2**32:
        raise EncodeError(f"Confluent schema id {schema_id} does not fit in 4 bytes")
    return _encode(b"\x00" + schema_id.to_bytes(4, "big"), sv, record, validate)
