"""Drift on a model's error stream: a River detector (ADWIN by default) per model version.

Only an *increase* of the error rate counts as drift: a model getting better is not an
alarm. The detector sees 1 for a wrong prediction and 0 for a right one (classification)
or the absolute error (regression).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from river import drift

from streams.errors import SpecError

__all__ = ["DETECTORS", "DriftEvent", "DriftMonitor"]

DETECTORS: dict[str, Any] = {
    "ADWIN": drift.ADWIN,
    "PageHinkley": drift.PageHinkley,
    "KSWIN": drift.KSWIN,
}


@dataclass(frozen=True)
class DriftEvent:
    """An increase of the error rate, detected after ``samples`` labelled events."""

    samples: int
    error_before: float
    error_after: float


class DriftMonitor:
    """Watch one model's errors; :meth:`update` returns a DriftEvent on an increase.

    Examples
    --------
    >>> monitor = DriftMonitor()
    >>> events = [monitor.update(0.0) for _ in range(1000)]
    >>> events += [monitor.update(1.0) for _ in range(200)]
    >>> [e.samples for e in events if e][:1]
    [1024]
    """

    def __init__(self, detector: str = "ADWIN", **params: Any) -> None:
        if detector not in DETECTORS:
            raise SpecError(
                f"unknown drift detector {detector!r}. Valid: {', '.join(sorted(DETECTORS))}."
            )
        self._make = lambda: DETECTORS[detector](**params)
        self.detector = self._make()
        self.samples = 0
        self._sum = 0.0
        self._n = 0

    def update(self, error: float) -> DriftEvent | None:
        self.samples += 1
        self._sum += error
        self._n += 1
        before = self._sum / self._n
        self.detector.update(error)
        if not self.detector.drift_detected:
            return None
        # ADWIN keeps only the recent window after a change: its mean is the new error.
        after = float(getattr(self.detector, "estimation", error))
        self._sum, self._n = after, 1
        if after <= before:
            return None
        return DriftEvent(self.samples, before, after)
