"""Bounded feature state: key_ttl and max_keys eviction, its checkpoints, counters, size."""

from __future__ import annotations

import io
import itertools
import json
import math
import shutil
import zipfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import featurize_events
from prometheus_client.parser import text_string_to_metric_families

from streams.errors import SpecError
from streams.features import kernels
from streams.features.engine import FeatureError, FeatureSet, FeatureState, StateBudget, warm_up
from streams.features.stage import Featurization
from streams.ingestion.stage import Ingestion
from streams.messages import InMessage
from streams.observability.metrics import WorkerMetrics
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import decode_single_object
from streams.settings import REPO_ROOT
from streams.spec import PipelineSpec, parse_spec

NAN = math.nan
PROPERTY = settings(max_examples=60, deadline=None, database=None)

#: One feature of every kind, with buffers small enough to overflow.
DERIVED: list[dict[str, Any]] = [
    {"name": "n_5s", "kind": "window_count", "window": 5.0, "max_events": 4},
    {"name": "sum_x_5s", "kind": "window_sum", "field": "x", "window": 5, "max_events": 3},
    {"name": "mean_x_20s", "kind": "window_mean", "field": "x", "window": 20.0},
    {"name": "ewm_x", "kind": "ewm_mean", "field": "x", "half_life": 3.0},
    {"name": "var_x", "kind": "ewm_var", "field": "x", "half_life": 10.0},
    {"name": "gap", "kind": "since_last"},
    {"name": "z_y", "kind": "zscore", "field": "y"},
    {"name": "x_per_y", "kind": "ratio", "fields": ["x", "y"]},
    {"name": "freq_c", "kind": "frequency", "field": "c", "max_categories": 3},
]
UNBOUNDED: dict[str, Any] = {"name": "bounds", "derived": DERIVED}

#: The bounds the property tests run with (times step by up to 15 s, ten keys).
BOUNDS: list[dict[str, Any]] = [
    {"key_ttl": 5.0},
    {"max_keys": 3},
    {"max_keys": 1},
    {"key_ttl": 5.0, "max_keys": 3},
    {"key_ttl": 5.0, "max_keys": 3, "allowed_lateness": 2.0, "late_policy": "dead_letter"},
]


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warm_up()


def _bounded(**bounds: Any) -> FeatureSet:
    return FeatureSet.from_spec({**UNBOUNDED, **bounds})


Batch = tuple[list[str], np.ndarray, dict[str, list[Any]]]


@st.composite
def batches(draw: st.DrawFn, max_n: int = 150) -> Batch:
    """Up to ten keys (the global key "" among them), gaps that outlast a 5 s TTL, events
    that come late by up to 10 s, missing values, categories."""
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_keys = draw(st.integers(1, 10))
    keys = [("" if k == 0 else f"user-{k}") for k in rng.integers(0, n_keys, n)]
    steps = np.where(rng.random(n) < 0.3, 0.0, rng.choice([0.5, 1.0, 3.0, 15.0], n))
    late = np.where(rng.random(n) < 0.2, rng.choice([1.0, 3.0, 10.0], n), 0.0)
    times = 1.7e9 + np.cumsum(steps) - late
    values = rng.normal(0.0, 10.0, (2, n)).round(2)
    missing = rng.random((2, n)) < 0.1
    cats: list[Any] = ["a", "b", "c", "d", None]
    columns = {
        "x": [None if m else float(v) for m, v in zip(missing[0], values[0], strict=True)],
        "y": [None if m else float(v) for m, v in zip(missing[1], values[1], strict=True)],
        "c": [cats[i] for i in rng.integers(0, len(cats), n)],
    }
    return keys, times, columns


def _slice(batch: Batch, lo: int, hi: int) -> Batch:
    keys, times, columns = batch
    return keys[lo:hi], times[lo:hi], {k: v[lo:hi] for k, v in columns.items()}


def _pick(batch: Batch, keep: Sequence[bool]) -> Batch:
    keys, times, columns = batch
    return (
        [k for k, ok in zip(keys, keep, strict=True) if ok],
        times[np.asarray(keep, dtype=bool)],
        {c: [v for v, ok in zip(vs, keep, strict=True) if ok] for c, vs in columns.items()},
    )


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: float = 0.0) -> None:
    assert list(got) == list(want)
    for name in got:
        np.testing.assert_allclose(
            got[name], want[name], rtol=tol, atol=tol, equal_nan=True, err_msg=name
        )


def _run(fs: FeatureSet, state: FeatureState, batch: Batch) -> tuple[list[bool], dict[str, Any]]:
    """Like the features stage: late events out first, the rest computed."""
    late = fs.late(state, batch[0], batch[1])
    return late.tolist(), fs.compute(state, *_pick(batch, (~late).tolist()))


# --------------------------------------------------------------------------------------
# The rules, written naively: a returning key is a new key
# --------------------------------------------------------------------------------------


def _oracle(
    keys: Sequence[str], times: Sequence[float], bounds: dict[str, Any]
) -> tuple[list[str | None], Counter[str], dict[str, float], float]:
    """The module docstring's rules, event by event, in the slowest obvious way.

    Returns each event's key renamed ``key#incarnation`` (None if late), the evictions by
    cause, the live keys (in the order they entered) with their latest times, and the
    watermark.
    """
    ttl = bounds.get("key_ttl", math.inf)
    cap = bounds.get("max_keys", math.inf)
    lateness = (
        bounds["allowed_lateness"] if bounds.get("late_policy") == "dead_letter" else math.inf
    )
    live: dict[str, tuple[float, int]] = {}  # key -> (latest time, entry number)
    incarnation: Counter[str] = Counter()
    entries = itertools.count()
    evicted: Counter[str] = Counter()
    watermark = -math.inf
    renamed: list[str | None] = []

    def sweep() -> None:
        for stale in [k for k, (last, _) in live.items() if last < watermark - ttl]:
            del live[stale]
            evicted["ttl"] += 1

    for key, t in zip(keys, map(float, times), strict=True):
        watermark = max(watermark, t)  # a late event never moves it: t < its key's latest
        sweep()
        if key in live and t < live[key][0] - lateness:
            renamed.append(None)
            continue
        if key not in live:
            if len(live) >= cap:
                del live[min(live, key=live.__getitem__)]
                evicted["cap"] += 1
            incarnation[key] += 1
            live[key] = (t, next(entries))
        else:
            live[key] = (max(live[key][0], t), live[key][1])
        renamed.append(f"{key}#{incarnation[key]}")
        sweep()  # the key itself, if its event was already stale
    latest = {k: last for k, (last, _) in live.items()}
    return renamed, evicted, latest, watermark


@pytest.mark.parametrize("bounds", BOUNDS, ids=lambda b: ",".join(b))
@PROPERTY
@given(batch=batches(), cuts=st.lists(st.integers(0, 150), max_size=3))
def test_eviction_is_a_fresh_key_and_changes_no_other_key(
    bounds: dict[str, Any], batch: Batch, cuts: list[int]
) -> None:
    """Against the unbounded set fed each incarnation of a key as a key of its own: equal
    outputs for every event, equal rows for every live key, the oracle's evictions."""
    fs = _bounded(**bounds)
    keys, times, _ = batch
    renamed, evicted, latest, watermark = _oracle(keys, times.tolist(), bounds)
    late = [r is None for r in renamed]

    state, twin = fs.new_state(capacity=1), fs.new_state()
    n = len(keys)
    bounds_at = [0, *sorted(min(c, n) for c in cuts), n]
    flags: list[bool] = []
    parts: list[dict[str, Any]] = []
    for lo, hi in itertools.pairwise(bounds_at):
        part = _slice(batch, lo, hi)
        got_late, got = _run(fs, state, part)
        flags += got_late
        parts.append(got)
        ref_late = fs.late(twin, part[0], part[1])
        _same(fs.compute_reference(twin, *_pick(part, (~ref_late).tolist())), got, tol=1e-9)
    assert flags == late
    assert state.evictions == {"ttl": evicted["ttl"], "cap": evicted["cap"]}
    assert fs.evictions == {"ttl": 2 * evicted["ttl"], "cap": 2 * evicted["cap"]}
    assert state.keys == list(latest)
    assert state.watermark == watermark

    reference = FeatureSet.from_spec(UNBOUNDED)
    ref_state = reference.new_state()
    kept = [r for r in renamed if r is not None]
    want = reference.compute(ref_state, kept, *_pick(batch, [not x for x in late])[1:])
    _same({k: np.concatenate([p[k] for p in parts]) for k in fs.outputs}, want)

    incarnation = {r.rpartition("#")[0]: r for r in kept}
    for key, last in latest.items():
        row, ref_row = state.slot(key), ref_state.slot(incarnation[key])
        assert row is not None
        assert ref_row is not None
        assert state.arrays["_keys/last_time"][row] == last
        for name, ref_array in ref_state.arrays.items():
            np.testing.assert_array_equal(state.arrays[name][row], ref_array[ref_row])


@pytest.mark.parametrize("bounds", BOUNDS, ids=lambda b: ",".join(b))
@PROPERTY
@given(batch=batches(), cuts=st.lists(st.integers(0, 150), max_size=4))
def test_batch_boundaries_do_not_change_a_bounded_state(
    bounds: dict[str, Any], batch: Batch, cuts: list[int]
) -> None:
    fs = _bounded(**bounds)
    whole = fs.new_state()
    whole_late, whole_out = _run(fs, whole, batch)
    n = len(batch[0])
    state = fs.new_state(capacity=1)
    flags: list[bool] = []
    parts = []
    for lo, hi in itertools.pairwise([0, *sorted(min(c, n) for c in cuts), n]):
        late, out = _run(fs, state, _slice(batch, lo, hi))
        flags += late
        parts.append(out)
    assert flags == whole_late
    _same({k: np.concatenate([p[k] for p in parts]) for k in fs.outputs}, whole_out)
    assert state.to_bytes() == whole.to_bytes()
    assert state.evictions == whole.evictions


@pytest.mark.parametrize("bounds", BOUNDS, ids=lambda b: ",".join(b))
@PROPERTY
@given(batch=batches(), cut=st.integers(0, 150))
def test_a_restored_bounded_state_continues_identically(
    bounds: dict[str, Any], batch: Batch, cut: int
) -> None:
    fs = _bounded(**bounds)
    n = len(batch[0])
    cut = min(cut, n)
    live = fs.new_state()
    _run(fs, live, _slice(batch, 0, cut))
    saved = live.to_bytes()
    restored = FeatureState.from_bytes(saved)
    assert restored.to_bytes() == saved
    assert (restored.keys, restored.watermark) == (live.keys, live.watermark)
    rest = _slice(batch, cut, n)
    restored_late, restored_out = _run(fs, restored, rest)
    live_late, live_out = _run(fs, live, rest)
    assert restored_late == live_late
    _same(restored_out, live_out)
    assert restored.to_bytes() == live.to_bytes()


# --------------------------------------------------------------------------------------
# Known values
# --------------------------------------------------------------------------------------

GAP = {"name": "s", "derived": [{"name": "gap", "kind": "since_last"}]}


def _gaps(fs: FeatureSet, state: FeatureState, keys: list[str], times: list[float]) -> list[float]:
    out: list[float] = fs.compute(state, keys, times, {})["gap"].tolist()
    return out


def test_ttl_evicts_a_key_silent_for_more_than_key_ttl() -> None:
    fs = FeatureSet.from_spec({**GAP, "key_ttl": 10})
    state = fs.new_state()
    # a is 11 s behind the watermark at its second event: evicted, back fresh (no gap).
    gaps = _gaps(fs, state, ["a", "b", "a"], [0.0, 8.0, 11.0])
    assert math.isnan(gaps[2])
    assert state.keys == ["b", "a"]
    # Exactly key_ttl behind is not "more than": b (8) stays at 18, goes at 18.5.
    _gaps(fs, state, ["c"], [18.0])
    assert state.keys == ["b", "a", "c"]
    _gaps(fs, state, ["c"], [18.5])
    assert state.keys == ["a", "c"]
    assert state.evictions == fs.evictions == {"ttl": 2, "cap": 0}


def test_cap_evicts_the_least_recently_seen_key_by_event_time() -> None:
    fs = FeatureSet.from_spec({**GAP, "max_keys": 2})
    state = fs.new_state()
    _gaps(fs, state, ["a", "b", "a", "c"], [0.0, 1.0, 2.0, 3.0])
    assert state.keys == ["a", "c"]  # b last seen at 1, a at 2
    # Event time decides, not arrival: d comes in at 0.5, older than c and a.
    _gaps(fs, state, ["d"], [0.5])
    assert state.keys == ["c", "d"]  # a (2) was the least recent
    _gaps(fs, state, ["e"], [4.0])
    assert state.keys == ["c", "e"]  # d (0.5) went, though it came last
    assert state.evictions == {"ttl": 0, "cap": 3}


def test_cap_ties_go_to_the_key_that_entered_first() -> None:
    fs = FeatureSet.from_spec({**GAP, "max_keys": 2})
    for first, second in (("a", "b"), ("b", "a")):
        state = fs.new_state()
        _gaps(fs, state, [first, second, "c"], [5.0, 5.0, 6.0])
        assert state.keys == [second, "c"]


def test_a_stale_key_goes_first_and_counts_as_ttl() -> None:
    fs = FeatureSet.from_spec({**GAP, "key_ttl": 10, "max_keys": 2})
    state = fs.new_state()
    _gaps(fs, state, ["a", "b", "c"], [0.0, 1.0, 20.0])
    assert state.keys == ["c"]
    assert state.evictions == {"ttl": 2, "cap": 0}


def test_a_returning_key_starts_fresh_and_the_others_keep_their_values() -> None:
    spec = {
        "name": "s",
        "derived": [
            {"name": "ewm", "kind": "ewm_mean", "field": "x", "half_life": 60.0},
            {"name": "z", "kind": "zscore", "field": "x"},
        ],
    }
    bounded, unbounded = FeatureSet.from_spec({**spec, "max_keys": 2}), FeatureSet.from_spec(spec)
    keys = ["a", "a", "b", "b", "c", "a", "b", "b"]
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    x = [1.0, 3.0, 10.0, 20.0, 7.0, 5.0, 30.0, 40.0]
    state = bounded.new_state()
    got = bounded.compute(state, keys, times, {"x": x})
    want = unbounded.compute(unbounded.new_state(), keys, times, {"x": x})
    # c evicts a (last seen at 1); a's return evicts b (3); b's return evicts c (4).
    assert state.evictions == {"ttl": 0, "cap": 3}
    for name in ("ewm", "z"):
        np.testing.assert_array_equal(got[name][:5], want[name][:5])
    # From then on a and b are keys never seen: as computed by a new state.
    fresh = unbounded.compute(
        unbounded.new_state(), ["a", "b", "b"], times[5:], {"x": [5.0, 30.0, 40.0]}
    )
    for name in ("ewm", "z"):
        np.testing.assert_array_equal(got[name][5:], fresh[name])
    assert not np.array_equal(got["ewm"][5:], want["ewm"][5:])


# --------------------------------------------------------------------------------------
# Late events with eviction
# --------------------------------------------------------------------------------------


def test_an_evicted_key_has_no_latest_time_so_its_old_event_is_not_late() -> None:
    fs = FeatureSet.from_spec(
        {**GAP, "key_ttl": 10, "allowed_lateness": 2, "late_policy": "dead_letter"}
    )
    state = fs.new_state()
    late, _ = _run(fs, state, (["a", "b", "a", "a"], np.array([5.0, 20.0, 1.0, 19.0]), {}))
    # a (5) is stale once b brings the watermark to 20: its event at 1 starts it afresh;
    # the one at 19 is then 18 s after a's latest (1), not before it.
    assert late == [False, False, False, False]
    late, _ = _run(fs, state, (["b", "b"], np.array([17.0, 18.5]), {}))
    assert late == [True, False]


def test_compute_after_late_must_get_the_events_late_let_through() -> None:
    fs = FeatureSet.from_spec(
        {**GAP, "key_ttl": 10, "allowed_lateness": 2, "late_policy": "dead_letter"}
    )
    state = fs.new_state()
    fs.late(state, ["a", "b"], [5.0, 6.0])
    with pytest.raises(FeatureError, match="exactly the events it did not flag"):
        fs.compute(state, ["a"], [5.0], {})


# --------------------------------------------------------------------------------------
# Spec, hash, checkpoints
# --------------------------------------------------------------------------------------


def test_the_bounds_are_part_of_the_label_and_unset_leaves_it_as_it_was() -> None:
    plain = FeatureSet.from_spec(UNBOUNDED)
    labels = {
        plain.label,
        _bounded(key_ttl=60).label,
        _bounded(key_ttl=120).label,
        _bounded(max_keys=1000).label,
        _bounded(key_ttl=60, max_keys=1000).label,
    }
    assert len(labels) == 5
    assert _bounded(key_ttl=60).label == _bounded(key_ttl=60.0).label
    assert set(plain.to_spec()) == {"name", "derived"}
    spec = _bounded(key_ttl=60, max_keys=9).to_spec()
    assert (spec["key_ttl"], spec["max_keys"]) == (60.0, 9)
    # Unset, the label is the one it was before the bounds existed (what every existing
    # checkpoint and lineage header carries).
    assert plain.label == "bounds@a68ac8ab8135"
    assert not plain.new_state().bounded


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ({"key_ttl": 0}, "key_ttl must be a positive number of seconds"),
        ({"key_ttl": -5.0}, "key_ttl must be"),
        ({"key_ttl": math.inf}, "key_ttl must be"),
        ({"key_ttl": "1h"}, "key_ttl must be"),
        ({"key_ttl": True}, "key_ttl must be"),
        ({"max_keys": 0}, r"max_keys must be an integer >= 1"),
        ({"max_keys": 10.5}, "max_keys must be"),
        ({"max_keys": False}, "max_keys must be"),
        (
            {"max_key": 10},
            "unknown key 'max_key' \\(did you mean 'max_keys'\\?\\); "
            "valid keys: .*key_ttl, max_keys",
        ),
    ],
)
def test_bad_bounds(bounds: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _bounded(**bounds)


def _meta(data: bytes) -> dict[str, Any]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        meta: dict[str, Any] = json.loads(zf.read("meta.json"))
    return meta


def _with_meta(data: bytes, **changes: Any) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "meta.json":
                body = json.dumps(_meta(data) | changes).encode()
            dst.writestr(info, body)
    return out.getvalue()


def test_checkpoint_keeps_the_eviction_bookkeeping() -> None:
    fs = FeatureSet.from_spec({**GAP, "key_ttl": 10, "max_keys": 3})
    state = fs.new_state()
    _gaps(fs, state, ["a", "b", "c", "d", "b", "e"], [0.0, 1.0, 2.0, 3.0, 4.0, 12.5])
    # a: cap at d; c: at e, stale (2 < 12.5 - 10), so ttl. Keys keep the order they entered.
    assert state.keys == ["b", "d", "e"]
    assert state.evictions == {"ttl": 1, "cap": 1}
    data = state.to_bytes()
    meta = _meta(data)
    assert (meta["version"], meta["watermark"], meta["keys"]) == (2, 12.5, ["b", "d", "e"])
    assert "_keys/last_time" in {a["name"] for a in meta["arrays"]}
    restored = FeatureState.from_bytes(data)
    assert restored.arrays["_keys/last_time"][:3].tolist() == [4.0, 3.0, 12.5]
    assert restored.evictions == {"ttl": 0, "cap": 0}  # a count of this process, not state
    # The restored state evicts as the live one would have: d (3) is least recent.
    gaps = [_gaps(fs, s, ["f", "b"], [12.6, 13.0]) for s in (restored, state)]
    np.testing.assert_array_equal(gaps[0], gaps[1])
    np.testing.assert_array_equal(gaps[0], [NAN, 9.0])  # f new; b last seen at 4
    assert restored.keys == state.keys == ["b", "e", "f"]
    assert restored.to_bytes() == state.to_bytes()


def test_unbounded_states_are_still_written_as_version_1() -> None:
    fs = FeatureSet.from_spec(GAP)
    state = fs.new_state()
    _gaps(fs, state, ["a"], [1.0])
    meta = _meta(state.to_bytes())
    assert meta["version"] == 1
    assert "watermark" not in meta


@pytest.mark.parametrize(
    ("bounded", "changes", "message"),
    [
        (True, {"version": 3}, "version 3"),
        (True, {"version": 1}, "version 1 with the array '_keys/last_time' present"),
        (False, {"version": 2, "watermark": 1.0}, "version 2 with .* missing"),
        (True, {"watermark": 0.5}, "past the watermark"),
    ],
)
def test_a_state_of_an_unknown_or_inconsistent_version_is_refused(
    bounded: bool, changes: dict[str, Any], message: str
) -> None:
    fs = FeatureSet.from_spec({**GAP, "key_ttl": 10} if bounded else GAP)
    state = fs.new_state()
    _gaps(fs, state, ["a"], [1.0])
    with pytest.raises(FeatureError, match="cannot read feature state: .*" + message):
        FeatureState.from_bytes(_with_meta(state.to_bytes(), **changes))


def test_a_bounded_state_takes_no_keys_around_its_bookkeeping() -> None:
    state = _bounded(key_ttl=5).new_state()
    with pytest.raises(FeatureError, match=r"takes its keys through FeatureState\.admit"):
        state.slots_for(["a"])


# --------------------------------------------------------------------------------------
# Size, budget, metrics
# --------------------------------------------------------------------------------------


def test_nbytes_counts_arrays_and_keys_and_shrinks_after_compaction() -> None:
    fs = FeatureSet.from_spec({**GAP, "key_ttl": 10})
    state = fs.new_state(capacity=4)
    empty = state.nbytes()
    _gaps(fs, state, [f"key-{i}" for i in range(1000)], [0.0] * 1000)
    full = state.nbytes()
    assert full >= empty + 1000 * (8 + 8 + 49)  # gap clock, last time, a key string
    _gaps(fs, state, ["late-comer"], [100.0])
    assert state.keys == ["late-comer"]
    assert state.capacity == 16  # compacted: 1000 evicted rows outnumber the 1 live one
    assert state.nbytes() < empty + 16 * 16 + 200


def test_state_budget_levels_and_messages() -> None:
    budget = StateBudget(limit=64 * 1024 * 1024)
    assert budget.level(32 * 1024 * 1024) == "ok"  # exactly half: not over it
    assert budget.level(32 * 1024 * 1024 + 1) == "warn"
    assert budget.level(64 * 1024 * 1024) == "warn"
    assert budget.level(64 * 1024 * 1024 + 1) == "over"
    assert StateBudget(limit=100, warn_fraction=0.8).level(79) == "ok"
    assert "can no longer be checkpointed" in budget.describe(10**9, "cards partition 3")
    assert "50% of RIVERLINE_CHECKPOINT_MAX_BYTES" in budget.describe(2**25 + 1, "p")
    with pytest.raises(FeatureError, match="warn_fraction"):
        StateBudget(limit=100, warn_fraction=1.0)


class _Stage:
    def __init__(self) -> None:
        self.totals = {"ttl": 0, "cap": 0}
        self.size = 0

    def eviction_totals(self) -> dict[str, int]:
        return self.totals

    def state_bytes(self) -> int:
        return self.size


def _samples(metrics: WorkerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("riverline_feature")
    }


def test_metrics_export_evictions_by_cause_and_state_bytes() -> None:
    metrics = WorkerMetrics()
    stage = _Stage()
    metrics.watch_features("cards", stage)
    ttl = ("riverline_feature_evictions_total", (("cause", "ttl"), ("pipeline", "cards")))
    cap = ("riverline_feature_evictions_total", (("cause", "cap"), ("pipeline", "cards")))
    size = ("riverline_feature_state_bytes", (("pipeline", "cards"),))
    assert {k: v for k, v in _samples(metrics).items() if k in (ttl, cap, size)} == {
        ttl: 0.0,
        cap: 0.0,
        size: 0.0,
    }
    stage.totals, stage.size = {"ttl": 7, "cap": 2}, 4096
    got = _samples(metrics)
    assert (got[ttl], got[cap], got[size]) == (7.0, 2.0, 4096.0)
    stage.totals, stage.size = {"ttl": 10, "cap": 2}, 1024
    got = _samples(metrics)
    assert (got[ttl], got[cap], got[size]) == (10.0, 2.0, 1024.0)


def test_bounded_batches_need_no_new_compilation() -> None:
    before = {kind: len(fn.signatures) for kind, fn in kernels.KERNELS.items()}
    fs = _bounded(key_ttl=5.0, max_keys=3, allowed_lateness=1.0, late_policy="dead_letter")
    state = fs.new_state(capacity=1)
    keys = ["a", "b", "c", "d", "a", "e"]
    times = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 20.0])
    columns: dict[str, list[Any]] = {"x": [1] * 6, "y": [2.0] * 6, "c": ["u"] * 6}
    _run(fs, state, (keys, times, columns))
    # a goes for d, b for a's return (cap); a, c, d are stale at e (ttl).
    assert state.evictions == {"ttl": 3, "cap": 2}
    assert {kind: len(fn.signatures) for kind, fn in kernels.KERNELS.items()} == before


# --------------------------------------------------------------------------------------
# Through the features stage
# --------------------------------------------------------------------------------------

SCHEMA = {
    "type": "record",
    "name": "CardEvent",
    "namespace": "riverline.cards",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "card", "type": "string"},
        {"name": "amount", "type": "double"},
    ],
}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> SchemaCatalog:
    root = Path(tmp_path_factory.mktemp("schemas"))
    shutil.copytree(REPO_ROOT / "schemas" / "riverline", root / "riverline")
    (root / "cards").mkdir()
    (root / "cards" / "v1.avsc").write_text(json.dumps(SCHEMA))
    return SchemaCatalog.load(root)


def _card_spec(**features: Any) -> PipelineSpec:
    source = {
        "pipeline": {"name": "cards", "subject": "cards", "partitions": 1, "key_field": "card"},
        "features": {
            "name": "card_features",
            "derived": [
                {"name": "ewm", "kind": "ewm_mean", "field": "amount", "half_life": 30.0},
                {"name": "gap", "kind": "since_last"},
            ],
            **features,
        },
        "model": {
            "name": "m",
            "task": "regression",
            "target": "",
            "inputs": ["amount"],
            "steps": [{"estimator": "linear_model.LinearRegression"}],
        },
    }
    return parse_spec(json.loads(json.dumps(source)))


def _card_events(
    catalog: SchemaCatalog, spec: PipelineSpec, rows: list[tuple[str, float, float]]
) -> list[InMessage]:
    ingest = Ingestion(
        spec, catalog, events_topic="cards.events", dlq_topic="dlq", max_bytes=1 << 20
    )
    raw = [
        InMessage(
            "cards.raw",
            0,
            i,
            card.encode(),
            json.dumps(
                {"event_id": f"e{i}", "event_time": int(t * 1000), "card": card, "amount": a}
            ).encode(),
            0,
        )
        for i, (card, t, a) in enumerate(rows)
    ]
    return [
        InMessage("cards.events", 0, i, m.key, m.value, 0, tuple(m.headers))
        for i, m in enumerate(ingest.process(raw).sends)
    ]


def test_the_features_stage_evicts_dead_letters_and_checkpoints_a_bounded_state(
    catalog: SchemaCatalog,
) -> None:
    spec = _card_spec(key_ttl=60, allowed_lateness=5, late_policy="dead_letter")
    rows = [("c1", 0.0, 1.0), ("c2", 50.0, 2.0), ("c1", 40.0, 3.0), ("c2", 100.0, 4.0)]
    rows += [("c1", 30.0, 5.0), ("c2", 90.0, 6.0), ("c3", 170.0, 7.0), ("c1", 171.0, 8.0)]
    events = _card_events(catalog, spec, rows)
    stage = Featurization(spec, catalog, features_topic="cards.features", dlq_topic="dlq")

    # c1 at 30 is late (c1 saw 40), then c2 at 90 (c2 saw 100); neither is evicted yet.
    first = featurize_events(catalog, stage, events[:5])
    assert (first.ok, dict(first.dead)) == (4, {"late": 1})
    assert [m.topic for m in featurize_events(catalog, stage, events[5:6]).sends] == ["dlq"]
    saved = stage.checkpoint(0)
    restored = Featurization(spec, catalog, features_topic="cards.features", dlq_topic="dlq")
    restored.restore(saved)
    assert restored.state_bytes() > 0  # less than stage's: restored with fewer rows
    schema = catalog.record("feature_vector")
    for s in (stage, restored):
        result = featurize_events(catalog, s, events[6:])
        vectors = [decode_single_object(catalog, m.value, schema)[1] for m in result.sends]
        # c3 takes the watermark to 170: c1 (40) comes back at 171 fresh, no gap.
        assert [(v["entity_key"], v["values"]["gap"]) for v in vectors] == [
            ("c3", None),
            ("c1", None),
        ]
        assert s.held[0].state.keys == ["c3", "c1"]  # c2 (100) went after the batch
        assert s.eviction_totals() == {"ttl": 2, "cap": 0}
    assert stage.checkpoint(0).state == restored.checkpoint(0).state


# --------------------------------------------------------------------------------------
# The test: many distinct keys stay bounded by the TTL
# --------------------------------------------------------------------------------------


def test_300k_distinct_keys_stay_bounded_by_key_ttl() -> None:
    """300,000 distinct keys, 1,000 per second of event time, batches of 1,000, key_ttl 10 s.

    Each key is seen once, so at most the keys of the last 10 s are alive after a batch:
    ``L = 10,001`` (both ends of the 10 s included). Rows of evicted keys are compacted
    away once they outnumber the live ones, so the rows in use stay below ``2 * L`` plus
    the batch being computed, and the arrays hold at most twice that (doubling growth):
    the state's bytes stay under ``4 * (L + batch)`` rows of arrays plus a key string and
    map entry (200 bytes) each, and the process RSS grows by at most 64 MiB.

    Without ``key_ttl`` the same run holds all 300,000 keys: arrays of 524,288 rows after
    doubling (104 bytes each, no per-key event time) plus a dict entry and a string per
    key, all of it in every checkpoint; with it, about 290,000 evictions are counted.
    """
    fs = FeatureSet.from_spec(
        {
            "name": "many_keys",
            "key_ttl": 10,
            "derived": [
                {"name": "n", "kind": "window_count", "window": 60.0, "max_events": 4},
                {"name": "ewm", "kind": "ewm_mean", "field": "x", "half_life": 30.0},
                {"name": "gap", "kind": "since_last"},
            ],
        }
    )
    state = fs.new_state()
    rate, batch, total, ttl = 1000, 1000, 300_000, 10
    alive = rate * ttl + 1
    row_bytes = 4 * 16 + 8 + 3 * 8 + 8 + 8  # ring, ring_len, ewm (3), clock, last time
    bound = 4 * (alive + batch) * (row_bytes + 200)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak_bytes = peak_rss = 0
    rng = np.random.default_rng(3)
    for start in range(0, total, batch):
        ids = range(start, start + batch)
        keys = [f"user-{i:06d}" for i in ids]
        times = 1.7e9 + np.arange(start, start + batch, dtype=np.float64) / rate
        fs.compute(state, keys, times, {"x": rng.normal(size=batch).tolist()})
        assert state.n_keys <= alive
        peak_bytes = max(peak_bytes, state.nbytes())
        peak_rss = max(peak_rss, process.memory_info().rss - rss_before)
    assert peak_bytes < bound
    assert peak_rss < 64 * 1024 * 1024
    assert fs.evictions["ttl"] == total - state.n_keys >= total - alive
    assert fs.evictions["cap"] == 0
