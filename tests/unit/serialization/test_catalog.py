"""The schema catalog: layout on disk, lookups, and fingerprints as the wire carries them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint

from streams.errors import ConfigError
from streams.serialization.catalog import (
    CatalogError,
    SchemaCatalog,
    SchemaVersion,
    compute_fingerprint,
)
from streams.settings import REPO_ROOT

SCHEMAS = REPO_ROOT / "schemas"
RECORDS = ("alert", "audit", "dead_letter", "feature_vector", "label", "model_record", "prediction")


def _record(name: str, *fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "test", "fields": list(fields)}


V1 = _record("Thing", {"name": "id", "type": "string"})
V2 = _record("Thing", {"name": "id", "type": "string"}, {"name": "n", "type": "long", "default": 0})

CatalogFactory = Callable[..., Path]


@pytest.fixture
def make_root(tmp_path: Path) -> CatalogFactory:
    """``make_root({"thing/v1.avsc": schema, "confluent-ids.toml": "..."}) -> root``."""

    def make(files: dict[str, Any]) -> Path:
        root = tmp_path / "schemas"
        root.mkdir(exist_ok=True)
        for name, content in files.items():
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        return root

    return make


def _crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint exactly as the Avro specification spells it out."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_repository_catalog_has_phishing_and_riverline_records() -> None:
    catalog = SchemaCatalog.load(SCHEMAS)

    assert "phishing" in catalog.subjects()
    assert {f"riverline.{name}" for name in RECORDS} <= set(catalog.subjects())
    phishing = catalog.latest("phishing")
    assert (phishing.subject, phishing.version) == ("phishing", 1)
    assert catalog.by_confluent_id(1) == phishing
    assert catalog.record("prediction").subject == "riverline.prediction"


@pytest.mark.parametrize("name", RECORDS)
def test_riverline_records_document_every_field(name: str) -> None:
    schema = SchemaCatalog.load(SCHEMAS).record(name).schema

    assert schema["doc"]
    undocumented = [f["name"] for f in schema["fields"] if not f.get("doc")]
    assert undocumented == []


def test_prediction_record_has_the_lineage_fields() -> None:
    names = SchemaCatalog.load(SCHEMAS).record("prediction").field_names

    assert names == [
        "event_id", "pipeline", "model", "schema", "source", "features", "spec",
        "event_ts", "ingest_ts", "predict_ts", "prediction", "proba", "score", "label",
    ]  # fmt: skip


def test_fingerprint_matches_fastavro_and_the_spec_in_wire_byte_order() -> None:
    catalog = SchemaCatalog.load(SCHEMAS)
    for sv in (catalog.latest(subject) for subject in catalog.subjects()):
        assert sv.fingerprint == bytes.fromhex(fastavro_fingerprint(sv.canonical, "CRC-64-AVRO"))
        assert sv.fingerprint_hex == fastavro_fingerprint(sv.canonical, "CRC-64-AVRO")
        # Single-object encoding stores the 64-bit fingerprint little-endian.
        assert int.from_bytes(sv.fingerprint, "little") == _crc64_avro(sv.canonical.encode())
    # The value Java's SchemaNormalization.parsingFingerprint64 gives for "null".
    assert compute_fingerprint('"null"') == (0x63DD24E7CC258F8A).to_bytes(8, "little")


def test_label_names_subject_version_and_fingerprint() -> None:
    sv = SchemaCatalog.load(SCHEMAS).latest("phishing")

    assert sv.label == f"phishing/v1/{sv.fingerprint_hex}"
    assert len(sv.fingerprint) == 8
    assert sv.canonical.startswith('{"name":"riverline.phishing.PhishingEvent","type":"record"')


def test_versions_latest_get_and_fingerprint_lookup(make_root: CatalogFactory) -> None:
    catalog = SchemaCatalog.load(make_root({"thing/v1.avsc": V1, "thing/v2.avsc": V2}))

    v1, v2 = catalog.versions("thing")
    assert catalog.latest("thing") == v2 == catalog.get("thing", 2)
    assert catalog.by_fingerprint(v1.fingerprint) == v1
    assert catalog.by_fingerprint(v1.fingerprint, "thing") == v1
    assert catalog.by_fingerprint(v1.fingerprint, "other") is None
    assert catalog.by_fingerprint(b"\x00" * 8) is None
    assert catalog.by_confluent_id(7) is None


def test_identical_schemas_resolve_within_the_asked_subject(make_root: CatalogFactory) -> None:
    catalog = SchemaCatalog.load(make_root({"a/v1.avsc": V1, "b/v1.avsc": V1}))

    fp = catalog.latest("a").fingerprint
    assert catalog.latest("b").fingerprint == fp
    assert catalog.by_fingerprint(fp, "b") == catalog.latest("b")
    assert catalog.by_fingerprint(fp, "a") == catalog.latest("a")


def test_record_files_and_their_versions(make_root: CatalogFactory) -> None:
    root = make_root({"riverline/thing.avsc": V1, "riverline/thing.v2.avsc": V2})
    catalog = SchemaCatalog.load(root)

    # Beside the shipped records, which every catalog has.
    assert [s for s in catalog.subjects() if s == "riverline.thing"] == ["riverline.thing"]
    assert catalog.record("thing").version == 2
    assert catalog.get("riverline.thing", 1).schema == V1


def test_confluent_ids_map_to_versions(make_root: CatalogFactory) -> None:
    ids = '[[schema]]\nid = 40\nsubject = "thing"\nversion = 1\n' \
          '[[schema]]\nid = 41\nsubject = "thing"\nversion = 2\n'  # fmt: skip
    root = make_root({"thing/v1.avsc": V1, "thing/v2.avsc": V2, "confluent-ids.toml": ids})
    catalog = SchemaCatalog.load(root)

    assert catalog.by_confluent_id(40) == catalog.get("thing", 1)
    assert catalog.by_confluent_id(41) == catalog.get("thing", 2)
    assert catalog.confluent_id(catalog.get("thing", 2)) == 41


def _ids(*entries: tuple[object, str, int]) -> str:
    return "".join(
        f'[[schema]]\nid = {i!r}\nsubject = "{s}"\nversion = {v}\n' for i, s, v in entries
    ).replace("'", '"')


ENUM = {"type": "enum", "name": "E", "symbols": ["A"]}
BAD_TYPE = _record("T", {"name": "x", "type": "nope"})
BAD_DEFAULT = _record("T", {"name": "x", "type": "int", "default": "a"})


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"thing/v1.avsc": V1, "thing/v3.avsc": V2}, "without gaps"),
        ({"thing/version1.avsc": V1}, "must be named v<N>.avsc"),
        ({"thing/v1.avsc": ENUM}, "must be an Avro record"),
        ({"thing/v1.avsc": "{not json"}, "cannot read schema"),
        ({"thing/v1.avsc": BAD_TYPE}, "not a valid Avro schema"),
        ({"thing/v1.avsc": BAD_DEFAULT}, "not a valid Avro schema"),
        ({"riverline/Bad-Name.avsc": V1}, "<name>.avsc"),
        ({"thing/v1.avsc": V1, "confluent-ids.toml": _ids((1, "thing", 2))}, "not in the catalog"),
        (
            {"thing/v1.avsc": V1, "confluent-ids.toml": _ids((1, "thing", 1), (1, "thing", 1))},
            "mapped twice",
        ),
        ({"thing/v1.avsc": V1, "confluent-ids.toml": _ids(("1", "thing", 1))}, "needs id"),
    ],
)
def test_invalid_catalogs_are_refused_with_a_reason(
    make_root: CatalogFactory, files: dict[str, Any], message: str
) -> None:
    with pytest.raises(CatalogError, match=re.escape(message)) as info:
        SchemaCatalog.load(make_root(files))

    assert isinstance(info.value, ConfigError)


def test_unknown_subject_and_version_say_what_exists(make_root: CatalogFactory) -> None:
    catalog = SchemaCatalog.load(make_root({"thing/v1.avsc": V1}))

    with pytest.raises(CatalogError, match="unknown schema subject 'nope' \\(known: thing\\)"):
        catalog.latest("nope")
    with pytest.raises(CatalogError, match="has no version 3"):
        catalog.get("thing", 3)
    with pytest.raises(CatalogError, match=r"riverline\.nope"):
        catalog.record("nope")


def test_missing_root_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        SchemaCatalog.load(tmp_path / "nowhere")


def test_versions_are_hashable_and_compare_by_content() -> None:
    a = SchemaVersion.from_schema("thing", 1, V1)
    b = SchemaVersion.from_schema("thing", 1, json.loads(json.dumps(V1)))

    assert a == b
    assert hash(a) == hash(b)
    assert a != SchemaVersion.from_schema("thing", 2, V1)
