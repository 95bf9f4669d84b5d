"""Datasets that ``riverline produce`` replays as events."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from river import datasets as river_datasets

from streams.errors import SpecError
from streams.ingestion.transactions import Transactions

__all__ = ["DATASETS", "dataset_rows"]


def _phishing(size: int | None) -> Iterable[tuple[dict[str, Any], Any]]:
    rows: Iterable[tuple[dict[str, Any], Any]] = river_datasets.Phishing()
    return rows if size is None else itertools.islice(rows, size)


def _transactions(size: int | None) -> Iterable[tuple[dict[str, Any], Any]]:
    return Transactions() if size is None else Transactions(rows=size)


def _agrawal_drift(size: int | None) -> Iterable[tuple[dict[str, Any], Any]]:
    """Agrawal function 0 drifting to function 4 at 10,000 (the drift tests' stream)."""
    stream = river_datasets.synth.ConceptDriftStream(
        stream=river_datasets.synth.Agrawal(classification_function=0, seed=42),
        drift_stream=river_datasets.synth.Agrawal(classification_function=4, seed=42),
        seed=1,
        position=10_000,
        width=1_000,
    )
    return ((x, bool(y)) for x, y in stream.take(13_000 if size is None else size))


#: dataset name -> rows factory (``size``: how many rows; None: the dataset's default).
DATASETS: dict[str, Callable[[int | None], Iterable[tuple[dict[str, Any], Any]]]] = {
    "agrawal_drift": _agrawal_drift,
    "phishing": _phishing,
    "transactions": _transactions,
}


def dataset_rows(name: str, size: int | None = None) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield (features, label) in the dataset's own order; the first ``size`` rows if given."""
    if name not in DATASETS:
        raise SpecError(f"unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}.")
    yield from DATASETS[name](size)
