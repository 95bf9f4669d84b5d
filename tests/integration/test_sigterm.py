"""SIGTERM while events flow: the worker finishes its batch, checkpoints, commits and exits
0 within 10 s; a restarted worker carries on with nothing lost and nothing repeated.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from faultkit import Producer, Rig, committed, make_events, make_rig, read_all, verify

pytestmark = pytest.mark.integration

N_EVENTS = 4000
RATE = 200.0  # events/s: 20 s of production, so SIGTERM lands while events flow
EXIT_WITHIN = 10.0


def test_sigterm_checkpoints_commits_and_exits_0_within_10_s(
    settings_factory: Any, tmp_path: Path, record_property: Any
) -> None:
    # Checkpoints far apart: only the clean stop can have saved the latest state.
    rig = make_rig(settings_factory, tmp_path, checkpoint_every=10**9, checkpoint_interval=3600.0)
    events = make_events(N_EVENTS, 300, seed=9)
    producer = Producer(rig.settings, rig.raw, events, rate=RATE)
    worker = rig.worker
    worker.start()
    try:
        worker.wait_ready()
        producer.start()
        rig.wait_for(lambda: rig.processed() >= N_EVENTS // 8, "an eighth of the events")
        assert worker.proc is not None
        # SIGUSR1 (agents.diagnostics) logs the worker's state and changes nothing.
        worker.proc.send_signal(signal.SIGUSR1)
        rig.wait_for(
            lambda: "state on SIGUSR1" in worker.log_path.read_text(errors="replace"),
            "the SIGUSR1 state dump",
        )
        signalled = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        code = worker.proc.wait(timeout=60)
        took = time.monotonic() - signalled
        record_property("sigterm_exit_seconds", round(took, 2))
        print(f"\nSIGTERM to exit: {took:.2f} s, code {code}")
        log = worker.log_path.read_text(errors="replace")
        assert code == 0, log[-3000:]
        dump = log[log.index("state on SIGUSR1") :]
        assert "aiokafka " in dump
        assert "position" in dump
        assert "=== run_stage" in dump  # each stage's batch loop, and where it waits
        assert took < EXIT_WITHIN, f"the worker took {took:.1f} s to exit"
        assert producer.is_alive(), "events must still be flowing when SIGTERM arrives"

        # What the features stage had processed is what it checkpointed and committed.
        stopped = verify(rig, [])
        assert stopped.checkpoints, "no checkpoint was written at the clean stop"
        assert stopped.feature_duplicates == 0
        features_written = len(_feature_ids(rig))
        assert sum(stopped.checkpoints.values()) == features_written
        # The features stage reads (and Riverline commits) P.raw.
        read = rig.raw
        assert committed(rig.settings, read) == stopped.checkpoints

        worker.start()
        worker.wait_ready()
        producer.join(timeout=120)
        assert producer.error is None, producer.error
        rig.wait_drained(N_EVENTS)
    finally:
        code = worker.stop()
    assert code == 0
    verdict = verify(rig, events)
    print(verdict.summary())
    assert verdict.lost == []
    assert verdict.gaps == {}
    assert verdict.unaccounted_raw == []
    assert verdict.features_differ == []
    assert verdict.feature_duplicates == 0  # a clean stop repeats nothing


def _feature_ids(rig: Rig) -> set[str]:
    return {r.headers["rl.event_id"] for r in read_all(rig.settings, rig.topic("features"))}
