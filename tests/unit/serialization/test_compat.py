"""Schema compatibility: Avro resolution rules, modes, transitivity, and the messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams.serialization.catalog import CatalogError, SchemaCatalog, SchemaVersion
from streams.serialization.compat import CompatProblem, check_catalog, check_pair, load_modes
from streams.settings import REPO_ROOT


def rec(*fields: dict[str, Any], name: str = "Thing", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test", "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def version(schema: dict[str, Any], n: int = 1) -> SchemaVersion:
    return SchemaVersion.from_schema("thing", n, schema)


def can_read(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Problems (as "path: message") when ``reader`` reads ``writer`` data."""
    problems = check_pair(version(reader, 2), version(writer))
    return [f"{path}: {message}" for path, message, _ in problems]


Factory = Callable[..., SchemaCatalog]


@pytest.fixture
def make_catalog(tmp_path: Path) -> Factory:
    """``make_catalog(v1, v2, ..., mode="FULL")``: subject "thing" with those versions."""

    def make(*schemas: dict[str, Any], mode: str | None = None) -> SchemaCatalog:
        root = tmp_path / "schemas"
        (root / "thing").mkdir(parents=True, exist_ok=True)
        for n, schema in enumerate(schemas, start=1):
            (root / "thing" / f"v{n}.avsc").write_text(json.dumps(schema))
        if mode is not None:
            (root / "thing" / "compat.toml").write_text(f'mode = "{mode}"\n')
        return SchemaCatalog.load(root)

    return make


BASE = rec(f("id", "string"), f("n", "int"))


def test_repository_schemas_are_compatible() -> None:
    assert check_catalog(SchemaCatalog.load(REPO_ROOT / "schemas")) == []


# --- resolution rules ----------------------------------------------------------------


def test_added_field_needs_a_default_to_read_old_data() -> None:
    without = rec(f("id", "string"), f("n", "int"), f("extra", "long"))
    with_default = rec(f("id", "string"), f("n", "int"), f("extra", "long", default=0))

    assert can_read(without, BASE) == [
        "extra: field 'extra' exists in v2 but not in v1, and has no default to fill it with"
    ]
    assert can_read(with_default, BASE) == []
    assert can_read(BASE, without) == []  # fields only the writer has are skipped


def test_removed_field_without_default_breaks_old_readers() -> None:
    removed = rec(f("id", "string"))

    assert can_read(removed, BASE) == []
    assert [p.split(":")[0] for p in can_read(BASE, removed)] == ["n"]
    assert can_read(rec(f("id", "string"), f("n", "int", default=1)), removed) == []


@pytest.mark.parametrize(
    ("writer", "reader", "ok"),
    [
        ("int", "long", True),
        ("int", "float", True),
        ("int", "double", True),
        ("long", "float", True),
        ("long", "double", True),
        ("float", "double", True),
        ("string", "bytes", True),
        ("bytes", "string", True),
        ("long", "int", False),
        ("double", "float", False),
        ("double", "long", False),
        ("string", "int", False),
        ("boolean", "int", False),
        ("null", "string", False),
    ],
)
def test_primitive_promotions(writer: str, reader: str, ok: bool) -> None:
    problems = can_read(rec(f("x", reader)), rec(f("x", writer)))

    assert (problems == []) is ok
    if not ok:
        assert f"type changed from {writer} (v1) to {reader} (v2)" in problems[0]


def test_logical_types_do_not_matter() -> None:
    ts = {"type": "long", "logicalType": "timestamp-millis"}

    assert can_read(rec(f("x", ts)), rec(f("x", "long"))) == []
    assert can_read(rec(f("x", "long")), rec(f("x", ts))) == []


def test_unions() -> None:
    nullable = rec(f("x", ["null", "string"]))
    plain = rec(f("x", "string"))
    wider = rec(f("x", ["null", "string", "long"]))
    promoted = rec(f("x", ["null", "double"]))

    assert can_read(nullable, plain) == []  # reader union has the writer's type
    assert can_read(wider, nullable) == []
    assert can_read(plain, nullable) == [
        "x: type changed from null (v1) to string (v2), which is not a promotion Avro allows "
        "(for the writer's union branch null)"
    ]
    assert "has no matching branch" in can_read(nullable, wider)[0]
    assert can_read(promoted, rec(f("x", ["null", "int"]))) == []  # int -> double in a union


def test_enums_keep_symbols_unless_the_reader_has_a_default() -> None:
    abc = {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}
    ab = {"type": "enum", "name": "E", "symbols": ["A", "B"]}
    ab_default = {**ab, "default": "A"}

    assert can_read(rec(f("e", abc)), rec(f("e", ab))) == []
    assert can_read(rec(f("e", ab)), rec(f("e", abc))) == [
        "e: enum E in v2 lacks symbols C that v1 may write"
    ]
    assert can_read(rec(f("e", ab_default)), rec(f("e", abc))) == []


def test_nested_records_arrays_and_maps_report_the_path() -> None:
    def inner(*fields: dict[str, Any]) -> dict[str, Any]:
        return {"type": "record", "name": "Inner", "fields": list(fields)}

    old = rec(
        f("a", inner(f("x", "int"))),
        f("xs", {"type": "array", "items": "test.Inner"}),
        f("m", {"type": "map", "values": "int"}),
    )
    new = rec(
        f("a", {"type": "record", "name": "Inner", "fields": [f("x", "int"), f("y", "int")]}),
        f("xs", {"type": "array", "items": "test.Inner"}),
        f("m", {"type": "map", "values": "string"}),
    )

    problems = can_read(new, old)

    assert [p.split(":")[0] for p in problems] == ["a.y", "m{}"]


def test_renamed_records_need_an_alias_and_fixed_keeps_its_size() -> None:
    renamed = rec(f("id", "string"), f("n", "int"), name="Other")
    aliased = rec(f("id", "string"), f("n", "int"), name="Other", aliases=["test.Thing"])
    four = {"type": "fixed", "name": "F", "size": 4}
    eight = {"type": "fixed", "name": "F", "size": 8}

    assert "was renamed" in can_read(renamed, BASE)[0]
    assert can_read(aliased, BASE) == []
    resized = can_read(rec(f("x", eight)), rec(f("x", four)))
    assert "changed size from 4 (v1) to 8 (v2)" in resized[0]


def test_field_aliases_match_renamed_fields() -> None:
    renamed = rec(f("id", "string"), f("count", "int", aliases=["n"]))

    assert can_read(renamed, BASE) == []


def test_recursive_types_terminate() -> None:
    node = rec(f("v", "long"), f("next", ["null", "test.Thing"]))
    node2 = rec(f("v", "long"), f("next", ["null", "test.Thing"]), f("w", "int", default=0))

    assert can_read(node2, node) == []
    assert can_read(node, node2) == []


# --- modes and the catalog -----------------------------------------------------------


V2_ADDS_DEFAULTED = rec(f("id", "string"), f("n", "int"), f("b", "long", default=0))
V3_DROPS_DEFAULT = rec(f("id", "string"), f("n", "int"), f("b", "long"))


def test_backward_is_transitive_by_default(make_catalog: Factory) -> None:
    catalog = make_catalog(BASE, V2_ADDS_DEFAULTED, V3_DROPS_DEFAULT)

    problems = check_catalog(catalog)

    assert [(p.reader_version, p.writer_version, p.direction, p.path) for p in problems] == [
        (3, 1, "BACKWARD", "b")
    ]
    assert check_catalog(catalog, {"thing": "BACKWARD"}) == []  # v3 reads v2 fine


def test_forward_and_full_modes(make_catalog: Factory) -> None:
    removes = rec(f("id", "string"))

    assert check_catalog(make_catalog(BASE, removes)) == []
    forward = check_catalog(make_catalog(BASE, removes), {"thing": "FORWARD"})
    full = check_catalog(make_catalog(BASE, removes), {"thing": "full"})
    none = check_catalog(make_catalog(BASE, rec(f("id", "long"))), {"thing": "NONE"})

    assert [(p.reader_version, p.writer_version, p.direction) for p in forward] == [
        (1, 2, "FORWARD")
    ]
    assert [p.direction for p in full] == ["FORWARD"]
    assert none == []


def test_mode_file_per_subject(make_catalog: Factory, tmp_path: Path) -> None:
    catalog = make_catalog(BASE, rec(f("id", "string")), mode="FULL_TRANSITIVE")

    assert load_modes(tmp_path / "schemas") == {"thing": "FULL_TRANSITIVE"}
    assert [p.direction for p in check_catalog(catalog)] == ["FORWARD"]
    assert check_catalog(catalog, {"thing": "BACKWARD"}) == []


def test_riverline_records_default_to_full_and_read_their_mode_file(tmp_path: Path) -> None:
    root = tmp_path / "schemas"
    (root / "riverline").mkdir(parents=True)
    (root / "riverline" / "thing.avsc").write_text(json.dumps(BASE))
    (root / "riverline" / "thing.v2.avsc").write_text(json.dumps(rec(f("id", "string"))))
    catalog = SchemaCatalog.load(root)

    assert [p.direction for p in check_catalog(catalog)] == ["FORWARD"]
    (root / "riverline" / "compat.toml").write_text('[modes]\nthing = "BACKWARD"\n')
    assert check_catalog(catalog) == []


def test_unknown_modes_are_refused(make_catalog: Factory) -> None:
    with pytest.raises(CatalogError, match="not one of"):
        check_catalog(make_catalog(BASE, mode="SIDEWAYS"))
    with pytest.raises(CatalogError, match="not one of"):
        check_catalog(make_catalog(BASE), {"thing": "SIDEWAYS"})


def test_problem_says_what_breaks_and_what_to_do(make_catalog: Factory) -> None:
    added = rec(f("id", "string"), f("n", "int"), f("extra", "long"))

    (problem,) = check_catalog(make_catalog(BASE, added))

    assert problem == CompatProblem(
        subject="thing",
        reader_version=2,
        writer_version=1,
        direction="BACKWARD",
        path="extra",
        message="field 'extra' exists in v2 but not in v1, and has no default to fill it with",
        fix='Give \'extra\' a default in v2 (e.g. make it ["null", ...] with "default": null), '
        "or keep writing it in v1",
    )
    assert str(problem).startswith(
        "thing: v2 cannot read data written with v1 (BACKWARD) at 'extra': field 'extra'"
    )
