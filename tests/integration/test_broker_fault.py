"""Broker fault: SIGKILL the broker mid-run, restart it 10 s later (same data dir, same
ports); the worker reconnects by itself and the run completes with no loss, and in
exactly-once mode with no duplicate either.

Uses the session's local broker (restarted in ``finally`` whatever happens); skipped with
``RIVERLINE_BOOTSTRAP``, since Riverline cannot kill a cluster it does not run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from faultkit import make_events, make_rig, produce_all, verify

from streams.kafka.broker import LocalBroker

pytestmark = pytest.mark.integration

N_EVENTS = 3000
DOWN_FOR = 10.0


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_worker_survives_a_broker_crash_and_restart(
    guarantee: str,
    settings_factory: Any,
    local_broker: LocalBroker | None,
    tmp_path: Path,
    record_property: Any,
) -> None:
    if local_broker is None:
        pytest.skip("RIVERLINE_BOOTSTRAP is set: no local broker to kill")
    rig = make_rig(
        settings_factory,
        tmp_path,
        checkpoint_every=500,
        checkpoint_interval=1.0,
        guarantee=guarantee,
    )
    events = make_events(N_EVENTS, 200, seed=2)
    produce_all(rig.settings, rig.raw, events)
    worker = rig.worker
    worker.start()
    try:
        worker.wait_ready()
        rig.wait_for(lambda: rig.processed() >= N_EVENTS // 4, "a quarter of the events")
        at = rig.processed()
        local_broker.kill()
        try:
            time.sleep(DOWN_FOR)
            assert worker.proc is not None
            assert worker.proc.poll() is None, "the worker exited while the broker was down"
        finally:
            local_broker.up(log=lambda _: None)
        restarted = time.monotonic()
        rig.wait_drained(N_EVENTS, timeout=150)
        recovered = time.monotonic() - restarted
        assert worker.proc.poll() is None, "the worker exited after the broker came back"
        pid_unchanged = worker.proc.pid
    finally:
        code = worker.stop()
    assert code == 0, worker.log_path.read_text(errors="replace")[-3000:]
    verdict = verify(rig, events)
    record_property("broker_fault_duplicates", verdict.prediction_duplicates)
    print(
        f"\nbroker killed at {at}/{N_EVENTS} events processed, down {DOWN_FOR:.0f} s; "
        f"drained {recovered:.1f} s after the restart by the same worker (pid "
        f"{pid_unchanged}); {verdict.summary()}"
    )
    assert verdict.lost == []
    assert verdict.gaps == {}
    assert verdict.unaccounted_raw == []
    assert verdict.features_differ == []
    if guarantee == "exactly_once":
        assert verdict.ingest_duplicates == 0
        assert verdict.feature_duplicates == 0
        assert verdict.prediction_duplicates == 0
