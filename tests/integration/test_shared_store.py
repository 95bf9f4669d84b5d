"""Two offline sinks on "two machines" write one shared store; a third machine reads it.

Each machine has its own ``RIVERLINE_HOME``; every process points ``RIVERLINE_STORE_URL``
at one ``file://`` URL (a directory standing in for shared storage). A worker runs the
4-partition pipeline with its own sink off; ``riverline sink`` runs on machine A, then
on machine B too (partitions move to B mid-block), then A stops (its partitions move to
B mid-block). Every message of the pipeline's topics must be in the store exactly once,
and ``riverline lineage`` on a third, empty home must find an event there.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from faultkit import SPEC, Rig, end_offsets, make_events, make_rig, produce_all

from streams.settings import Settings
from streams.store.offline import OfflineStore

pytestmark = pytest.mark.integration

#: The fault tests' keyed pipeline, on 4 partitions.
SPEC_4 = SPEC.replace("partitions = 2", "partitions = 4")
EVENTS_PER_PHASE = 600
BLOCK = 200  # offsets per file: each partition's blocks fill and roll over during the run
STORED_KINDS = ("events", "features", "predictions")


class SinkProcess:
    """``riverline sink`` on one machine, its log in a file."""

    def __init__(self, settings: Settings, spec_path: Path, log: Path) -> None:
        self.settings, self.log = settings, log
        cmd = [sys.executable, "-m", "streams", "sink", "--pipeline", str(spec_path)]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=settings.child_env()
            )

    def assigned(self) -> list[str]:
        """The ``topic:partition`` list of the sink's latest assignment (empty: none yet)."""
        found = re.findall(r"sink seqs reads \[(.*)\]", self.log.read_text(errors="replace"))
        return re.findall(r"'([^']+)'", found[-1]) if found else []

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def _wait(what: str, done: Callable[[], bool], logs: list[Path], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2500:]}" for p in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.5)


def _stored(store: OfflineStore, kind: str) -> Counter[tuple[int, int]]:
    """How often each (partition, offset) of the pipeline's topic of ``kind`` is stored."""
    seen: Counter[tuple[int, int]] = Counter()
    for path, _, _ in store.files(kind, "seqs"):
        partition = int(Path(path).name.split("+")[1])
        for offset in store.read_file(path).column("_offset").to_pylist():
            seen[(partition, offset)] += 1
    return seen


def _expected(rig: Rig, kind: str) -> set[tuple[int, int]]:
    ends = end_offsets(rig.settings, rig.topic(kind))
    return {(p, o) for p, end in ends.items() for o in range(end)}


def _complete(rig: Rig, store: OfflineStore, produced: int) -> bool:
    """Every message so far of each stored topic is in the store; predictions for all."""
    expected = {kind: _expected(rig, kind) for kind in STORED_KINDS}
    if len(expected["predictions"]) < produced:
        return False
    return all(set(_stored(store, kind)) == expected[kind] for kind in STORED_KINDS)


def test_two_sinks_on_two_machines_fill_one_store_that_a_third_machine_reads(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    assert "partitions = 4" in SPEC_4
    url = (tmp_path / "shared-store").as_uri()
    rig = make_rig(
        settings_factory,
        tmp_path,
        spec_text=SPEC_4,
        home=tmp_path / "worker-machine",
        store_url=url,
        sink_enabled=False,
    )

    def machine(name: str) -> Settings:
        return settings_factory(
            namespace=rig.settings.namespace,
            home=tmp_path / name,
            store_url=url,
            schemas_dir=rig.settings.schemas_dir,
            sink_block_size=BLOCK,
            sink_flush_interval=1.0,
            session_timeout=6.0,
        )

    store = OfflineStore(url)
    events = make_events(3 * EVENTS_PER_PHASE, keys=40, seed=21)
    phases = [events[i : i + EVENTS_PER_PHASE] for i in range(0, len(events), EVENTS_PER_PHASE)]
    logs = [tmp_path / "sink-a.log", tmp_path / "sink-b.log", rig.worker.log_path]
    rig.worker.start()
    sink_a = SinkProcess(machine("machine-a"), rig.spec_path, logs[0])
    sink_b: SinkProcess | None = None
    try:
        rig.worker.wait_ready()
        events_topic = rig.topic("events")
        _wait("sink A's partitions", lambda: len(sink_a.assigned()) > 0, logs)
        produce_all(rig.settings, rig.raw, phases[0])
        _wait("phase 1 in the store", lambda: _complete(rig, store, EVENTS_PER_PHASE), logs)

        sink_b = SinkProcess(machine("machine-b"), rig.spec_path, logs[1])
        _wait(
            "some of A's events partitions to move to B",
            lambda: any(tp.startswith(f"{events_topic}:") for tp in sink_b.assigned()),
            logs,
        )
        produce_all(rig.settings, rig.raw, phases[1])
        _wait("phase 2 in the store", lambda: _complete(rig, store, 2 * EVENTS_PER_PHASE), logs)

        assert sink_a.stop() == 0, logs[0].read_text()[-3000:]
        produce_all(rig.settings, rig.raw, phases[2])
        _wait("phase 3 in the store", lambda: _complete(rig, store, len(events)), logs)
    finally:
        codes = [s.stop() for s in (sink_a, sink_b) if s is not None]
        rig.worker.stop()
    assert codes == [0, 0], logs[1].read_text()[-3000:]

    for kind in STORED_KINDS:
        stored = _stored(store, kind)
        assert set(stored) == _expected(rig, kind), kind
        assert max(stored.values()) == 1, f"{kind}: some offsets are stored twice"
    predicted = store.read("predictions", "seqs").column("event_id").to_pylist()
    assert sorted(predicted) == sorted(e["event_id"] for e in events)
    for home in ("machine-a", "machine-b"):
        assert list((tmp_path / home).rglob("*.parquet")) == []

    reader = settings_factory(
        namespace=rig.settings.namespace, home=tmp_path / "laptop", store_url=url
    )
    event = phases[0][7]  # stored by machine A before either handover
    out = subprocess.run(
        [sys.executable, "-m", "streams", "lineage", event["event_id"], "--json"],
        env=reader.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert found["pipeline"] == "seqs"
    assert found["raw_source"].startswith(f"{rig.raw}:")
    assert found["model"].startswith("seqs-lr@")
    assert found["prediction"] in (True, False)
    assert found["label"] == event["is_big"]
