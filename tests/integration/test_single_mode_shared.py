"""A single-mode pipeline on two workers pauses instead of learning apart.

In single mode one worker's model learns from every raw partition. A second worker joining
the group (its own ``RIVERLINE_HOME``, as on another machine) would split the partitions and
the learning: instead both pause, say why (``/ready`` 503, ``/status.json``, an alert), and
when the second one leaves the first goes on where it stopped, losing nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faultkit import Producer, make_events, make_rig, read_all, verify

from streams.cli.workerproc import WorkerProcess
from streams.kafka.broker import free_port

pytestmark = pytest.mark.integration


def _down(worker: WorkerProcess) -> dict[str, str]:
    try:
        return dict(worker.get_json("/status.json", timeout=2.0)["pipelines"]["seqs"]["down"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def test_a_second_worker_pauses_a_single_mode_pipeline(settings_factory: Any, tmp_path: Path):
    rig = make_rig(settings_factory, tmp_path, checkpoint_every=200, checkpoint_interval=1.0)
    events = make_events(1200, keys=100, seed=31)
    first = rig.worker
    second = WorkerProcess(
        rig.settings.model_copy(update={"home": rig.root / "home-second", "web_port": free_port()}),
        [rig.spec_path],
        rig.root / "second.log",
    )
    producer = Producer(rig.settings, rig.raw, events[:600], rate=300.0)
    try:
        first.start()
        first.wait_ready()
        producer.start()
        producer.join(timeout=60)
        rig.wait_drained(600)
        second.start()
        rig.wait_for(
            lambda: "shared" in _down(first) and "shared" in _down(second),
            "both workers to pause",
        )
        assert "single mode" in _down(first)["shared"]
        assert 'mode = "decoupled"' in _down(second)["shared"]
        paused_at = len(read_all(rig.settings, rig.topic("predictions")))
        more = Producer(rig.settings, rig.raw, events[600:], rate=300.0)
        more.start()
        more.join(timeout=60)
        assert len(read_all(rig.settings, rig.topic("predictions"))) == paused_at
        second.stop(timeout=60)
        rig.wait_for(lambda: not _down(first), "the first worker to go on alone")
        rig.wait_drained(len(events))
    finally:
        second.stop(timeout=60)
        first.stop(timeout=60)
    alerts = [r for r in read_all(rig.settings, rig.settings.topic("riverline.alerts"))]
    assert any(b"single_mode_shared" in (r.value or b"") for r in alerts)
    verdict = verify(rig, events)
    print(verdict.summary())
    assert verdict.lost == []
    assert verdict.unaccounted_raw == []
    assert verdict.features_differ == []
