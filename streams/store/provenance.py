"""Where a prediction came from: ``riverline lineage EVENT_ID`` from Riverline's own records.

It reads the offline store (events, features, predictions, labels) and the model
registry's manifest of the model version named on the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from streams.errors import RiverlineError
from streams.models.registry import ModelRegistry, RegistryError
from streams.store.offline import OfflineStore

__all__ = ["Provenance", "UnknownEvent", "trace"]


class UnknownEvent(RiverlineError):
    """No record of this event id anywhere Riverline looked."""


@dataclass
class Provenance:
    """Everything known about one event, from raw offset to label."""

    event_id: str
    pipeline: str = ""
    raw_source: str = ""
    writer_schema: str = ""
    event_ts: int | None = None
    ingest_ts: int | None = None
    feature_set: str = ""
    feature_values: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    manifest: dict[str, Any] | None = None
    manifest_error: str = ""
    prediction: Any = None
    proba: dict[str, float] = field(default_factory=dict)
    label: Any = None
    label_source: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _rows(store: OfflineStore, kind: str, event_id: str) -> list[dict[str, Any]]:
    table = store.read(kind)
    if table.num_rows == 0 or "event_id" not in table.column_names:
        return []
    mask = pc.equal(table.column("event_id"), pa.scalar(event_id))
    return table.filter(mask).to_pylist()


def trace(
    event_id: str, store: OfflineStore, registries: dict[str, ModelRegistry] | None = None
) -> Provenance:
    """Gather the lineage of ``event_id``; raises :class:`UnknownEvent` if nothing is known."""
    found = Provenance(event_id)
    events = _rows(store, "events", event_id)
    features = _rows(store, "features", event_id)
    predictions = _rows(store, "predictions", event_id)
    labels = _rows(store, "labels", event_id)
    if not (events or features or predictions or labels):
        raise UnknownEvent(
            f"no event with id {event_id!r} in the offline store at {store.url}. Check the "
            "id (it is the rl.event_id header), and that the worker's sink has written it."
        )
    for row in events[:1]:
        found.pipeline = str(row.get("pipeline", ""))
        found.raw_source = str(row.get("rl_source", ""))
        found.writer_schema = str(row.get("rl_schema", ""))
    for row in features[:1]:
        found.feature_set = str(row.get("rl_features", ""))
        found.feature_values = {
            k.removeprefix("value."): v for k, v in row.items() if k.startswith("value.")
        }
        found.event_ts = row.get("event_ts")
    for row in predictions[:1]:
        found.pipeline = str(row.get("pipeline", found.pipeline))
        found.raw_source = found.raw_source or str(row.get("source", ""))
        found.writer_schema = found.writer_schema or str(row.get("schema", ""))
        found.feature_set = found.feature_set or str(row.get("features", ""))
        found.model = str(row.get("model", ""))
        found.prediction = row.get("prediction")
        found.proba = {
            k.removeprefix("proba."): v
            for k, v in row.items()
            if k.startswith("proba.") and v is not None
        }
        found.event_ts = row.get("event_ts", found.event_ts)
        found.ingest_ts = row.get("ingest_ts")
        if row.get("label") is not None:
            found.label, found.label_source = row["label"], "event"
    for row in labels[:1]:
        found.label, found.label_source = row.get("label"), "labels topic"
    if found.model and registries and found.pipeline in registries:
        name, _, version = found.model.rpartition("@")
        try:
            manifest = registries[found.pipeline].manifest(name, int(version))
            found.manifest = manifest.__dict__
        except (RegistryError, ValueError) as exc:
            found.manifest_error = str(exc)
    return found
