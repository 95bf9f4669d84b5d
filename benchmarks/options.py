"""What every benchmark section gets: settings, the run's size, where progress goes."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from streams.settings import Settings

__all__ = ["CONTENDERS", "BenchOptions", "say"]

#: The contenders of the pipeline section, in report order.
CONTENDERS: Final = ("raw", "empty", "floor", "naive", "riverline")


@dataclass(frozen=True)
class BenchOptions:
    """What every section gets: settings (topics, cluster, paths) and the run's size."""

    settings: Settings
    quick: bool = False
    pipeline: Path | None = None
    """Pipeline spec to ingest (default: ``pipelines/phishing.toml``)."""
    seed: int = 7
    events_override: int | None = None
    """Events of the pipeline and decoupled sections (default 200,000; 5,000 with ``quick``)."""
    partitions: int = 1
    """Partitions of the pipeline section's topics."""
    contenders: tuple[str, ...] = CONTENDERS
    """Which contenders of the pipeline section run (always in :data:`CONTENDERS` order)."""
    latency_load: float = 0.25
    """Offered load of the latency runs (and of the decoupled section's staleness run), as a
    share of the measured events/s."""
    latency_for: float | None = None
    """Seconds of offered load in the latency run (default 30; 3 with ``quick``)."""
    latency_events: int = 20_000
    stages_before: str | None = None
    """A revision whose stages the ``stages`` section measures beside this checkout's."""
    drain_timeout: float = 1800.0
    progress: Callable[[str], None] | None = None
    progress_every: float = 5.0
    run_tag: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def events(self) -> int:
        return 2_000 if self.quick else 20_000

    @property
    def kafka_events(self) -> int:
        if self.events_override is not None:
            return self.events_override
        return 5_000 if self.quick else 200_000

    @property
    def quiet_probe_seconds(self) -> float:
        """Seconds of :class:`~benchmarks.stallprobe.StallProbe` on the quiet machine."""
        return 1.0 if self.quick else 10.0

    @property
    def latency_seconds(self) -> float:
        if self.latency_for is not None:
            return self.latency_for
        return 3.0 if self.quick else 30.0

    @property
    def namespace(self) -> str:
        """Topic and group prefix of this run, inside the settings' own namespace."""
        return f"{self.settings.namespace}bench{self.run_tag}."

    @property
    def repeats(self) -> int:
        return 1 if self.quick else 3


def say(options: BenchOptions, line: str) -> None:
    """Report progress, if the run asked for it."""
    if options.progress is not None:
        options.progress(line)
