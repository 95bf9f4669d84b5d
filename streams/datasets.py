"""Datasets that ``riverline produce`` replays as events."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from river import datasets as river_datasets

from streams.errors import SpecError
from streams.transactions import Transactions

__all__ = ["DATASETS", "dataset_rows"]


def _phishing(size: int | None) -> Iterable[tuple[dict[str, Any], Any]]:
    rows: Iterable[tuple[dict[str, Any], Any]] = river_datasets.Phishing()
    return rows if size is None else itertools.islice(rows, size)


def _transactions(size: int | None) -> Iterable[tuple[dict[str, Any], Any]]:
    return Transactions() if size is None else Transactions(rows=size)


#: dataset name -> rows factory (``size``: how many rows; None: the dataset's default).
DATASETS: dict[str, Callable[[int | None], Iterable[tuple[dict[str, Any], Any]]]] = {
    "phishing": _phishing,
    "transactions": _transactions,
}


def dataset_rows(name: str, size: int | None = None) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yield (features, label) in the dataset's own order; the first ``size`` rows if given."""
    if name not in DATASETS:
        raise SpecError(f"unknown dataset {name!r}. Known datasets: {', '.join(sorted(DATASETS))}.")
    yield from DATASETS[name](size)
