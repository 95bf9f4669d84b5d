"""The benchmark's events: synthetic records of a schema, a pipeline's dataset as JSON."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from typing import Any

from streams.errors import RiverlineError
from streams.ingestion.datasets import dataset_rows
from streams.ingestion.transactions import START_MS
from streams.serialization.catalog import SchemaVersion
from streams.spec import PipelineSpec

__all__ = ["bench_events", "event_keys", "synthetic_events"]


def synthetic_events(schema: SchemaVersion, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` valid records of a flat schema (primitives, enums, nullable unions), seeded.

    Raises RiverlineError for field types it cannot invent values for (arrays, maps,
    nested records): benchmark such a pipeline with recorded events instead.
    """
    rng = random.Random(seed)
    makers = [
        (f["name"], _maker(f["type"], f["name"], schema.label)) for f in schema.schema["fields"]
    ]
    start_ms = 1_700_000_000_000
    return [{name: make(rng, i, start_ms) for name, make in makers} for i in range(n)]


_Maker = Callable[[random.Random, int, int], Any]


def _maker(ftype: Any, name: str, where: str) -> _Maker:
    if isinstance(ftype, list):
        branches = [_maker(b, name, where) for b in ftype if b != "null"]
        nullable = "null" in ftype
        first = branches[0]
        return lambda rng, i, t: None if nullable and i % 10 == 9 else first(rng, i, t)
    if isinstance(ftype, dict):
        logical = ftype.get("logicalType")
        kind = ftype["type"]
        if logical == "timestamp-millis":
            return lambda rng, i, t: t + i * 1000
        if kind == "enum":
            symbols = list(ftype["symbols"])
            return lambda rng, i, t: symbols[i % len(symbols)]
        if isinstance(kind, str) and kind not in ("record", "array", "map", "fixed"):
            return _maker(kind, name, where)
        raise RiverlineError(
            f"{where}: the benchmark cannot invent values for field {name!r} ({kind})"
        )
    simple: dict[str, _Maker] = {
        "string": lambda rng, i, t: f"ev-{i:08d}",
        "double": lambda rng, i, t: rng.random() * 100.0,
        "float": lambda rng, i, t: float(rng.randrange(1000)) / 8.0,
        "int": lambda rng, i, t: rng.randrange(-5, 100),
        "long": lambda rng, i, t: rng.randrange(1 << 40),
        "boolean": lambda rng, i, t: rng.random() < 0.5,
        "bytes": lambda rng, i, t: rng.randbytes(8),
    }
    if ftype not in simple:
        raise RiverlineError(
            f"{where}: the benchmark cannot invent values for field {name!r} ({ftype})"
        )
    return simple[ftype]


def bench_events(spec: PipelineSpec, n: int, run_id: str, offset_ms: int) -> list[bytes]:
    """``n`` events of the spec's dataset as JSON, event times shifted by ``offset_ms``."""
    values = []
    for i, (x, y) in enumerate(dataset_rows(spec.dataset or "transactions", n)):
        event: dict[str, Any] = {spec.id_field: f"{run_id}-{i:07d}", **x}
        row_ms = x.get(spec.time_field)
        event[spec.time_field] = offset_ms + (START_MS + i * 1000 if row_ms is None else row_ms)
        if spec.model.target:
            event[spec.model.target] = y
        values.append(json.dumps(event).encode())
    return values


def event_keys(spec: PipelineSpec, values: Sequence[bytes]) -> list[bytes]:
    """Message keys of bench events: the spec's key field (else its id), as Riverline keys."""
    field_name = spec.key_field or spec.id_field
    return [str(json.loads(v)[field_name]).encode() for v in values]
