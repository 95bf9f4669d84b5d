"""The schema catalog: every Avro schema Riverline knows, by subject/version, fingerprint and id.

Layout under the catalog root (``schemas/``)::

    schemas/<subject>/v<N>.avsc          versions 1..N of a subject's events (no gaps)
    schemas/<subject>/compat.toml        optional compatibility mode (streams.serialization.compat)
    schemas/riverline/<name>.avsc        Riverline's own record <name>: subject
                                         "riverline.<name>", version 1
    schemas/riverline/<name>.v<N>.avsc   version N of that record (when it evolves)
    schemas/riverline/compat.toml        optional modes for Riverline's own records
    schemas/confluent-ids.toml           Confluent Schema Registry id -> subject/version
                                         (deployments without a registry)

Riverline's own records always come from the schemas Riverline ships
(``streams.settings.bundled_path``), so a user's catalog folder needs no ``riverline/``.

``confluent-ids.toml`` is a list of tables, one per id::

    [[schema]]
    id = 1
    subject = "phishing"
    version = 1

Every schema must be a record. Its identity on the wire is the CRC-64-AVRO (Rabin)
fingerprint of its Parsing Canonical Form, stored as 8 little-endian bytes exactly as
the Avro single-object encoding (``C3 01`` + fingerprint) carries it; this matches
``fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")`` hex for hex. Two versions
whose only differences are docs, defaults, aliases or logical types share a
fingerprint; a lookup by fingerprint then answers the latest such version.

A catalog may be given a Schema Registry (:class:`RegistryIds`, built by
:func:`streams.serialization.registry.load_catalog`): Confluent ids are then resolved by
the registry, matched to a catalog version by fingerprint, and ``confluent-ids.toml`` is
not used (its ids would clash with the registry's).
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from streams.errors import ConfigError, DecodeError
from streams.settings import bundled_path

__all__ = [
    "CONFLUENT_IDS_FILE",
    "RIVERLINE_DIR",
    "CatalogError",
    "RegistryIds",
    "SchemaCatalog",
    "SchemaVersion",
    "compute_fingerprint",
]

#: Directory (under the catalog root) holding Riverline's own record schemas.
RIVERLINE_DIR = "riverline"
#: File (under the catalog root) mapping Confluent schema ids to catalog versions.
CONFLUENT_IDS_FILE = "confluent-ids.toml"

_VERSION_FILE = re.compile(r"v(?P<version>[1-9][0-9]*)\.avsc")
_RECORD_FILE = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\.v(?P<version>[1-9][0-9]*))?\.avsc")
_SUBJECT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


class CatalogError(ConfigError):
    """The schema catalog on disk is invalid, or a subject/version/record is not in it."""


def compute_fingerprint(canonical: str) -> bytes:
    """CRC-64-AVRO of a Parsing Canonical Form, as the 8 bytes single-object encoding stores.

    >>> compute_fingerprint('"null"').hex()
    '8a8f25cce724dd63'
    """
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaVersion:
    """One version of a subject's schema, parsed and fingerprinted.

    ``schema`` and ``parsed`` take part in equality but not in the hash (dicts are not
    hashable); equal versions still hash equal because the canonical form is hashed.
    """

    subject: str
    version: int
    schema: dict[str, Any] = field(hash=False, repr=False)
    """The schema as written in the ``.avsc`` file (plain JSON)."""
    parsed: Any = field(hash=False, repr=False)
    """``fastavro.parse_schema(schema)``: what fastavro readers and writers take."""
    canonical: str = field(repr=False)
    """Avro Parsing Canonical Form."""
    fingerprint: bytes = field(repr=False)
    """CRC-64-AVRO of ``canonical``, 8 bytes little-endian (as single-object encoding)."""

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as 16 hex digits, in wire (little-endian) byte order."""
        return self.fingerprint.hex()

    @functools.cached_property
    def label(self) -> str:
        """``subject/v<N>/<fingerprint_hex>``: the ``rl.schema`` lineage header value."""
        return f"{self.subject}/v{self.version}/{self.fingerprint_hex}"

    @property
    def field_names(self) -> list[str]:
        """Top-level field names, in schema order."""
        return [f["name"] for f in self.schema["fields"]]

    @classmethod
    def from_schema(cls, subject: str, version: int, schema: dict[str, Any]) -> SchemaVersion:
        """Parse, canonicalise and fingerprint a schema (raises CatalogError if invalid)."""
        where = f"{subject}/v{version}"
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise CatalogError(
                f"schema {where} must be an Avro record (a JSON object with "
                f'"type": "record"); fix the .avsc file'
            )
        try:
            parsed = fastavro.parse_schema(schema)
            canonical = to_parsing_canonical_form(schema)
        except Exception as exc:  # fastavro raises several unrelated types for bad schemas
            raise CatalogError(f"schema {where} is not a valid Avro schema: {exc}") from exc
        return cls(
            subject=subject,
            version=version,
            schema=schema,
            parsed=parsed,
            canonical=canonical,
            fingerprint=compute_fingerprint(canonical),
        )


class RegistryIds(Protocol):
    """What a catalog asks of a Schema Registry (:mod:`streams.serialization.registry`)."""

    frames_outputs: bool
    """Whether Riverline's own topics are written in Confluent framing."""

    def fingerprint(self, schema_id: int) -> bytes:
        """The fingerprint of a registered id's schema; raises DecodeError if unusable."""
        ...

    def register(self, subject: str, sv: SchemaVersion) -> int:
        """The id of ``sv`` registered under ``subject`` (registered now if need be)."""
        ...


class SchemaCatalog:
    """All schema versions, loaded once at start-up (see the module docstring for layout)."""

    def __init__(
        self,
        versions: Iterator[SchemaVersion] | list[SchemaVersion],
        confluent_ids: dict[int, tuple[str, int]] | None = None,
        root: Path | None = None,
        registry: RegistryIds | None = None,
    ) -> None:
        self.root = root
        """Directory the catalog was loaded from (None when built in memory)."""
        self.registry = registry
        """The Schema Registry that resolves Confluent ids, if any."""
        self._subjects: dict[str, dict[int, SchemaVersion]] = {}
        for sv in versions:
            per_subject = self._subjects.setdefault(sv.subject, {})
            if sv.version in per_subject:
                raise CatalogError(f"schema {sv.subject}/v{sv.version} is defined twice")
            per_subject[sv.version] = sv
        for subject, per_subject in self._subjects.items():
            expected = list(range(1, len(per_subject) + 1))
            if sorted(per_subject) != expected:
                raise CatalogError(
                    f"subject {subject!r} has versions {sorted(per_subject)}; versions must "
                    f"be numbered 1..N without gaps (rename the .avsc files)"
                )
        # Later versions win so that a fingerprint shared by several versions answers the
        # newest; subjects are walked in sorted order so the answer is deterministic.
        self._by_fp: dict[bytes, SchemaVersion] = {}
        self._by_subject_fp: dict[tuple[str, bytes], SchemaVersion] = {}
        for subject in sorted(self._subjects, reverse=True):
            for version in sorted(self._subjects[subject]):
                sv = self._subjects[subject][version]
                self._by_fp[sv.fingerprint] = sv
                self._by_subject_fp[(subject, sv.fingerprint)] = sv
        self._by_id: dict[int, SchemaVersion] = {}
        if registry is not None:
            confluent_ids = None
        for schema_id, (subject, version) in (confluent_ids or {}).items():
            try:
                self._by_id[schema_id] = self.get(subject, version)
            except CatalogError as exc:
                raise CatalogError(
                    f"{CONFLUENT_IDS_FILE}: id {schema_id} points at {subject}/v{version}, "
                    f"which is not in the catalog ({exc})"
                ) from exc

    @classmethod
    def load(cls, root: Path, registry: RegistryIds | None = None) -> SchemaCatalog:
        """Load every schema under ``root`` (layout in the module docstring), with
        Riverline's own records from the schemas it ships (a user's folder needs none)."""
        root = Path(root)
        if not root.is_dir():
            raise CatalogError(
                f"schema directory {root} does not exist; create it, or point "
                f"RIVERLINE_SCHEMAS_DIR (riverline --schemas-dir) at your schema folder"
            )
        versions: list[SchemaVersion] = []
        own_records: list[SchemaVersion] = []
        for directory in sorted(p for p in root.iterdir() if p.is_dir()):
            if directory.name.startswith((".", "_")):
                continue
            if directory.name == RIVERLINE_DIR:
                own_records = _load_records(directory)
            else:
                versions.extend(_load_subject(directory))
        shipped = _load_records(bundled_path("schemas") / RIVERLINE_DIR)
        versions.extend(_merge_records(shipped, own_records, root / RIVERLINE_DIR))
        ids = _load_confluent_ids(root / CONFLUENT_IDS_FILE)
        return cls(versions, ids, root=root, registry=registry)

    def subjects(self) -> list[str]:
        """Every subject, sorted (Riverline's own records are ``riverline.<name>``)."""
        return sorted(self._subjects)

    def versions(self, subject: str) -> list[SchemaVersion]:
        """All versions of a subject, oldest first."""
        per_subject = self._subject(subject)
        return [per_subject[v] for v in sorted(per_subject)]

    def latest(self, subject: str) -> SchemaVersion:
        """The newest version of a subject: the reader schema for everything on it."""
        per_subject = self._subject(subject)
        return per_subject[max(per_subject)]

    def get(self, subject: str, version: int) -> SchemaVersion:
        """One version of a subject."""
        per_subject = self._subject(subject)
        try:
            return per_subject[version]
        except KeyError as exc:
            raise CatalogError(
                f"subject {subject!r} has no version {version} (it has "
                f"{sorted(per_subject)}); add schemas/{subject}/v{version}.avsc"
            ) from exc

    def by_fingerprint(self, fp: bytes, subject: str | None = None) -> SchemaVersion | None:
        """The version with this 8-byte (little-endian) fingerprint, or None.

        With ``subject``, only that subject's versions are considered (identical schemas
        may be registered under two subjects).
        """
        if subject is not None:
            return self._by_subject_fp.get((subject, bytes(fp)))
        return self._by_fp.get(bytes(fp))

    def by_confluent_id(self, schema_id: int) -> SchemaVersion | None:
        """The version a Confluent Schema Registry id maps to (confluent-ids.toml), or None."""
        return self._by_id.get(schema_id)

    def confluent_id(self, sv: SchemaVersion) -> int | None:
        """The Confluent id mapped to a version, if any (the lowest when several are)."""
        ids = [i for i, v in self._by_id.items() if v == sv]
        return min(ids) if ids else None

    def resolve_confluent_id(self, schema_id: int, subject: str | None = None) -> SchemaVersion:
        """The catalog version a Confluent id stands for, preferring ``subject``'s versions.

        Raises
        ------
        DecodeError
            ``unknown_confluent_id`` (not mapped, or not registered),
            ``schema_not_in_catalog`` (registered, but no catalog version has its
            canonical form) or ``schema_registry_unavailable``.
        """
        if self.registry is None:
            sv = self._by_id.get(schema_id)
            if sv is None:
                raise DecodeError(
                    "unknown_confluent_id",
                    f"Confluent schema id {schema_id} is not in {CONFLUENT_IDS_FILE}; add "
                    f"it there, or set RIVERLINE_SCHEMA_REGISTRY_URL",
                )
            return sv
        fp = self.registry.fingerprint(schema_id)
        sv = self.by_fingerprint(fp, subject) if subject else self.by_fingerprint(fp)
        if sv is None:
            other = self.by_fingerprint(fp) if subject else None
            where = f" (it is {other.label}, not a version of {subject!r})" if other else ""
            raise DecodeError(
                "schema_not_in_catalog",
                f"Confluent schema id {schema_id} is registered, but its schema (fingerprint "
                f"{fp.hex()}) is not in the catalog{where}; add it as "
                f"schemas/{subject or '<subject>'}/v<N>.avsc",
            )
        return sv

    def output_header(self, topic: str, sv: SchemaVersion) -> bytes:
        """What precedes the Avro body of ``sv`` on Riverline's own ``topic``.

        ``C3 01`` + fingerprint (single-object encoding), or with a registry that frames
        outputs, ``00`` + the id of ``sv`` registered under ``<topic>-value``.
        """
        if self.registry is None or not self.registry.frames_outputs:
            return b"\xc3\x01" + sv.fingerprint
        return b"\x00" + self.registry.register(f"{topic}-value", sv).to_bytes(4, "big")

    def record(self, name: str) -> SchemaVersion:
        """The latest version of one of Riverline's own records, e.g. ``"prediction"``."""
        return self.latest(f"{RIVERLINE_DIR}.{name}")

    def _subject(self, subject: str) -> dict[int, SchemaVersion]:
        try:
            return self._subjects[subject]
        except KeyError as exc:
            # Riverline's own records are in every catalog: naming them would hide the
            # user's subjects.
            own = f"{RIVERLINE_DIR}."
            known = ", ".join(s for s in self.subjects() if not s.startswith(own)) or "none"
            raise CatalogError(
                f"unknown schema subject {subject!r} (known: {known}); add "
                f"schemas/{subject}/v1.avsc or fix the pipeline spec"
            ) from exc


def _read_avsc(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CatalogError(f"cannot read schema {path}: {exc}") from exc
    if not isinstance(schema, dict):
        raise CatalogError(f"schema {path} must be a JSON object (an Avro record)")
    return schema


def _load_subject(directory: Path) -> list[SchemaVersion]:
    subject = directory.name
    if not _SUBJECT.fullmatch(subject):
        raise CatalogError(
            f"schema directory {directory} is not a valid subject name "
            f"(letters, digits, '_', '.', '-')"
        )
    versions = []
    for path in sorted(directory.glob("*.avsc")):
        match = _VERSION_FILE.fullmatch(path.name)
        if match is None:
            raise CatalogError(
                f"schema file {path} must be named v<N>.avsc (v1.avsc, v2.avsc, ...)"
            )
        version = int(match["version"])
        versions.append(SchemaVersion.from_schema(subject, version, _read_avsc(path)))
    return versions


def _load_records(directory: Path) -> list[SchemaVersion]:
    versions = []
    for path in sorted(directory.glob("*.avsc")):
        match = _RECORD_FILE.fullmatch(path.name)
        if match is None:
            raise CatalogError(
                f"record schema {path} must be named <name>.avsc or <name>.v<N>.avsc"
            )
        subject = f"{RIVERLINE_DIR}.{match['name']}"
        version = int(match["version"] or 1)
        versions.append(SchemaVersion.from_schema(subject, version, _read_avsc(path)))
    return versions


def _merge_records(
    shipped: list[SchemaVersion], given: list[SchemaVersion], where: Path
) -> list[SchemaVersion]:
    """Riverline's own records: the shipped ones, plus any others ``where`` adds; a
    shipped record given again must be the same schema (Riverline writes and reads it)."""
    merged = {(sv.subject, sv.version): sv for sv in shipped}
    for sv in given:
        known = merged.setdefault((sv.subject, sv.version), sv)
        if known.canonical != sv.canonical:
            raise CatalogError(
                f"{where} redefines Riverline's own record {sv.subject} v{sv.version}, "
                f"which Riverline ships and relies on; remove it from {where}"
            )
    return list(merged.values())


def _load_confluent_ids(path: Path) -> dict[int, tuple[str, int]]:
    if not path.exists():
        return {}
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc
    entries = document.get("schema", [])
    if not isinstance(entries, list):
        raise CatalogError(f"{path}: expected [[schema]] tables with id, subject and version")
    ids: dict[int, tuple[str, int]] = {}
    for entry in entries:
        schema_id = entry.get("id") if isinstance(entry, dict) else None
        subject = entry.get("subject") if isinstance(entry, dict) else None
        version = entry.get("version") if isinstance(entry, dict) else None
        if (
            not isinstance(schema_id, int)
            or isinstance(schema_id, bool)
            or not 0 <= schema_id < 2**31
            or not isinstance(subject, str)
            or not isinstance(version, int)
            or isinstance(version, bool)
        ):
            raise CatalogError(
                f"{path}: each [[schema]] needs id (0..2^31-1), subject (string) and "
                f"version (integer); got {entry!r}"
            )
        if schema_id in ids:
            raise CatalogError(f"{path}: id {schema_id} is mapped twice")
        ids[schema_id] = (subject, version)
    return ids
