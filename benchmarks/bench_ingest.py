"""Benchmark section ``ingest``: the ingest stage per wire format, beside a bare decode.

It measures :meth:`streams.ingestion.stage.Ingestion.process` (decode, validate, lineage,
re-encode as canonical Avro) over in-memory messages of one pipeline, per wire format,
against a bare ``fastavro.schemaless_reader`` decode of the same events' Avro bodies in
the same run (for JSON, against ``json.loads`` of the same bytes too). ``ratio`` is
Riverline's events/s divided by fastavro's: what validation, lineage and the re-encode
cost. Timings are best-of-``repeats``; numbers depend on the machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from io import BytesIO
from typing import Any, Final

from fastavro import schemaless_reader

from benchmarks.events import synthetic_events
from benchmarks.options import BenchOptions
from streams.errors import RiverlineError
from streams.ingestion.stage import Ingestion
from streams.messages import InMessage
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.codec import encode_confluent, encode_single_object
from streams.spec import PipelineSpec, load_spec

__all__ = ["INGEST_FORMATS", "ingest_section"]

#: Wire formats of the ingest section, in report order.
INGEST_FORMATS: Final = ("avro-single-object", "confluent", "json")


def ingest_section(options: BenchOptions) -> dict[str, Any]:
    """Ingest events/s per wire format beside a bare fastavro decode of the same events."""
    settings = options.settings
    spec = load_spec(options.pipeline or settings.pipelines_dir / "phishing.toml")
    catalog = SchemaCatalog.load(settings.schemas_dir)
    schema = catalog.latest(spec.subject)
    records = synthetic_events(schema, options.events, options.seed)
    encoded = _encoded(catalog, schema, records)
    fastavro_eps = _fastavro_eps(schema, encoded["avro-single-object"], options.repeats)
    rows = [
        _ingest_row(options, spec, catalog, records, fmt, encoded[fmt], fastavro_eps)
        for fmt in INGEST_FORMATS
        if fmt in encoded
    ]
    return {
        "title": f"ingest: {spec.name} ({schema.label}), batches of {settings.batch_size}",
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
        "repeats": options.repeats,
        "rows": rows,
    }


def _encoded(
    catalog: SchemaCatalog, schema: SchemaVersion, records: list[dict[str, Any]]
) -> dict[str, list[bytes]]:
    """The records in every wire format the catalog allows (Confluent needs an id)."""
    encoded: dict[str, list[bytes]] = {
        "avro-single-object": [encode_single_object(schema, r) for r in records],
        "json": [json.dumps(r).encode() for r in records],
    }
    confluent_id = catalog.confluent_id(schema)
    if confluent_id is not None:
        encoded["confluent"] = [encode_confluent(confluent_id, schema, r) for r in records]
    return encoded


def _fastavro_eps(schema: SchemaVersion, single_objects: list[bytes], repeats: int) -> float:
    """Events/s of fastavro reading the bodies of single-object messages, unchecked."""
    bodies = [BytesIO(v[10:]) for v in single_objects]
    parsed = schema.parsed

    def fastavro_decode() -> None:
        for body in bodies:
            body.seek(0)
            schemaless_reader(body, parsed, None)

    return _best_eps(len(bodies), repeats, fastavro_decode)


def _ingest_row(
    options: BenchOptions,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    records: list[dict[str, Any]],
    fmt: str,
    values: list[bytes],
    fastavro_eps: float,
) -> dict[str, Any]:
    """One wire format's row: Ingestion.process events/s against fastavro's."""
    settings = options.settings
    n, repeats = len(records), options.repeats
    topics = spec.topics(settings.namespace)
    messages = [
        InMessage(topics.raw, 0, i, str(r[spec.id_field]).encode(), v, 0)
        for i, (r, v) in enumerate(zip(records, values, strict=True))
    ]
    batches = _batches(messages, settings.batch_size)
    ingestion = Ingestion(
        spec,
        catalog,
        events_topic=topics.events,
        dlq_topic=settings.topic("riverline.dlq"),
        max_bytes=settings.max_message_bytes,
        max_id_bytes=settings.max_id_bytes,
        max_event_time_ahead=settings.max_event_time_ahead,
    )
    ok = sum(r.ok for r in _process_all(ingestion, batches))  # warm-up and a check
    if ok != n:
        raise RiverlineError(
            f"benchmark events of {catalog.latest(spec.subject).label} did not all ingest "
            f"({ok} of {n} in {fmt}); the benchmark's event generator is wrong for this schema"
        )
    riverline_eps = _best_eps(n, repeats, partial(_process_all, ingestion, batches))
    row: dict[str, Any] = {
        "format": fmt,
        "events": n,
        "bytes": round(sum(map(len, values)) / n, 1),
        "riverline_eps": round(riverline_eps),
        "fastavro_eps": round(fastavro_eps),
        "ratio": float(f"{riverline_eps / fastavro_eps:.3g}"),  # 3 significant digits
    }
    if fmt == "json":
        row["json_loads_eps"] = round(_best_eps(n, repeats, partial(_json_loads_all, values)))
    return row


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


def _process_all(stage: Ingestion, batches: Iterable[Sequence[InMessage]]) -> list[Any]:
    return [stage.process(b) for b in batches]


def _json_loads_all(values: Iterable[bytes]) -> list[Any]:
    return [json.loads(v) for v in values]
