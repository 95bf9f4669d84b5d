"""A batch that fails as a whole, and an agent that crashes, cost no event.

The worker runs with a ``sitecustomize`` that the test puts on its path (test code only):
when a marker file appears, the next batch's processing raises, or the agent's loop
crashes outside any batch. The pipeline must go down visibly (alert, failure counted),
restore its last checkpoint, come back up, and in the end have predicted every event with
the features of an uninterrupted run.

Events that stop short of a checkpoint's count are checkpointed and committed within its
interval all the same: no later batch has to come.

Another test takes a pipeline over its checkpoint limit: the checkpoint cannot be
written, and the worker says so (``/ready`` 503, an alert) instead of silently not
committing, while events go on being predicted.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    Producer,
    committed,
    end_offsets,
    make_events,
    make_rig,
    produce_all,
    verify,
)
from prometheus_client.parser import text_string_to_metric_families

from streams.store.outputs import read_alerts

pytestmark = pytest.mark.integration

N_EVENTS = 3000

#: Loaded by the worker's interpreter at start (the test puts it first on PYTHONPATH).
SITECUSTOMIZE = """
import os
import time
from pathlib import Path

import agents.io
import streams.pipeline.onepass

_MARKERS = Path(os.environ["TEST_FAULT_MARKERS"])
_process = streams.pipeline.onepass.OnePass.process
_to_in_message = agents.io.to_in_message


def _armed(name):
    marker = _MARKERS / name
    if marker.exists():
        marker.unlink()
        return True
    return False


def process(self, batch):
    if _armed("fail-batch"):
        raise RuntimeError("injected: this batch fails as a whole")
    return _process(self, batch)


def to_in_message(event):
    if _armed("crash-agent"):
        raise RuntimeError("injected: the agent's loop crashes")
    return _to_in_message(event)


streams.pipeline.onepass.OnePass.process = process
agents.io.to_in_message = to_in_message
"""


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_failed_batch_and_a_crashed_agent_are_recovered_from_the_last_checkpoint(
    settings_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    monkeypatch.setenv("TEST_FAULT_MARKERS", str(markers))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
    rig = make_rig(settings_factory, tmp_path, checkpoint_every=500, checkpoint_interval=1.0)
    events = make_events(N_EVENTS, keys=100, seed=11)
    producer = Producer(rig.settings, rig.raw, events, rate=300.0)
    rig.worker.start()
    try:
        rig.worker.wait_ready()
        producer.start()
        rig.wait_for(lambda: rig.processed() >= 800, "800 events")
        (markers / "fail-batch").touch()
        rig.wait_for(lambda: not (markers / "fail-batch").exists(), "the failed batch")
        rig.wait_for(lambda: rig.processed() >= 1800, "1,800 events")
        (markers / "crash-agent").touch()
        rig.wait_for(lambda: not (markers / "crash-agent").exists(), "the crash")
        producer.join(timeout=120)
        assert producer.error is None, producer.error
        rig.wait_drained(N_EVENTS)
        samples = _metrics(rig.worker.url)
        ready: Any = rig.worker.get_json("/ready")
    finally:
        code = rig.worker.stop(timeout=60)
    log = (rig.root / "worker.log").read_text()
    assert code == 0, log[-3000:]
    name = rig.spec.name
    assert (
        samples[("riverline_pipeline_failures_total", (("kind", "batch"), ("pipeline", name)))] == 1
    )
    assert (
        samples[("riverline_pipeline_failures_total", (("kind", "agent"), ("pipeline", name)))] == 1
    )
    assert samples[("riverline_pipeline_up", (("pipeline", name),))] == 1
    assert ready["ready"] is True, ready
    assert "restoring its last checkpoint" in log
    alerts = asyncio.run(read_alerts(rig.settings, rig.catalog, name))
    down = [a for a in alerts if a["kind"] == "pipeline_down"]
    assert [a["message"].split(" after ")[1][:27] for a in down] == [
        "RuntimeError: injected: thi",
        "RuntimeError: the agent's l",
    ]
    verdict = verify(rig, events)
    print(verdict.summary())
    assert verdict.lost == []
    assert verdict.gaps == {}
    assert verdict.unaccounted_raw == []
    assert verdict.features_differ == []


def test_a_quiet_input_is_checkpointed_and_committed_within_the_interval(
    settings_factory: Any, tmp_path: Path
) -> None:
    rig = make_rig(settings_factory, tmp_path, checkpoint_every=10**9, checkpoint_interval=3.0)
    events = make_events(150, keys=50, seed=13)
    rig.worker.start()
    try:
        rig.worker.wait_ready()
        time.sleep(3.0)  # the first batch's checkpoint is due at once
        produce_all(rig.settings, rig.raw, events[:100])
        rig.wait_for(lambda: rig.processed() >= 100, "the first events")
        # Within the interval of that checkpoint: the last batch before a quiet input.
        produce_all(rig.settings, rig.raw, events[100:])
        rig.wait_drained(len(events))
        ends = end_offsets(rig.settings, rig.raw)
        rig.wait_for(
            lambda: committed(rig.settings, rig.raw) == ends, "the raw offsets committed", 30
        )
    finally:
        code = rig.worker.stop()
    assert code == 0
    assert verify(rig, events).lost == []


def test_a_checkpoint_over_its_limit_takes_the_pipeline_down_loudly(
    settings_factory: Any, tmp_path: Path
) -> None:
    rig = make_rig(
        settings_factory,
        tmp_path,
        checkpoint_every=300,
        checkpoint_interval=1.0,
        checkpoint_max_bytes=16 * 1024,  # far less than 2,000 cards of feature state
    )
    events = make_events(2000, keys=2000, seed=12)
    producer = Producer(rig.settings, rig.raw, events, rate=500.0)
    rig.worker.start()
    try:
        rig.worker.wait_ready()
        producer.start()
        producer.join(timeout=120)
        assert producer.error is None, producer.error

        def down() -> bool:
            found: Any = rig.worker.get_json("/ready")
            return found.get("ready") is False and rig.spec.name in found.get("down", {})

        rig.wait_for(down, "the pipeline to be down")
        ready: Any = rig.worker.get_json("/ready")
        rig.wait_drained(2000)
        samples = _metrics(rig.worker.url)
    finally:
        rig.worker.stop(timeout=60)
    log = (rig.root / "worker.log").read_text()
    why = ready["down"][rig.spec.name]["checkpoint"]
    assert "RIVERLINE_CHECKPOINT_MAX_BYTES" in why
    assert "feature state of" in log  # the budget's warning, before the limit
    assert "of RIVERLINE_CHECKPOINT_MAX_BYTES" in log
    name = rig.spec.name
    assert samples[("riverline_pipeline_up", (("pipeline", name),))] == 0
    assert (
        samples[("riverline_pipeline_failures_total", (("kind", "checkpoint"), ("pipeline", name)))]
        >= 1
    )
    alerts = asyncio.run(read_alerts(rig.settings, rig.catalog, name))
    assert any(a["kind"] == "checkpoint_failed" for a in alerts)
    # Events go on being predicted while checkpoints fail.
    verdict = verify(rig, events)
    assert verdict.lost == []
