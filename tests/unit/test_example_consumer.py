"""examples/consume_predictions.py reads what Riverline writes, without Riverline."""

from __future__ import annotations

import ast
import importlib.util
import json
from types import ModuleType

from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import encode_single_object
from streams.settings import REPO_ROOT

EXAMPLE = REPO_ROOT / "examples" / "consume_predictions.py"
SCHEMA = REPO_ROOT / "schemas" / "riverline" / "prediction.avsc"
RECORD = {
    "event_id": "e1",
    "pipeline": "orders",
    "model": "orders-lr@3",
    "schema": "orders/v1/0011223344556677",
    "source": "orders.raw:0:41",
    "features": "orders_features@abc",
    "spec": "0123456789ab",
    "event_ts": 1714557600123,
    "ingest_ts": 1714557600999,
    "predict_ts": 1714557601001,
    "prediction": True,
    "proba": {"False": 0.25, "True": 0.75},
    "score": None,
    "label": False,
}


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("consume_predictions", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_imports_nothing_of_riverline() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"streams", "agents", "benchmarks"}
    assert {"fastavro", "aiokafka"} <= imported


def test_the_example_decodes_riverline_records_and_skips_others() -> None:
    example = _example()
    expected, parsed = example.load_reader(SCHEMA)
    value = encode_single_object(
        SchemaCatalog.load(REPO_ROOT / "schemas").record("prediction"), RECORD
    )
    assert value[2:10] == expected
    record = example.decode(value, expected, parsed)
    assert json.loads(example.as_json(record)) == RECORD
    other = value[:2] + bytes(8) + value[10:]
    assert example.decode(other, expected, parsed) is None
    assert example.decode(b"not avro", expected, parsed) is None
