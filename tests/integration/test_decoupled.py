"""Decoupled mode on the real broker: serving workers and one learner, all state in Kafka.

Four processes, each with its own ``RIVERLINE_HOME`` as if on its own machine: two serving
workers (``--role serve``) share the four raw partitions; two learners (``--role learn``)
share the one-partition learning log, so one is active and one waits. The active learner
is SIGKILLed mid-stream and the standby takes over from the last published version and
its position; then a serving worker is SIGKILLed and the other takes its partitions.
Predictions never stop, no event is lost, and the final model equals River learning the
learning log's inputs offline, in the log's order.

A second test pauses the active learner (SIGSTOP) past its session: the standby takes
over, and when the paused one resumes it publishes nothing: its transaction is fenced.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from faultkit import SPEC, Producer, Rig, make_events, make_rig, read_all, verify
from river import linear_model, preprocessing

from streams.cli.workerproc import WorkerProcess
from streams.kafka.broker import free_port
from streams.models.records import LearningRecord
from streams.models.registry import ModelRegistry
from streams.settings import Settings
from streams.state.feed import ServedSet, served_key
from streams.store.offline import OfflineStore

pytestmark = pytest.mark.integration

N_EVENTS = int(os.environ.get("RIVERLINE_DECOUPLED_EVENTS", "1500"))
DECOUPLED = SPEC.replace("partitions = 2\n", 'partitions = 4\nmode = "decoupled"\n')


def _process(rig: Rig, name: str, role: str, *, home_of: dict[str, Settings]) -> WorkerProcess:
    """A worker process as on another machine: its own home and web port."""
    settings = rig.settings.model_copy(
        update={
            "home": rig.root / f"home-{name}",
            "web_port": free_port(),
            "store_url": (rig.root / "store").as_uri(),  # shared storage, not a home's disk
        }
    )
    home_of[name] = settings
    return WorkerProcess(settings, [rig.spec_path], rig.root / f"{name}.log", role=role)


def _learner_status(worker: WorkerProcess) -> dict[str, Any]:
    try:
        status: Any = worker.get_json("/status.json", timeout=2.0)
        return dict(status["learners"]["seqs"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _active(learners: dict[str, WorkerProcess]) -> str | None:
    for name, worker in learners.items():
        if (
            worker.proc is not None
            and worker.proc.poll() is None
            and _learner_status(worker).get("active")
        ):
            return name
    return None


def _learned(learners: dict[str, WorkerProcess]) -> int:
    """How many records the active learner has learned (0 while none is active)."""
    active = _active(learners)
    return 0 if active is None else int(_learner_status(learners[active]).get("learned", 0))


#: The processes of the test running now: on a timeout, each logs what it waits on.
_RUNNING: dict[str, WorkerProcess] = {}


def _wait(what: str, done: Any, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            seen = {}
            for name, worker in _RUNNING.items():
                seen[name] = _learner_status(worker) if worker.role == "learn" else {}
                worker.dump(settle=0.2)
            raise AssertionError(f"timed out waiting for {what}; learners {seen}")
        time.sleep(0.25)


def _log_inputs(rig: Rig) -> list[LearningRecord]:
    """The learning log's records in offset order, each source once (as the learner)."""
    from streams.messages import InMessage

    seen: set[str] = set()
    out = []
    for r in sorted(
        read_all(rig.settings, rig.spec.topics(rig.settings.namespace).learn),
        key=lambda r: r.offset,
    ):
        assert r.signed
        msg = InMessage("learn", 0, r.offset, r.key, r.value, 0)
        record = LearningRecord.read(rig.catalog, msg)
        if record.source in seen:
            continue
        seen.add(record.source)
        out.append(record)
    return out


def _stored_all(rig: Rig, events: list[dict[str, Any]]) -> bool:
    """The shared offline store has every event's row, features and prediction."""
    store = OfflineStore((rig.root / "store").as_uri())
    wanted = {str(e["event_id"]) for e in events}
    try:
        for kind in ("events", "features", "predictions"):
            if not wanted <= set(store.read(kind, "seqs").column("event_id").to_pylist()):
                return False
    except (OSError, KeyError, ValueError):  # nothing stored yet
        return False
    return True


def _offline(records: list[LearningRecord]) -> Any:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    for r in records:
        if r.kind == "VECTOR" and r.label is not None:
            model.learn_one(r.x, r.label)
    return model


def _served(rig: Rig) -> list[ServedSet]:
    key = served_key("seqs")
    return [
        ServedSet.from_bytes(r.value)
        for r in read_all(rig.settings, rig.settings.topic("riverline.models"))
        if r.key == key.encode() and r.value
    ]


def _start(workers: dict[str, WorkerProcess]) -> None:
    _RUNNING.clear()
    _RUNNING.update(workers)
    for worker in workers.values():
        worker.start()


def test_serving_and_learning_survive_their_processes(settings_factory: Any, tmp_path: Path):
    rig = make_rig(
        settings_factory,
        tmp_path,
        spec_text=DECOUPLED,
        checkpoint_every=300,
        checkpoint_interval=1.0,
    )
    homes: dict[str, Settings] = {}
    learners = {n: _process(rig, n, "learn", home_of=homes) for n in ("learner-a", "learner-b")}
    servers = {n: _process(rig, n, "serve", home_of=homes) for n in ("serve-1", "serve-2")}
    events = make_events(N_EVENTS, keys=200, seed=21)
    producer = Producer(rig.settings, rig.raw, events, rate=300.0)
    everyone = {**learners, **servers}
    try:
        _start(everyone)
        _wait("an active learner", lambda: _active(learners) is not None)
        for worker in servers.values():
            worker.wait_ready()
        producer.start()
        _wait("a third of the events learned", lambda: _learned(learners) >= N_EVENTS // 3)
        first = _active(learners)
        assert first is not None
        learners[first].kill()
        second = next(n for n in learners if n != first)
        _wait("the standby to take over", lambda: _active(learners) == second, timeout=120)
        rig.worker = servers["serve-2"]
        _wait(
            "two thirds predicted",
            lambda: len(read_all(rig.settings, rig.topic("predictions"))) >= 2 * N_EVENTS // 3,
        )
        servers["serve-1"].kill()
        producer.join(timeout=120)
        assert producer.error is None, producer.error
        rig.wait_drained(N_EVENTS)
        unique = len(_log_inputs(rig))
        _wait("the learner to learn the whole log", lambda: _learned(learners) >= unique)
        # The sinks run at idle priority: behind the predictions, not in their way.
        _wait("the offline store to hold every event", lambda: _stored_all(rig, events))
        serving = servers["serve-2"].get_json("/status.json")["pipelines"]["seqs"]["serving"]
    finally:
        for worker in everyone.values():
            worker.stop(timeout=60)
    # The serving worker's status page: the versions it serves and how far behind they are.
    assert [v["model"].split("@")[0] for v in serving] == ["seqs-lr", "seqs-nb"]
    assert all(isinstance(v["staleness_samples"], int) for v in serving)
    assert all(v["age_s"] >= 0 for v in serving)
    verdict = verify(rig, events)
    print(verdict.summary())
    assert verdict.lost == []
    assert verdict.unaccounted_raw == []
    assert verdict.features_differ == []
    # The final model: River offline over the log's inputs, in its order.
    inputs = _log_inputs(rig)
    offline = _offline(inputs)
    served = _served(rig)[-1]
    lr = next(m for m in served.models if m.name == "seqs-lr")
    registry = ModelRegistry(homes[second].registry_dir, "seqs", homes[second].signing_key_bytes())
    estimator, manifest = registry.load("seqs-lr", lr.version)
    assert manifest.samples_seen == sum(
        1 for r in inputs if r.kind == "VECTOR" and r.label is not None
    )
    for e in make_events(200, keys=50, seed=99):
        x = {"amount": e["amount"], "amount_mean": e["amount"], "amount_ewm": e["amount"]}
        assert estimator.predict_proba_one(x) == pytest.approx(
            offline.predict_proba_one(x), abs=1e-12
        )
    # Predictions named the versions the learner published, from several of them.
    models = {r.headers["rl.model"] for r in read_all(rig.settings, rig.topic("predictions"))}
    assert len(models) > 2
    assert served.learner.endswith(f":{learners[second].proc.pid}")  # type: ignore[union-attr]
    # A CLI on another machine (an empty home, the shared store's URL): replay relearns
    # the log into the learner's last versions byte for byte and makes every prediction
    # again; lineage and training find what the serving workers' sinks stored.
    elsewhere = homes["serve-1"].model_copy(update={"home": rig.root / "home-cli"})
    done = _cli(elsewhere, "replay", "--pipeline", str(rig.spec_path), "--verify")
    assert done.stdout.count("identical") == 3  # two models and the verdict
    reproduced = re.search(r"predictions: ([\d,]+) of ([\d,]+) reproduced", done.stdout)
    assert reproduced is not None
    assert int(reproduced[1].replace(",", "")) > N_EVENTS // 2
    event_id = str(events[N_EVENTS // 2]["event_id"])
    traced = json.loads(_cli(elsewhere, "lineage", event_id, "--json").stdout)
    assert traced["pipeline"] == "seqs"
    assert traced["model"].startswith("seqs-lr@")
    assert traced["manifest"]["name"] == "seqs-lr"  # read from Kafka: no registry here
    trained = _cli(elsewhere, "train", "--pipeline", str(rig.spec_path), "--from-store")
    assert "candidates" in trained.stdout


def _publications(rig: Rig) -> list[tuple[str, int]]:
    """(learner, samples learned) of each committed served set, in the topic's order."""
    records = sorted(read_all(rig.settings, rig.settings.topic("riverline.models")), key=_offset)
    key = served_key("seqs").encode()
    return [
        (served.learner, _samples(served))
        for served in (ServedSet.from_bytes(r.value) for r in records if r.key == key and r.value)
    ]


def _offset(record: Any) -> int:
    return int(record.offset)


def _samples(served: ServedSet) -> int:
    return next(m.samples_seen for m in served.models if m.name == "seqs-lr")


def test_a_paused_learner_publishes_nothing_once_another_took_over(
    settings_factory: Any, tmp_path: Path
):
    """A paused learner's unpublished learning never becomes visible.

    While it is paused past its session the standby takes over from its last publication
    and moves on; when it resumes its transactions are fenced. (A later rebalance may give
    it the log again: it then takes over anew from the other's last publication.) So what
    the learners publish, in order, never goes back: each publication starts where the one
    before it ended.
    """
    rig = make_rig(
        settings_factory,
        tmp_path,
        spec_text=DECOUPLED,
        checkpoint_every=200,
        checkpoint_interval=1.0,
        session_timeout=6.0,
    )
    homes: dict[str, Settings] = {}
    learners = {n: _process(rig, n, "learn", home_of=homes) for n in ("learner-a", "learner-b")}
    server = _process(rig, "serve-1", "serve", home_of=homes)
    n_events = N_EVENTS // 2
    events = make_events(n_events, keys=100, seed=22)
    producer = Producer(rig.settings, rig.raw, events, rate=200.0)
    everyone = {**learners, "serve-1": server}
    try:
        _start(everyone)
        _wait("an active learner", lambda: _active(learners) is not None)
        server.wait_ready()
        producer.start()
        _wait("some events learned", lambda: _learned(learners) >= 100)
        first = _active(learners)
        assert first is not None
        paused, taker = learners[first], next(w for n, w in learners.items() if n != first)
        assert paused.proc is not None
        os.kill(paused.proc.pid, signal.SIGSTOP)
        _wait(
            "the standby to take over and publish",
            lambda: (
                _learner_status(taker).get("active")
                and _learner_status(taker).get("published", 0) >= 2
            ),
            timeout=120,
        )
        os.kill(paused.proc.pid, signal.SIGCONT)
        _wait(
            "the resumed learner to find itself fenced",
            lambda: "this one stops publishing" in paused.log_path.read_text(),
            timeout=60,
        )
        producer.join(timeout=120)
        assert producer.error is None, producer.error
        rig.worker = server
        rig.wait_drained(n_events)
        unique = len(_log_inputs(rig))

        _wait("a learner to learn the whole log", lambda: _learned(learners) >= unique)
        alive = paused.proc.poll() is None
    finally:
        for worker in everyone.values():
            worker.stop(timeout=60)
    assert alive, "the fenced learner stays up, as a standby"
    published = _publications(rig)
    old, new = f":{paused.proc.pid}", f":{taker.proc.pid}"  # type: ignore[union-attr]
    assert any(who.endswith(old) for who, _ in published)
    assert any(who.endswith(new) for who, _ in published)
    samples = [n for _, n in published]
    assert samples == sorted(samples), "a publication went back: a stale learner published"
    # The last publication: River offline over the log's inputs.
    inputs = _log_inputs(rig)
    assert _samples(_served(rig)[-1]) == sum(
        1 for r in inputs if r.kind == "VECTOR" and r.label is not None
    )
    verdict = verify(rig, events)
    assert verdict.lost == []
    assert verdict.unaccounted_raw == []


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env=settings.child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    print(done.stdout, done.stderr[-2000:])
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    return done
