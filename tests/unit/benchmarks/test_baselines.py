"""The Faust baselines get the worker's client set-up: only the work they do differs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
import pytest

import agents.internals
from benchmarks.baselines import faust_app
from streams.settings import PRODUCER_BATCH_BYTES, Settings


@pytest.mark.parametrize("kind", ["empty", "floor", "naive"])
def test_a_faust_baseline_has_the_workers_fetch_wait_and_producer_batches(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetch_waits: list[int] = []
    monkeypatch.setattr(agents.internals, "use_fetch_max_wait", fetch_waits.append)
    settings = Settings.from_env(bootstrap=None)
    args = {
        "bootstrap": "localhost:9",
        "source": "t.raw",
        "prefix": "t",
        "batch_size": settings.batch_size,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "record_batch_bytes": PRODUCER_BATCH_BYTES,
        "datadir": str(tmp_path),
    }

    async def build() -> tuple[faust.App, faust.App]:
        # The worker's producer lingers as long as Faust's default: a plain app's.
        return faust_app(kind, args), faust.App("plain", autodiscover=False)

    app, plain = asyncio.run(build())
    assert fetch_waits == [settings.fetch_max_wait_ms]
    assert app.conf.producer_max_batch_size == PRODUCER_BATCH_BYTES
    assert app.conf.producer_linger == plain.conf.producer_linger
