"""Benchmarks behind ``riverline bench``: sections of measurements beside their baselines.

A section is a function ``(BenchOptions) -> dict`` registered in :data:`SECTIONS`. Its
dict holds at least ``title`` and ``rows`` (a list of flat dicts with the same keys,
which the CLI prints as a table); anything else in it goes to the JSON report as is.
:func:`run_bench` runs the sections in order and returns one JSON-ready report::

    {"quick": ..., "python": ..., "platform": ..., "cpus": ...,
     "sections": {"ingest": {"title": ..., "rows": [...], ...}}}

Sections that need Kafka take the cluster from ``options.settings``.

The ``ingest`` section measures :meth:`streams.ingestion.Ingestion.process` (decode,
validate, lineage, re-encode as canonical Avro) over in-memory messages of one pipeline,
per wire format, against a bare ``fastavro.schemaless_reader`` decode of the same events'
Avro bodies in the same run (for JSON, against ``json.loads`` of the same bytes too).
``ratio`` is Riverline's events/s divided by fastavro's: what validation, lineage and
the re-encode cost. Timings are best-of-``repeats``; numbers depend on the machine.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any, Final

from fastavro import schemaless_reader

from streams.catalog import SchemaCatalog, SchemaVersion
from streams.codec import encode_confluent, encode_single_object
from streams.errors import RiverlineError
from streams.ingestion import Ingestion
from streams.messages import InMessage
from streams.settings import Settings
from streams.spec import load_spec

__all__ = ["SECTIONS", "BenchOptions", "ingest_section", "run_bench", "synthetic_events"]

#: Wire formats of the ingest section, in report order.
INGEST_FORMATS: Final = ("avro-single-object", "confluent", "json")


@dataclass(frozen=True)
class BenchOptions:
    """What every section gets: settings (topics, cluster, paths) and the run's size."""

    settings: Settings
    quick: bool = False
    pipeline: Path | None = None
    """Pipeline spec to ingest (default: ``pipelines/phishing.toml``)."""
    seed: int = 7

    @property
    def events(self) -> int:
        return 2_000 if self.quick else 20_000

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3


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


def _best_eps(n: int, repeats: int, run: Callable[[], object]) -> float:
    """Events per second of the fastest of ``repeats`` runs over ``n`` events."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return n / best if best > 0 else float("inf")


def _batches(items: Sequence[InMessage], size: int) -> list[Sequence[InMessage]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def ingest_section(options: BenchOptions) -> dict[str, Any]:
    """Ingest events/s per wire format beside a bare fastavro decode of the same events."""
    settings = options.settings
    spec = load_spec(options.pipeline or settings.pipelines_dir / "phishing.toml")
    catalog = SchemaCatalog.load(settings.schemas_dir)
    schema = catalog.latest(spec.subject)
    records = synthetic_events(schema, options.events, options.seed)
    n, repeats = len(records), options.repeats
    batch_size = settings.batch_size
    topics = spec.topics(settings.namespace)
    confluent_id = catalog.confluent_id(schema)

    encoded: dict[str, list[bytes]] = {
        "avro-single-object": [encode_single_object(schema, r) for r in records],
        "json": [json.dumps(r).encode() for r in records],
    }
    if confluent_id is not None:
        encoded["confluent"] = [encode_confluent(confluent_id, schema, r) for r in records]
    bodies = [BytesIO(v[10:]) for v in encoded["avro-single-object"]]
    parsed = schema.parsed

    def fastavro_decode() -> None:
        for body in bodies:
            body.seek(0)
            schemaless_reader(body, parsed, None)

    fastavro_eps = _best_eps(n, repeats, fastavro_decode)
    rows: list[dict[str, Any]] = []
    for fmt in INGEST_FORMATS:
        if fmt not in encoded:
            continue
        values = encoded[fmt]
        messages = [
            InMessage(topics.raw, 0, i, str(r[spec.id_field]).encode(), v, 0)
            for i, (r, v) in enumerate(zip(records, values, strict=True))
        ]
        batches = _batches(messages, batch_size)
        ingestion = Ingestion(
            spec,
            catalog,
            events_topic=topics.events,
            dlq_topic=settings.topic("riverline.dlq"),
            max_bytes=settings.max_message_bytes,
        )
        ok = sum(r.ok for r in _process_all(ingestion, batches))  # warm-up and a check
        if ok != n:
            raise RiverlineError(
                f"benchmark events of {schema.label} did not all ingest ({ok} of {n} in "
                f"{fmt}); the benchmark's event generator is wrong for this schema"
            )
        riverline_eps = _best_eps(n, repeats, partial(_process_all, ingestion, batches))
        row: dict[str, Any] = {
            "format": fmt,
            "events": n,
            "bytes": round(sum(map(len, values)) / n, 1),
            "riverline_eps": round(riverline_eps),
            "fastavro_eps": round(fastavro_eps),
            "ratio": round(riverline_eps / fastavro_eps, 3),
        }
        if fmt == "json":
            row["json_loads_eps"] = round(_best_eps(n, repeats, partial(_json_loads_all, values)))
        rows.append(row)
    return {
        "title": f"ingest: {spec.name} ({schema.label}), batches of {batch_size}",
        "pipeline": spec.label,
        "schema": schema.label,
        "measures": "Ingestion.process: decode + validate + lineage + re-encode",
        "baseline": "fastavro.schemaless_reader of the same events' Avro bodies (no checks)",
        "columns": {
            "bytes": "mean message size in this format",
            "riverline_eps": "events/s through Ingestion.process",
            "fastavro_eps": "events/s of the bare fastavro decode",
            "ratio": "riverline_eps / fastavro_eps",
            "json_loads_eps": "events/s of json.loads on the same JSON bytes",
        },
        "repeats": repeats,
        "rows": rows,
    }


def _process_all(stage: Ingestion, batches: Iterable[Sequence[InMessage]]) -> list[Any]:
    return [stage.process(b) for b in batches]


def _json_loads_all(values: Iterable[bytes]) -> list[Any]:
    return [json.loads(v) for v in values]


#: Every section, in the order ``riverline bench`` runs them.
SECTIONS: dict[str, Callable[[BenchOptions], dict[str, Any]]] = {
    "ingest": ingest_section,
}


def run_bench(options: BenchOptions, sections: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the named sections (default: all) and return the report (see the module doc)."""
    names = list(sections) if sections is not None else list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise RiverlineError(
            f"unknown benchmark section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}"
        )
    report: dict[str, Any] = {
        "quick": options.quick,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "sections": {},
    }
    for name in names:
        report["sections"][name] = SECTIONS[name](options)
    return report
