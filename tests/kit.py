"""Helpers shared by the unit tests (the integration and chaos tests share tests/faultkit.py).

Imported as a top-level module (``from kit import ...``): the session's conftest puts
``tests/`` on the path.
"""

from __future__ import annotations

from typing import Any

from streams.features.stage import Featurization
from streams.messages import InMessage
from streams.pipeline.lineage import Lineage
from streams.pipeline.stage import StageResult, dead_letter_reason
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object

__all__ = ["featurize_events"]


def featurize_events(
    catalog: SchemaCatalog, stage: Featurization, batch: list[InMessage]
) -> StageResult:
    """The features stage's part of a one-pass batch, over ``P.events`` messages: select
    them in order, then featurize each partition's records (decoded back from their
    canonical Avro) as :class:`streams.pipeline.onepass.OnePass` does after ingest."""
    result = StageResult()
    by_partition: dict[int, list[tuple[InMessage, dict[str, Any], Lineage]]] = {}
    for msg in stage.select(batch).events:
        _, record = decode_single_object(catalog, msg.value or b"", stage.reader)
        good = by_partition.setdefault(msg.partition, [])
        good.append((msg, record, Lineage.from_headers(msg.headers)))
    for partition, good in by_partition.items():
        vectors, dead = stage.featurize(partition, good)
        for _, out in dead:
            result.sends.append(out)
            result.dead[dead_letter_reason(out)] += 1
        result.sends += [v.out for v in vectors]
        result.ok += len(vectors)
    return result
