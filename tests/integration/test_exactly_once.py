"""Exactly-once mode: a worker paused past its session timeout is fenced.

Worker A runs with ``RIVERLINE_GUARANTEE=exactly_once`` while events flow; it is paused
with SIGSTOP mid-run (its transaction open), and worker B (the same pipeline and home: a
supervisor's replacement for a hung process) takes its partitions once A's session
expires, fencing A's transactional id. A is resumed: its writes are refused (fenced),
nothing it sent in its open transaction becomes visible, and it is stopped. B processes
everything; a read_committed consumer finds each event's outputs exactly once.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from faultkit import Producer, make_events, make_rig, verify

from streams.cli.workerproc import WorkerProcess
from streams.kafka.broker import free_port

pytestmark = pytest.mark.integration

N_EVENTS = 3000
RATE = 150.0  # events/s: 20 s of production, so both workers see events flow
FENCED = ("took over its inputs", "fenced: another worker")


def _processed(worker: WorkerProcess) -> int:
    try:
        status: Any = worker.get_json("/status.json", timeout=1.0)
        return int(sum(status["pipelines"]["seqs"]["feature_partitions"].values()))
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def test_a_paused_worker_is_fenced_and_nothing_repeats(
    settings_factory: Any, tmp_path: Path
) -> None:
    rig = make_rig(
        settings_factory,
        tmp_path,
        guarantee="exactly_once",
        commit_interval=0.5,
        checkpoint_every=400,
    )
    events = make_events(N_EVENTS, 300, seed=5)
    producer = Producer(rig.settings, rig.raw, events, rate=RATE)
    a = rig.worker
    b_settings = rig.settings.model_copy(update={"web_port": free_port()})
    b = WorkerProcess(b_settings, [rig.spec_path], tmp_path / "worker-b.log")
    a.start()
    try:
        a.wait_ready()
        producer.start()
        rig.wait_for(lambda: rig.processed() >= N_EVENTS // 6, "a sixth of the events")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)
        paused_at = rig.processed()
        b.start()
        rig.wait_for(lambda: _processed(b) >= paused_at + 300, "worker B to take over")
        a.proc.send_signal(signal.SIGCONT)

        def fenced() -> bool:
            log = a.log_path.read_text(errors="replace")
            return any(line in log for line in FENCED)

        rig.wait_for(fenced, "worker A to find itself fenced", timeout=120)
        a.proc.send_signal(signal.SIGTERM)
        assert a.proc.wait(timeout=60) is not None
        producer.join(timeout=120)
        assert producer.error is None, producer.error
        rig.worker = b  # wait_drained follows the worker that runs on
        rig.wait_drained(N_EVENTS, timeout=240)
    finally:
        if a.proc is not None and a.proc.poll() is None:
            a.proc.send_signal(signal.SIGCONT)
        a.stop()
        code = b.stop()
    assert code == 0, b.log_path.read_text(errors="replace")[-3000:]
    verdict = verify(rig, events)
    print(f"\nfenced: A paused at {paused_at} events; {verdict.summary()}")
    assert verdict.lost == []
    assert verdict.gaps == {}
    assert verdict.unaccounted_raw == []
    assert verdict.ingest_duplicates == 0
    assert verdict.feature_duplicates == 0
    assert verdict.prediction_duplicates == 0
    assert verdict.features_differ == []
