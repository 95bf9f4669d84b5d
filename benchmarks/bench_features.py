"""Benchmark section ``features``: the online feature engine.

* kernel speed-up: ``FeatureSet.compute`` (Numba) beside ``compute_reference`` (the
  plain-Python twins) on the same batches of 10,000 events, in the same run;
* feature-stage events/s: ``Featurization.process`` (decode + kernels + encode) on
  canonical events, beside a bare decode + encode of the same messages;
* bytes of state per key, and the RSS of a fresh process holding the state of
  1,000,000 keys (100,000 with ``--quick``), measured in a child process so the number
  is that process's alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import numpy as np

from benchmarks.options import BenchOptions
from streams.features.engine import FeatureSet, FeatureState, warm_up
from streams.features.stage import Featurization
from streams.ingestion.producer import dataset_events
from streams.messages import InMessage
from streams.pipeline.lineage import Lineage
from streams.serialization.catalog import SchemaCatalog, SchemaVersion
from streams.serialization.codec import decode_single_object, encode_single_object
from streams.spec import PipelineSpec, load_spec

__all__ = ["features_section", "state_rss"]

_BATCH = 10_000


def _columns(
    fs: FeatureSet, spec: PipelineSpec, events: list[dict[str, Any]]
) -> tuple[list[str], np.ndarray, dict[str, list[Any]]]:
    keys = [str(e[spec.key_field]) if spec.key_field else "" for e in events]
    times = np.array([e[spec.time_field] / 1000.0 for e in events], dtype=np.float64)
    return keys, times, {name: [e.get(name) for e in events] for name in fs.inputs}


def _best(repeats: int, run: Any) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def state_rss(spec_path: str, keys: int) -> dict[str, float]:
    """In this process: RSS before and after holding the state of ``keys`` keys."""
    import gc

    import psutil

    spec = load_spec(spec_path)
    fs = FeatureSet.from_spec(spec.features)
    warm_up()
    gc.collect()
    proc = psutil.Process()
    before = proc.memory_info().rss
    state = fs.new_state()
    rng = np.random.default_rng(0)
    step = 100_000
    for start in range(0, keys, step):
        n = min(step, keys - start)
        names = [f"k{i:08d}" for i in range(start, start + n)]
        columns: dict[str, Any] = {}
        for name in fs.inputs:
            columns[name] = (
                [f"v{m}" for m in rng.integers(0, 500, n)]
                if name in ("merchant", "channel")
                else rng.lognormal(3.7, 0.9, n)
            )
        fs.compute(state, names, 1.7e9 + np.arange(start, start + n) * 0.003, columns)
    gc.collect()
    after = proc.memory_info().rss
    return {
        "keys": keys,
        "rss_mib": after / 2**20,
        "rss_before_state_mib": before / 2**20,
        "bytes_per_key": state.nbytes_per_key(),
    }


def features_section(options: BenchOptions) -> dict[str, Any]:
    """Kernel speed-up, feature-stage events/s, state per key, RSS at many keys."""
    settings = options.settings
    spec = load_spec(settings.pipelines_dir / "transactions.toml")
    catalog = SchemaCatalog.load(settings.schemas_dir)
    fs = FeatureSet.from_spec(spec.features)
    warm_up()
    n = 20_000 if not options.quick else 4_000
    events = [
        e for _, e in zip(range(n), dataset_events(spec, spec.dataset, "bench", 0), strict=False)
    ]
    fast, slow, state = _kernel_seconds(fs, spec, events, options.repeats)
    stage_s, bare_s = _stage_seconds(options, spec, catalog, events)
    n_keys = 100_000 if options.quick else 1_000_000
    rss = _state_rss_in_child(options, n_keys)
    return {
        "title": f"features: {fs.label} ({len(fs.outputs)} features, per card)",
        "baseline": "the plain-Python twins (kernels); a bare decode + encode (stage)",
        "rows": [
            {
                "what": "kernels, batches of 10,000",
                "riverline_eps": round(n / fast),
                "baseline_eps": round(n / slow),
                "ratio": round(slow / fast, 1),
            },
            {
                "what": "feature stage (decode+kernels+encode)",
                "riverline_eps": round(n / stage_s),
                "baseline_eps": round(n / bare_s),
                "ratio": round(bare_s / stage_s, 2),
            },
            {
                "what": f"state bytes/key ({state.n_keys:,} cards)",
                "value": round(state.nbytes_per_key()),
            },
            {
                "what": f"process RSS with {n_keys:,} keys (MiB)",
                "value": round(rss["rss_mib"]),
                "goal": "< 1024" if n_keys == 1_000_000 else "(full run: 1,000,000 keys)",
            },
        ],
        "rss": rss,
    }


def _kernel_seconds(
    fs: FeatureSet, spec: PipelineSpec, events: list[dict[str, Any]], repeats: int
) -> tuple[float, float, FeatureState]:
    """Seconds of the kernels and of their Python twins over the events, and the state
    the kernels leave."""
    batches = [_columns(fs, spec, events[i : i + _BATCH]) for i in range(0, len(events), _BATCH)]

    def run(method: str) -> None:
        state = fs.new_state()
        for keys, times, columns in batches:
            getattr(fs, method)(state, keys, times, columns)

    fast = _best(repeats, lambda: run("compute"))
    slow = _best(1, lambda: run("compute_reference"))
    state = fs.new_state()
    for keys, times, columns in batches:
        fs.compute(state, keys, times, columns)
    return fast, slow, state


def _stage_seconds(
    options: BenchOptions,
    spec: PipelineSpec,
    catalog: SchemaCatalog,
    events: list[dict[str, Any]],
) -> tuple[float, float]:
    """Seconds of the whole features stage on canonical events (what it runs per batch),
    and of a bare decode + encode of the same messages."""
    settings = options.settings
    reader = catalog.latest(spec.subject)
    topics = spec.topics(settings.namespace)
    messages = _canonical_messages(spec, reader, topics.raw, topics.events, events)
    size = settings.batch_size

    def stage_run() -> None:
        stage = Featurization(
            spec, catalog, features_topic=topics.features, dlq_topic=settings.topic("riverline.dlq")
        )
        stage.start(0)
        for i in range(0, len(messages), size):
            good = []
            for m in stage.select(messages[i : i + size]).events:
                _, record = decode_single_object(catalog, m.value or b"", reader)
                good.append((m, record, Lineage.from_headers(m.headers)))
            stage.featurize(0, good)

    vector = catalog.record("feature_vector")

    def bare_run() -> None:
        for m in messages:
            _, record = decode_single_object(catalog, m.value or b"", reader)
            encode_single_object(
                vector,
                {
                    "event_id": record[spec.id_field],
                    "event_ts": 0,
                    "entity_key": "",
                    "label": None,
                    "values": {},
                },
            )

    return _best(options.repeats, stage_run), _best(options.repeats, bare_run)


def _canonical_messages(
    spec: PipelineSpec,
    reader: SchemaVersion,
    raw_topic: str,
    events_topic: str,
    events: list[dict[str, Any]],
) -> list[InMessage]:
    """The events as the ingest stage writes them: canonical Avro with lineage headers."""
    messages = []
    for i, e in enumerate(events):
        lineage = Lineage(
            str(e[spec.id_field]),
            reader.label,
            f"{raw_topic}:0:{i}",
            spec.label,
            int(e[spec.time_field]),
            0,
            0,
        )
        messages.append(
            InMessage(
                events_topic,
                0,
                i,
                str(e[spec.key_field]).encode(),
                encode_single_object(reader, e),
                0,
                tuple(lineage.to_headers()),
            )
        )
    return messages


def _state_rss_in_child(options: BenchOptions, n_keys: int) -> dict[str, float]:
    """:func:`state_rss` in a fresh process, so the number is that process's alone."""
    settings = options.settings
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json,sys;from benchmarks.bench_features import state_rss;"
            f"print(json.dumps(state_rss(sys.argv[1], {n_keys})))",
            str(settings.pipelines_dir / "transactions.toml"),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=settings.child_env(),
    )
    rss: dict[str, float] = json.loads(child.stdout.strip().splitlines()[-1])
    return rss
