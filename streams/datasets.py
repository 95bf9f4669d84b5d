"""Datasets that ``riverline produce`` replays as events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from river import datasets as river_datasets

from streams.errors import SpecError

__all__ = ["DATASETS", "dataset_rows"]

#: dataset name -> (River dataset class, number of rows)
DATASETS: dict[str, Any] = {
    "phishing": river_datasets.Phishing,
}


def dataset_rows(name: str) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield (features, label) in the dataset's own order."""
    if name not in DATASETS:
        raise SpecError(f"unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}.")
    yield from DATASETS[name]()
