"""Chaos: SIGKILL the worker at seeded points while keyed events flow, restart it each time,
then check every output.

Kill points are seeded thresholds of the features stage's progress; every other one waits
for the next ``checkpoint of`` log line after its threshold and kills right then, while
that checkpoint's offsets are being committed (mid-checkpoint); the others land wherever
the stage is (mid-batch: batches are 200 events). The verifier (``tests/faultkit.py``)
asserts: every raw offset is on ``P.events`` or the dead-letter topic, every valid event
has a prediction, per-key sequences have no gaps, features equal an uninterrupted run's,
and every repeated feature vector is of an event that was processed after the checkpoint
that preceded a kill. It reports loss and the duplicate rate.

Size: 5 kills in 6,000 events over 600 keys in ``make test``; ``make chaos`` runs 10 kills
in 100,000 events (``RIVERLINE_CHAOS_KILLS``, ``RIVERLINE_CHAOS_EVENTS``).

The same kills run again with ``RIVERLINE_GUARANTEE=exactly_once`` (2,000 events in
``make test``, ``RIVERLINE_CHAOS_EOS_EVENTS``; 100,000 in ``make chaos``): there a
``read_committed`` consumer must find every output exactly once.

The models: the worker snapshots them every few hundred events, so most kills lose some
learning that the restored worker must redo exactly once. The champion (a logistic
regression) learns the two ``P.features`` partitions in whatever order they arrive, so an
uninterrupted run would learn the same events in another interleaving: its final version
must have learned each valid event exactly once (``samples_seen``). The shadow, a
Bernoulli Naive Bayes, keeps integer counts that do not depend on that order: its final
version must equal, count for count, one learning every event once offline. (With one
partition the order is fixed and the model equals bit for bit:
``tests/integration/test_lifecycle_restart.py``.)
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    NAME,
    Producer,
    Rig,
    Verdict,
    end_offsets,
    feature_checkpoints,
    make_events,
    make_rig,
    read_all,
    verify,
)

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

N_EVENTS = int(os.environ.get("RIVERLINE_CHAOS_EVENTS", "6000"))
#: The exactly-once run's size (``make chaos``: the same as the other's).
EOS_EVENTS = int(os.environ.get("RIVERLINE_CHAOS_EOS_EVENTS", str(min(N_EVENTS, 2000))))
N_KEYS = max(1, N_EVENTS // 10)
#: Kills per run; every other one mid-checkpoint.
N_KILLS = int(os.environ.get("RIVERLINE_CHAOS_KILLS", "5"))
SEED = 99
CHECKPOINT_LINE = "checkpoint of "


def _checkpoint_lines(rig: Rig) -> int:
    try:
        return rig.worker.log_path.read_text(errors="replace").count(CHECKPOINT_LINE)
    except FileNotFoundError:
        return 0


def _latest_checkpoints(rig: Rig) -> dict[int, int]:
    from streams.state.checkpoint import Checkpoint

    latest: dict[str, Checkpoint] = {}
    for r in read_all(rig.settings, rig.settings.topic("riverline.checkpoints")):
        cp = Checkpoint.from_bytes(r.value)
        latest[cp.key] = cp
    return feature_checkpoints(latest.values())


def _run_with_kills(rig: Rig, n_events: int) -> tuple[list[dict[str, Any]], list[Any], float]:
    """Produce ``n_events`` while SIGKILLing the worker at :data:`N_KILLS` seeded points
    (every other one right after a checkpoint's log line), restarting it each time; then
    wait until every event is processed and stop the worker cleanly."""
    events = make_events(n_events, max(1, n_events // 10), SEED)
    rng = random.Random(SEED)
    points = sorted(rng.sample(range(n_events // 20, n_events * 9 // 10), N_KILLS))
    producer = Producer(rig.settings, rig.raw, events, rate=max(300.0, n_events / 40.0))
    worker = rig.worker
    # Per kill: kind, progress at the kill, checkpoints then, end of P.features then.
    kills: list[dict[str, Any]] = []
    started = time.monotonic()
    worker.start()
    try:
        worker.wait_ready()
        producer.start()
        for i, at in enumerate(points):
            mid_checkpoint = i % 2 == 1
            rig.wait_for(lambda at=at: rig.processed() >= at, f"{at} events")
            if mid_checkpoint:
                seen = _checkpoint_lines(rig)
                rig.wait_for(lambda seen=seen: _checkpoint_lines(rig) > seen, "a checkpoint")
            progress = rig.processed()
            assert worker.proc is not None
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait()
            kills.append(
                {
                    "kind": "mid-checkpoint" if mid_checkpoint else "mid-batch",
                    "at": progress,
                    "checkpoints": _latest_checkpoints(rig),
                    "features_end": end_offsets(rig.settings, rig.topic("features")),
                }
            )
            worker.start()
            worker.wait_ready()
        producer.join(timeout=600)
        assert producer.error is None, producer.error
        assert producer.sent == n_events
        rig.wait_drained(n_events, timeout=600)
    finally:
        code = worker.stop()
    assert code == 0, worker.log_path.read_text(errors="replace")[-3000:]
    return kills, events, time.monotonic() - started


def test_worker_sigkilled_repeatedly_loses_nothing(
    settings_factory: Any, tmp_path: Path, record_property: Any
) -> None:
    rig = make_rig(
        settings_factory,
        tmp_path,
        checkpoint_every=max(500, N_EVENTS // 20),
        checkpoint_interval=0.5,
    )
    kills, events, elapsed = _run_with_kills(rig, N_EVENTS)
    verdict = verify(rig, events)
    _assert_duplicates_follow_a_checkpoint(rig, kills)
    record_property("chaos_lost", len(verdict.lost))
    record_property("chaos_duplicate_rate", round(verdict.duplicate_rate, 5))
    print(
        f"\nchaos: {N_EVENTS} events, {N_KEYS} keys, {N_KILLS} SIGKILLs at "
        f"{[(k['kind'], k['at']) for k in kills]} in {elapsed:.0f} s\n{verdict.summary()}"
    )
    _assert_nothing_lost(verdict)
    assert verdict.features_differ == [], verdict.features_differ[:5]
    _assert_models_equal_an_uninterrupted_run(rig)


def test_exactly_once_worker_sigkilled_repeatedly_publishes_each_output_once(
    settings_factory: Any, tmp_path: Path, record_property: Any
) -> None:
    """The same kills with ``RIVERLINE_GUARANTEE=exactly_once``: a read_committed
    consumer finds every output once: no loss, no duplicate on any output topic."""
    rig = make_rig(
        settings_factory,
        tmp_path,
        guarantee="exactly_once",
        checkpoint_every=max(500, EOS_EVENTS // 20),
        commit_interval=0.5,
    )
    kills, events, elapsed = _run_with_kills(rig, EOS_EVENTS)
    verdict = verify(rig, events)
    record_property("chaos_eos_duplicate_rate", round(verdict.duplicate_rate, 5))
    print(
        f"\nchaos, exactly once: {EOS_EVENTS} events, {N_KILLS} SIGKILLs at "
        f"{[(k['kind'], k['at']) for k in kills]} in {elapsed:.0f} s\n{verdict.summary()}"
    )
    _assert_nothing_lost(verdict)
    assert verdict.ingest_duplicates == 0
    assert verdict.feature_duplicates == 0
    assert verdict.prediction_duplicates == 0
    assert verdict.features_differ == [], verdict.features_differ[:5]
    # Every event is valid: a dead letter would be a repeat or a loss in disguise.
    assert read_all(rig.settings, rig.settings.topic("riverline.dlq")) == []
    _assert_models_equal_an_uninterrupted_run(rig)


def _assert_nothing_lost(verdict: Verdict) -> None:
    """Every valid event predicted, no card's sequence with a gap, every raw offset on
    ``P.events`` or the dead-letter topic."""
    assert verdict.lost == [], f"{len(verdict.lost)} events lost, e.g. {verdict.lost[:5]}"
    assert verdict.gaps == {}
    assert verdict.unaccounted_raw == []


def _assert_models_equal_an_uninterrupted_run(rig: Rig) -> None:
    from river import naive_bayes

    from streams.models.registry import ModelRegistry
    from streams.serialization.codec import decode_single_object

    schema = rig.catalog.record("feature_vector")
    inputs = rig.spec.model.inputs
    offline = naive_bayes.BernoulliNB(true_threshold=40.0)
    learned: set[str] = set()
    for r in read_all(rig.settings, rig.topic("features")):
        _, vector = decode_single_object(rig.catalog, r.value, schema)
        if vector["event_id"] in learned or vector["label"] is None:
            continue
        learned.add(vector["event_id"])
        values = vector["values"]
        x = {n: values[n] for n in inputs if values[n] is not None}
        offline.learn_one(x, vector["label"])
    registry = ModelRegistry(
        rig.settings.home / "registry",
        NAME,
        rig.settings.signing_key_bytes(),
    )
    champion = registry.manifest("seqs-lr", registry.latest("seqs-lr") or 0)
    assert champion.samples_seen == len(learned), (champion.label, champion.samples_seen)
    shadow, manifest = registry.load("seqs-nb", registry.latest("seqs-nb") or 0)
    nb = shadow if isinstance(shadow, naive_bayes.BernoulliNB) else list(shadow.steps.values())[-1]
    assert manifest.samples_seen == len(learned)
    assert dict(nb.class_counts) == dict(offline.class_counts)
    assert {f: dict(c) for f, c in nb.feature_counts.items()} == {
        f: dict(c) for f, c in offline.feature_counts.items()
    }
    print(f"models: {champion.label} and {manifest.label} learned {len(learned)} events once each")


def _assert_duplicates_follow_a_checkpoint(rig: Rig, kills: list[dict[str, Any]]) -> None:
    """Each repeated feature vector: first copy before a kill, of an event at or after the
    checkpoint that was latest at that kill (its partition and offset in the topic the
    features stage reads: ``P.raw``)."""
    events_at: dict[str, tuple[int, int]] = {}
    for r in read_all(rig.settings, rig.topic("events")):
        _, partition, offset = r.headers["rl.source"].rsplit(":", 2)
        events_at.setdefault(r.headers["rl.event_id"], (int(partition), int(offset)))
    copies: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in read_all(rig.settings, rig.topic("features")):
        copies[r.headers["rl.event_id"]].append((r.partition, r.offset))
    bad = []
    for eid, where in copies.items():
        if len(where) < 2:
            continue
        partition, offset = events_at[eid]
        first = min(o for _, o in where)
        explained = any(
            first < k["features_end"].get(where[0][0], 0)
            and offset >= k["checkpoints"].get(partition, 0)
            for k in kills
        )
        if not explained:
            bad.append(eid)
    assert not bad, f"{len(bad)} repeats not after a checkpoint that preceded a kill: {bad[:5]}"
