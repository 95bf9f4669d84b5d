"""Schema compatibility of a subject's versions (``riverline schemas check``).

A new version must let readers and writers of the other versions keep working. Which
pairs are checked depends on the subject's mode (Confluent Schema Registry's names):

=====================  ==============================================================
``BACKWARD``           version N read as reader can read data of version N-1
``BACKWARD_TRANSITIVE``  ... of every earlier version (default for event subjects:
                       the ingest stage reads every version with the latest)
``FORWARD``            version N-1 as reader can read data of version N
``FORWARD_TRANSITIVE``   every earlier version can read data of version N
``FULL``               BACKWARD and FORWARD
``FULL_TRANSITIVE``    BACKWARD_TRANSITIVE and FORWARD_TRANSITIVE (default for
                       Riverline's own records ``riverline.*``: users' consumers lag
                       behind our writers, and replay reads old data with new code)
``NONE``               nothing is checked
=====================  ==============================================================

Configure a subject with ``schemas/<subject>/compat.toml``::

    mode = "FULL"

and Riverline's own records with ``schemas/riverline/compat.toml``::

    mode = "FULL_TRANSITIVE"        # all records (optional)
    [modes]
    prediction = "BACKWARD"         # one record

The ``modes`` argument of :func:`check_catalog` overrides both. Whether a reader can
read a writer's data follows the Avro specification's schema resolution: a reader field
missing from the writer needs a default; fields only the writer has are skipped; types
may be promoted int -> long -> float -> double and string <-> bytes; a writer union branch
must be readable by the reader (by the reader's union, or by the reader's type); named
types must keep their name (or list the old one in ``aliases``); enums must keep the
writer's symbols unless the reader's enum has a ``default``; fixed types keep their size.
Logical types are not compared (they do not change the bytes).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from streams.serialization.catalog import RIVERLINE_DIR, CatalogError, SchemaCatalog, SchemaVersion

__all__ = [
    "DEFAULT_MODE",
    "DEFAULT_RECORD_MODE",
    "MODES",
    "CompatProblem",
    "check_catalog",
    "check_pair",
    "load_modes",
]

MODES: Final = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)
DEFAULT_MODE: Final = "BACKWARD_TRANSITIVE"
DEFAULT_RECORD_MODE: Final = "FULL_TRANSITIVE"
_COMPAT_FILE = "compat.toml"

_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_PROMOTIONS = {
    "int": frozenset(("long", "float", "double")),
    "long": frozenset(("float", "double")),
    "float": frozenset(("double",)),
    "string": frozenset(("bytes",)),
    "bytes": frozenset(("string",)),
}


@dataclass(frozen=True)
class CompatProblem:
    """One way in which one version cannot read another's data.

    ``direction`` is ``BACKWARD`` when the newer version is the reader, ``FORWARD`` when
    the older one is; ``path`` is the field path (empty for the record itself).
    """

    subject: str
    reader_version: int
    writer_version: int
    direction: str
    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f" at '{self.path}'" if self.path else ""
        return (
            f"{self.subject}: v{self.reader_version} cannot read data written with "
            f"v{self.writer_version} ({self.direction}){where}: {self.message}. {self.fix}"
        )


def check_catalog(
    catalog: SchemaCatalog, modes: Mapping[str, str] | None = None
) -> list[CompatProblem]:
    """Every compatibility problem in the catalog, per subject, under its mode.

    Modes come from ``modes`` (subject -> mode), else the subject's ``compat.toml``,
    else the defaults (see the module docstring). An unknown mode raises CatalogError.
    """
    configured = load_modes(catalog.root) if catalog.root is not None else {}
    configured.update(modes or {})
    problems: list[CompatProblem] = []
    for subject in catalog.subjects():
        default = DEFAULT_RECORD_MODE if subject.startswith(f"{RIVERLINE_DIR}.") else DEFAULT_MODE
        mode = configured.get(subject, default).upper()
        if mode not in MODES:
            raise CatalogError(
                f"compatibility mode {mode!r} for {subject!r} is not one of {', '.join(MODES)}"
            )
        versions = catalog.versions(subject)
        transitive = mode.endswith("_TRANSITIVE")
        backward = mode.startswith(("BACKWARD", "FULL"))
        forward = mode.startswith(("FORWARD", "FULL"))
        for j, newer in enumerate(versions):
            olders = versions[:j] if transitive else versions[max(0, j - 1) : j]
            for older in olders:
                if backward:
                    problems.extend(_problems(subject, newer, older, "BACKWARD"))
                if forward:
                    problems.extend(_problems(subject, older, newer, "FORWARD"))
    return problems


def check_pair(reader: SchemaVersion, writer: SchemaVersion) -> list[tuple[str, str, str]]:
    """(path, what breaks, what to do) for each reason ``reader`` cannot read ``writer``."""
    checker = _Checker(
        reader.parsed.get("__named_schemas", {}),
        writer.parsed.get("__named_schemas", {}),
        reader.version,
        writer.version,
    )
    checker.check(reader.parsed, writer.parsed, "")
    return checker.problems


def load_modes(root: Path) -> dict[str, str]:
    """Subject -> mode from the ``compat.toml`` files under a catalog root."""
    modes: dict[str, str] = {}
    if not root.is_dir():
        return modes
    for path in sorted(root.glob(f"*/{_COMPAT_FILE}")):
        document = _read_toml(path)
        directory = path.parent.name
        if directory == RIVERLINE_DIR:
            default = document.get("mode")
            per_record = document.get("modes", {})
            if not isinstance(per_record, dict):
                raise CatalogError(f"{path}: [modes] must be a table of record name = mode")
            for record_path in sorted(path.parent.glob("*.avsc")):
                name = record_path.name.split(".", 1)[0]
                mode = per_record.get(name, default)
                if mode is not None:
                    modes[f"{RIVERLINE_DIR}.{name}"] = _mode(mode, path)
        elif "mode" in document:
            modes[directory] = _mode(document["mode"], path)
    return modes


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc


def _mode(value: object, path: Path) -> str:
    if not isinstance(value, str) or value.upper() not in MODES:
        raise CatalogError(f"{path}: mode {value!r} is not one of {', '.join(MODES)}")
    return value.upper()


def _problems(
    subject: str, reader: SchemaVersion, writer: SchemaVersion, direction: str
) -> list[CompatProblem]:
    return [
        CompatProblem(subject, reader.version, writer.version, direction, path, message, fix)
        for path, message, fix in check_pair(reader, writer)
    ]


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Checker:
    """Avro schema resolution, reporting every place where it would fail."""

    def __init__(
        self,
        reader_named: dict[str, Any],
        writer_named: dict[str, Any],
        reader_version: int,
        writer_version: int,
    ) -> None:
        self.reader_named = reader_named
        self.writer_named = writer_named
        self.rv = f"v{reader_version}"
        self.wv = f"v{writer_version}"
        self.seen: set[tuple[str, str]] = set()
        self.problems: list[tuple[str, str, str]] = []

    def _add(self, path: str, message: str, fix: str) -> None:
        self.problems.append((path, message, fix))

    @staticmethod
    def _deref(schema: Any, named: dict[str, Any]) -> Any:
        """Named references resolved; ``{"type": "long", ...}`` becomes ``"long"``."""
        while True:
            if isinstance(schema, str):
                if schema in _PRIMITIVES or schema not in named:
                    return schema
                schema = named[schema]
            elif isinstance(schema, dict) and not isinstance(schema.get("type"), str):
                schema = schema["type"]
            elif isinstance(schema, dict) and schema["type"] in _PRIMITIVES:
                return schema["type"]
            elif isinstance(schema, dict) and schema["type"] not in (
                "record",
                "error",
                "enum",
                "fixed",
                "array",
                "map",
            ):
                schema = schema["type"]
            else:
                return schema

    @staticmethod
    def _describe(schema: Any) -> str:
        if isinstance(schema, str):
            return schema if schema in _PRIMITIVES else _short(schema)
        if isinstance(schema, list):
            return "union"
        kind = schema["type"]
        if kind in ("record", "error", "enum", "fixed"):
            return f"{kind} {_short(schema['name'])}"
        return str(kind)

    def _kind(self, schema: Any) -> str:
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            return "union"
        return "record" if schema["type"] == "error" else str(schema["type"])

    def matches(self, reader: Any, writer: Any) -> bool:
        """Whether a reader union branch is the one chosen for a writer type (same kind)."""
        rk, wk = self._kind(reader), self._kind(writer)
        if rk != wk:
            return False
        if rk in ("record", "enum", "fixed"):
            return self._same_name(reader, writer)
        return True

    def can_read(self, reader: Any, writer: Any) -> bool:
        probe = _Checker(self.reader_named, self.writer_named, 0, 0)
        probe.seen = set(self.seen)
        probe.check(reader, writer, "")
        return not probe.problems

    def _same_name(self, reader: dict[str, Any], writer: dict[str, Any]) -> bool:
        rname, wname = reader["name"], writer["name"]
        aliases = {_short(a) for a in reader.get("aliases", [])} | set(reader.get("aliases", []))
        return _short(rname) == _short(wname) or wname in aliases or _short(wname) in aliases

    def check(self, reader: Any, writer: Any, path: str) -> None:
        reader = self._deref(reader, self.reader_named)
        writer = self._deref(writer, self.writer_named)
        if isinstance(writer, list):
            self._writer_union(reader, writer, path)
            return
        if isinstance(reader, list):
            self._union_branch(reader, writer, path)
            return
        rk, wk = self._kind(reader), self._kind(writer)
        if rk != wk:
            if wk in _PROMOTIONS and rk in _PROMOTIONS[wk]:
                return
            self._add(
                path,
                f"type changed from {self._describe(writer)} ({self.wv}) to "
                f"{self._describe(reader)} ({self.rv}), which is not a promotion Avro allows",
                "Keep the old type, use an allowed promotion (int->long->float->double, "
                "string<->bytes), or add a new field with a new name and a default",
            )
            return
        self._same_kind(rk, reader, writer, path)

    def _writer_union(self, reader: Any, writer: list[Any], path: str) -> None:
        """Every branch of a writer's union must be readable."""
        for branch in writer:
            if isinstance(reader, list):
                self._union_branch(reader, branch, path)
                continue
            before = len(self.problems)
            self.check(reader, branch, path)
            if len(self.problems) > before and len(writer) > 1:
                path_, message, fix = self.problems[-1]
                self.problems[-1] = (
                    path_,
                    f"{message} (for the writer's union branch "
                    f"{self._describe(self._deref(branch, self.writer_named))})",
                    fix,
                )

    def _same_kind(self, kind: str, reader: Any, writer: Any, path: str) -> None:
        """Check a reader type against a writer type of the same kind."""
        if kind == "record":
            self._record(reader, writer, path)
        elif kind == "enum":
            self._enum(reader, writer, path)
        elif kind == "fixed":
            self._fixed(reader, writer, path)
        elif kind == "array":
            self.check(reader["items"], writer["items"], f"{path}[]")
        elif kind == "map":
            self.check(reader["values"], writer["values"], f"{path}{{}}")

    def _union_branch(self, reader: list[Any], writer: Any, path: str) -> None:
        writer = self._deref(writer, self.writer_named)
        branches = [self._deref(b, self.reader_named) for b in reader]
        for branch in branches:
            if self.matches(branch, writer):
                self.check(branch, writer, path)
                return
        for branch in branches:
            if self.can_read(branch, writer):
                return
        self._add(
            path,
            f"the writer's {self._describe(writer)} ({self.wv}) has no matching branch in "
            f"the reader's union ({self.rv}: "
            f"{', '.join(self._describe(b) for b in branches)})",
            f"Include {self._describe(writer)} in the union of {self.rv}, or do not write it "
            f"in {self.wv}",
        )

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        if not self._same_name(reader, writer):
            self._add(
                path,
                f"record {_short(writer['name'])} ({self.wv}) was renamed to "
                f"{_short(reader['name'])} ({self.rv})",
                f'Keep the name, or add "aliases": ["{writer["name"]}"] to the renamed record',
            )
            return
        key = (reader["name"], writer["name"])
        if key in self.seen:
            return  # recursive types: this pair is being checked further up
        self.seen.add(key)
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            child = f"{path}.{name}" if path else name
            match = writer_fields.get(name)
            if match is None:
                for alias in field.get("aliases", []):
                    match = writer_fields.get(alias)
                    if match is not None:
                        break
            if match is not None:
                self.check(field["type"], match["type"], child)
            elif "default" not in field:
                self._add(
                    child,
                    f"field '{name}' exists in {self.rv} but not in {self.wv}, and has no "
                    f"default to fill it with",
                    f"Give '{name}' a default in {self.rv} (e.g. make it "
                    f'["null", ...] with "default": null), or keep writing it in {self.wv}',
                )

    def _enum(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        if not self._same_name(reader, writer):
            self._add(
                path,
                f"enum {_short(writer['name'])} ({self.wv}) was renamed to "
                f"{_short(reader['name'])} ({self.rv})",
                f'Keep the name, or add "aliases": ["{writer["name"]}"] to the renamed enum',
            )
            return
        missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
        if missing and "default" not in reader:
            self._add(
                path,
                f"enum {_short(reader['name'])} in {self.rv} lacks symbols "
                f"{', '.join(missing)} that {self.wv} may write",
                f'Keep the symbols in {self.rv}, or give the enum a "default" symbol',
            )

    def _fixed(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        if not self._same_name(reader, writer):
            self._add(
                path,
                f"fixed {_short(writer['name'])} ({self.wv}) was renamed to "
                f"{_short(reader['name'])} ({self.rv})",
                f'Keep the name, or add "aliases": ["{writer["name"]}"]',
            )
        elif reader["size"] != writer["size"]:
            self._add(
                path,
                f"fixed {_short(reader['name'])} changed size from {writer['size']} "
                f"({self.wv}) to {reader['size']} ({self.rv})",
                "Keep the size, or add a new field with a new fixed type and a default",
            )
