"""Benchmark section ``stages``: microseconds per event in each one-pass stage, in memory.

No Kafka: the pipeline's stages (the pipeline section's, ``transactions`` by default) run
over the same bench events in batches of the worker's size, on fresh objects each
repeat, and each row is the best of ``repeats``:

- ``ingest``: :meth:`Ingestion.ingest_one` (decode, validate, lineage, ``P.events``);
- ``features``: :meth:`Featurization.select` and :meth:`~Featurization.featurize`
  (kernels, the vector, ``P.features``);
- ``predict``: :meth:`Predictor.predict_one` (predict, learn, score, ``P.predictions``);
- ``sign``: the ``rl.mac`` of each of those outputs (:class:`RecordSigner`);
- ``one-pass``: :meth:`OnePass.process`, the three stages with the batch's bookkeeping;
- ``sink``: the offline sink's work for the same outputs (each MAC verified,
  :meth:`OfflineSink.add`, one flush to Parquet in a temporary folder).

With ``--stages-before REV`` (``make bench``: the commit before the stages' cost cut) the
section measures that revision's stages too, in the same run: ``git archive`` extracts it
to a temporary folder, and this file runs as a script over both checkouts in turn
(``PYTHONPATH`` at each), ``repeats`` times, best of each. The script works against any
checkout whose stages have the same constructors::

    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_stages.py --events 20000
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.events import bench_events, event_keys
from benchmarks.options import BenchOptions
from streams.errors import RiverlineError
from streams.features.stage import Featurization
from streams.ingestion.stage import Ingestion
from streams.messages import InMessage, OutMessage
from streams.models.stage import Predictor
from streams.pipeline.onepass import OnePass
from streams.pipeline.stage import StageResult, now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT
from streams.spec import PipelineSpec, load_spec
from streams.store.offline import OfflineStore
from streams.store.sink import OfflineSink, sink_topics
from streams.trust.records import RecordSigner

__all__ = ["STAGES", "stage_costs", "stages_section"]

#: The rows of the section, in order.
STAGES = ("ingest", "features", "predict", "sign", "one-pass", "sink")
_SIGNER = RecordSigner(b"riverline-bench")


def stages_section(options: BenchOptions) -> dict[str, Any]:
    """Microseconds per event in each stage (the module docstring says what each covers);
    beside those of ``options.stages_before``, when it names a revision."""
    settings = options.settings
    spec_path = options.pipeline or settings.pipelines_dir / "transactions.toml"
    spec = load_spec(spec_path)
    title = (
        f"stages: {spec.label}, {options.events:,} events in memory, "
        f"batches of {settings.batch_size}"
    )
    section: dict[str, Any] = {
        "title": title,
        "measures": "microseconds per event (best of repeats), no Kafka",
        "repeats": options.repeats,
    }
    if options.stages_before is None:
        catalog = SchemaCatalog.load(settings.schemas_dir)
        costs = stage_costs(spec, catalog, options.events, settings.batch_size, options.repeats)
        section["rows"] = [{"stage": name, "us_per_event": costs[name]} for name in STAGES]
        return section
    args = ["--events", str(options.events), "--batch", str(settings.batch_size)]
    before, after = _side_by_side(options.stages_before, args, options.repeats)
    section["before"] = options.stages_before
    section["rows"] = [
        {
            "stage": name,
            "before_us": before[name],
            "after_us": after[name],
            "after_over_before": round(after[name] / before[name], 2),
        }
        for name in STAGES
    ]
    return section


def _side_by_side(
    revision: str, args: list[str], rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Best-of-``rounds`` costs of ``revision``'s stages and this checkout's, run in turn."""
    with tempfile.TemporaryDirectory() as folder:
        _extract(revision, Path(folder))
        best: list[dict[str, float]] = [{}, {}]
        for _ in range(rounds):
            for side, root in enumerate((Path(folder), REPO_ROOT)):
                for name, cost in _script_costs(root, args).items():
                    best[side][name] = min(best[side].get(name, float("inf")), cost)
    return best[0], best[1]


def _extract(revision: str, folder: Path) -> None:
    """The files of ``revision`` of this repository, into ``folder``."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", revision],
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RiverlineError(
            f"cannot extract revision {revision!r} of {REPO_ROOT} to measure its stages "
            f"({exc}); --stages-before takes a commit of this repository's history."
        ) from exc


def _script_costs(root: Path, args: list[str]) -> dict[str, float]:
    """This file run as a script over the checkout at ``root``: its costs."""
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, __file__, *args, "--repeats", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RiverlineError(f"the stages of {root} did not run: {done.stderr.strip()[-2000:]}")
    costs: dict[str, float] = json.loads(done.stdout.splitlines()[-1])["us_per_event"]
    return costs


def stage_costs(
    spec: PipelineSpec, catalog: SchemaCatalog, events: int, batch: int, repeats: int
) -> dict[str, float]:
    """Best-of-``repeats`` microseconds per event of each of :data:`STAGES`."""
    raw = _raw_messages(spec, events)
    _by_stage(spec, catalog, raw[:batch], batch)  # compiles the kernels, as a worker's start does
    best = dict.fromkeys(STAGES, float("inf"))
    for _ in range(repeats):
        _settle_heap()
        seconds, outputs = _by_stage(spec, catalog, raw, batch)
        _settle_heap()
        seconds["sink"] = _sink(spec, catalog, outputs)
        del outputs
        _settle_heap()
        seconds["one-pass"] = _one_pass(spec, catalog, raw, batch)
        for name, s in seconds.items():
            best[name] = min(best[name], s)
    return {name: round(s / len(raw) * 1e6, 1) for name, s in best.items()}


def _settle_heap() -> None:
    """Collect, then exempt what is alive from later collections: each phase pays for its
    own garbage only, as a worker does (its heap is not the benchmark's inputs)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _raw_messages(spec: PipelineSpec, n: int) -> list[InMessage]:
    values = bench_events(spec, n, "stages", 0)
    raw_topic = spec.topics("").raw
    now = now_ms()
    keyed = zip(event_keys(spec, values), values, strict=True)
    return [InMessage(raw_topic, 0, i, k, v, now) for i, (k, v) in enumerate(keyed)]


def _stages(spec: PipelineSpec, catalog: SchemaCatalog) -> OnePass:
    t = spec.topics("")
    return OnePass(
        Ingestion(spec, catalog, events_topic=t.events, dlq_topic="dlq", max_bytes=1 << 20),
        Featurization(spec, catalog, features_topic=t.features, dlq_topic="dlq"),
        Predictor(
            spec, catalog, predictions_topic=t.predictions, dlq_topic="dlq", labels_topic=t.labels
        ),
        raw_topic=t.raw,
    )


def _by_stage(
    spec: PipelineSpec, catalog: SchemaCatalog, raw: list[InMessage], batch: int
) -> tuple[dict[str, float], list[OutMessage]]:
    """Seconds in ingest, features, predict and sign; every output, signed."""
    one = _stages(spec, catalog)
    seconds = dict.fromkeys(("ingest", "features", "predict", "sign"), 0.0)
    outputs: list[OutMessage] = []
    clock = time.perf_counter
    for start in range(0, len(raw), batch):
        t0 = clock()
        selection = one.featurization.select(raw[start : start + batch])
        ingest_ts = now_ms()
        ingested = [one.ingestion.ingest_one(m, ingest_ts) for m in selection.events]
        t1 = clock()
        good = [
            (m, done.record, done.lineage)
            for m, done in zip(selection.events, ingested, strict=True)
        ]
        vectors, _ = one.featurization.featurize(0, good)
        t2 = clock()
        one.predictor.start_batch()
        predicted = [one.predictor.predict_one(v) for v in vectors]
        one.predictor.finish_batch(StageResult())
        t3 = clock()
        sends = [done.out for done in ingested] + [v.out for v in vectors]
        sends += [out for outs in predicted for out in outs]
        macs = [_SIGNER.sign(o.topic, o.key, o.value, o.headers) for o in sends]
        t4 = clock()
        outputs += [
            OutMessage(o.topic, o.key, o.value, h) for o, h in zip(sends, macs, strict=True)
        ]
        gc.freeze()  # kept for the sink: no later collection walks them (a worker sends them)
        for name, s in zip(seconds, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            seconds[name] += s
    return seconds, outputs


def _one_pass(
    spec: PipelineSpec, catalog: SchemaCatalog, raw: list[InMessage], batch: int
) -> float:
    one = _stages(spec, catalog)
    t0 = time.perf_counter()
    for start in range(0, len(raw), batch):
        one.process(raw[start : start + batch])
    return time.perf_counter() - t0


def _sink(spec: PipelineSpec, catalog: SchemaCatalog, outputs: list[OutMessage]) -> float:
    """Seconds the sink takes over ``outputs``: verify, buffer, write."""
    kinds = sink_topics(spec, "", "dlq")
    offsets: dict[str, int] = {}
    messages = []
    for out in outputs:
        offsets[out.topic] = offset = offsets.get(out.topic, -1) + 1
        messages.append(InMessage(out.topic, 0, offset, out.key, out.value, 0, tuple(out.headers)))
    with tempfile.TemporaryDirectory() as folder:
        sink = OfflineSink(spec, catalog, OfflineStore(folder), kinds=kinds, **_verified(kinds))
        t0 = time.perf_counter()
        kept = [m for m in messages if _SIGNER.verify(m.topic, m.key, m.value, m.headers)]
        sink.add(kept)
        sink.flush()
        return time.perf_counter() - t0


def _verified(kinds: dict[str, str]) -> dict[str, Any]:
    """``verified=``, as the sink agent passes it, where the checkout's sink takes it (the
    script runs against older checkouts too)."""
    if "verified" not in inspect.signature(OfflineSink).parameters:
        return {}
    return {"verified": [topic for topic, kind in kinds.items() if kind != "labels"]}


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--pipeline", type=Path, default=None)
    args = parser.parse_args(argv)
    root = Path(inspect.getfile(Ingestion)).parents[2]
    spec = load_spec(args.pipeline or root / "pipelines" / "transactions.toml")
    catalog = SchemaCatalog.load(root / "schemas")
    costs = stage_costs(spec, catalog, args.events, args.batch, args.repeats)
    print(json.dumps({"root": str(root), "us_per_event": costs}))


if __name__ == "__main__":
    _main()
