"""FeatureSet: spec validation, hashing, batches through the kernels, state checkpoints."""

from __future__ import annotations

import itertools
import math
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.errors import RiverlineError, SpecError
from streams.features import kernels
from streams.features.engine import KINDS, FeatureError, FeatureSet, FeatureState, warm_up
from streams.settings import REPO_ROOT

NAN = math.nan
PROPERTY = settings(max_examples=60, deadline=None, database=None)

#: One feature of every kind, with buffers small enough to overflow in the tests.
ALL_KINDS: dict[str, Any] = {
    "name": "all_kinds",
    "derived": [
        {"name": "n_5s", "kind": "window_count", "window": 5.0, "max_events": 4},
        {"name": "n_x_5s", "kind": "window_count", "field": "x", "window": 5.0},
        {"name": "sum_x_5s", "kind": "window_sum", "field": "x", "window": 5, "max_events": 3},
        {"name": "mean_x_20s", "kind": "window_mean", "field": "x", "window": 20.0},
        {"name": "ewm_x", "kind": "ewm_mean", "field": "x", "half_life": 3.0},
        {"name": "var_x", "kind": "ewm_var", "field": "x", "half_life": 10.0},
        {"name": "gap", "kind": "since_last"},
        {"name": "z_y", "kind": "zscore", "field": "y"},
        {"name": "x_per_y", "kind": "ratio", "fields": ["x", "y"]},
        {"name": "freq_c", "kind": "frequency", "field": "c", "max_categories": 3},
    ],
}


@pytest.fixture(scope="module", autouse=True)
def _compiled() -> None:
    warm_up()


def _phishing_features() -> dict[str, Any]:
    with (REPO_ROOT / "pipelines" / "phishing.toml").open("rb") as f:
        section: dict[str, Any] = tomllib.load(f)["features"]
    return section


def _same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: float = 0.0) -> None:
    assert list(got) == list(want)
    for name in got:
        np.testing.assert_allclose(
            got[name], want[name], rtol=tol, atol=tol, equal_nan=True, err_msg=name
        )


# --------------------------------------------------------------------------------------
# Random batches
# --------------------------------------------------------------------------------------

Batch = tuple[list[str], np.ndarray, dict[str, list[Any]]]


@st.composite
def batches(draw: st.DrawFn, max_n: int = 120) -> Batch:
    """Keys (with the global key ""), out-of-order times, missing values, categories."""
    n = draw(st.integers(0, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_keys = draw(st.integers(1, 10))
    keys = [("" if k == 0 else f"user-{k}") for k in rng.integers(0, n_keys, n)]
    steps = np.where(rng.random(n) < 0.3, 0.0, rng.choice([0.5, 1.0, 3.0], n))
    late = np.where(rng.random(n) < 0.2, rng.choice([1.0, 10.0], n), 0.0)
    times = 1.7e9 + np.cumsum(steps) - late

    def numbers() -> list[Any]:
        raw = rng.normal(0.0, 10.0, n).round(2)
        return [
            None if u < 0.1 else (0 if u < 0.2 else float(v))
            for u, v in zip(rng.random(n), raw, strict=True)
        ]

    cats: list[Any] = ["a", "b", "c", "d", None, 7, True]
    columns = {
        "x": numbers(),
        "y": numbers(),
        "c": [cats[i] for i in rng.integers(0, len(cats), n)],
    }
    return keys, times, columns


def _slice(batch: Batch, lo: int, hi: int) -> Batch:
    keys, times, columns = batch
    return keys[lo:hi], times[lo:hi], {k: v[lo:hi] for k, v in columns.items()}


@PROPERTY
@given(batch=batches())
def test_compute_equals_reference(batch: Batch) -> None:
    fs = FeatureSet.from_spec(ALL_KINDS)
    fast, ref = fs.new_state(), fs.new_state()
    _same(fs.compute(fast, *batch), fs.compute_reference(ref, *batch), tol=1e-9)
    assert fast.keys == ref.keys


@PROPERTY
@given(batch=batches(), cuts=st.lists(st.integers(0, 120), max_size=4))
def test_batch_boundaries_do_not_change_results(batch: Batch, cuts: list[int]) -> None:
    fs = FeatureSet.from_spec(ALL_KINDS)
    whole_state = fs.new_state()
    whole = fs.compute(whole_state, *batch)
    n = len(batch[0])
    bounds = [0, *sorted(min(c, n) for c in cuts), n]
    state = fs.new_state(capacity=1)  # and growing from one key on the way
    parts = [fs.compute(state, *_slice(batch, lo, hi)) for lo, hi in itertools.pairwise(bounds)]
    _same({k: np.concatenate([p[k] for p in parts]) for k in fs.outputs}, whole)
    assert state.to_bytes() == whole_state.to_bytes()


@PROPERTY
@given(batch=batches(), cut=st.integers(0, 120))
def test_checkpoint_mid_stream_continues_identically(batch: Batch, cut: int) -> None:
    fs = FeatureSet.from_spec(ALL_KINDS)
    n = len(batch[0])
    cut = min(cut, n)
    live = fs.new_state()
    fs.compute(live, *_slice(batch, 0, cut))
    saved = live.to_bytes()
    restored = FeatureState.from_bytes(saved)
    assert restored.to_bytes() == saved
    assert restored.n_keys == live.n_keys
    _same(fs.compute(restored, *_slice(batch, cut, n)), fs.compute(live, *_slice(batch, cut, n)))
    assert restored.to_bytes() == live.to_bytes()


# --------------------------------------------------------------------------------------
# The phishing spec and known values through the FeatureSet
# --------------------------------------------------------------------------------------


def test_phishing_spec_works() -> None:
    fs = FeatureSet.from_spec(_phishing_features())
    assert fs.name == "phishing_features"
    assert fs.outputs == ["long_url_ewm"]
    assert fs.inputs == ["long_url"]
    assert fs.label == f"phishing_features@{fs.hash}"
    assert len(fs.hash) == 12
    assert int(fs.hash, 16) >= 0
    state = fs.new_state()
    out = fs.compute(state, ["", "", ""], np.array([0.0, 60.0, 60.0]), {"long_url": [0, 1, None]})
    np.testing.assert_allclose(out["long_url_ewm"], [0.0, 2 / 3, 2 / 3])
    assert state.n_keys == 1
    assert state.keys == [""]


def test_none_key_is_the_global_key() -> None:
    fs = FeatureSet.from_spec(_phishing_features())
    state = fs.new_state()
    keys: list[Any] = ["", None]
    out = fs.compute(state, keys, [0.0, 0.0], {"long_url": [1.0, 3.0]})
    assert out["long_url_ewm"].tolist() == [1.0, 2.0]
    assert state.keys == [""]


def test_all_kinds_known_values() -> None:
    fs = FeatureSet.from_spec(ALL_KINDS)
    out = fs.compute(
        fs.new_state(),
        ["k", "k", "other", "k"],
        np.array([100.0, 102.0, 102.0, 106.0]),
        {"x": [1.0, None, 5.0, 3.0], "y": [2.0, 4.0, 0.0, 0.0], "c": ["a", "b", "a", "a"]},
    )
    expected = {
        "n_5s": [1, 2, 1, 2],  # (101, 106] holds 102 and 106
        "n_x_5s": [1, 1, 1, 1],  # the x at 102 is missing, the one at 100 leaves by 106
        "sum_x_5s": [1, 1, 5, 3],
        "mean_x_20s": [1, 1, 5, 2],
        "ewm_x": [1, 1, 5, (1 * 0.5 ** (6 / 3) + 3) / (0.5 ** (6 / 3) + 1)],
        "gap": [NAN, 2, NAN, 4],
        "z_y": [NAN, NAN, NAN, (0 - 3) / math.sqrt(2)],
        "x_per_y": [0.5, NAN, NAN, NAN],
        "freq_c": [1, 0.5, 1, 2 / 3],
    }
    for name, want in expected.items():
        np.testing.assert_allclose(out[name], want, rtol=1e-12, equal_nan=True, err_msg=name)


def test_frequency_compares_categories_as_strings() -> None:
    spec = {"name": "f", "derived": [{"name": "fr", "kind": "frequency", "field": "c"}]}
    fs = FeatureSet.from_spec(spec)
    out = fs.compute(fs.new_state(), [""] * 4, np.zeros(4), {"c": ["1", 1, None, NAN]})
    assert out["fr"].tolist()[:2] == [1.0, 1.0]
    assert all(math.isnan(v) for v in out["fr"][2:])


def test_empty_batch() -> None:
    fs = FeatureSet.from_spec(ALL_KINDS)
    state = fs.new_state()
    out = fs.compute(state, [], np.array([]), {"x": [], "y": [], "c": []})
    assert list(out) == fs.outputs
    assert all(v.shape == (0,) for v in out.values())
    assert state.n_keys == 0


def test_state_grows_past_its_capacity() -> None:
    fs = FeatureSet.from_spec(ALL_KINDS)
    small, large = fs.new_state(capacity=1), fs.new_state(capacity=4096)
    keys = [f"k{i % 300}" for i in range(1000)]
    times = np.arange(1000, dtype=np.float64)
    columns: dict[str, list[Any]] = {
        "x": [float(i % 7) for i in range(1000)],
        "y": [float(i % 5) for i in range(1000)],
        "c": [str(i % 4) for i in range(1000)],
    }
    _same(fs.compute(small, keys, times, columns), fs.compute(large, keys, times, columns))
    assert small.n_keys == 300
    assert small.capacity >= 300
    assert small.slot("k299") == 299
    assert small.slot("missing") is None


# --------------------------------------------------------------------------------------
# Hash and label
# --------------------------------------------------------------------------------------


def test_hash_is_stable_and_covers_semantics() -> None:
    base = _phishing_features()
    same = {"derived": [dict(reversed(list(base["derived"][0].items())))], "name": base["name"]}
    as_int = {**base, "derived": [{**base["derived"][0], "half_life": 60}]}
    other = {**base, "derived": [{**base["derived"][0], "half_life": 30.0}]}
    h = FeatureSet.from_spec(base).hash
    assert FeatureSet.from_spec(same).hash == h
    assert FeatureSet.from_spec(as_int).hash == h
    assert FeatureSet.from_spec(other).hash != h


def test_explicit_defaults_hash_like_omitted_ones() -> None:
    entry = {"name": "w", "kind": "window_sum", "field": "x", "window": 5.0}
    implicit = FeatureSet.from_spec({"name": "s", "derived": [entry]})
    explicit = FeatureSet.from_spec({"name": "s", "derived": [{**entry, "max_events": 64}]})
    assert implicit.label == explicit.label
    assert implicit.to_spec()["derived"][0]["max_events"] == 64


def test_no_derived_features() -> None:
    fs = FeatureSet.from_spec({"name": "plain", "derived": []})
    assert fs.outputs == []
    assert fs.inputs == []
    assert fs.compute(fs.new_state(), ["a"], [1.0], {}) == {}


# --------------------------------------------------------------------------------------
# Spec errors
# --------------------------------------------------------------------------------------


def _spec(**entry: Any) -> dict[str, Any]:
    return {"name": "s", "derived": [{"name": "f", **entry}]}


def test_unknown_kind_lists_the_valid_kinds() -> None:
    with pytest.raises(SpecError, match=r"derived\[0\] \('f'\): unknown kind 'ewma'") as err:
        FeatureSet.from_spec(_spec(kind="ewma", field="x", half_life=1.0))
    assert all(kind in str(err.value) for kind in KINDS)


def test_missing_field_names_the_entry_and_its_parameters() -> None:
    with pytest.raises(SpecError, match=r"derived\[0\] \('f', kind ewm_mean\): field") as err:
        FeatureSet.from_spec(_spec(kind="ewm_mean", half_life=1.0))
    assert "half_life" in str(err.value)
    assert "valid keys: name, kind, field, half_life" in str(err.value)


@pytest.mark.parametrize("half_life", [0, -1.0, math.inf, math.nan, "60", True, None])
def test_bad_half_life(half_life: Any) -> None:
    entry: dict[str, Any] = {"kind": "ewm_mean", "field": "x"}
    if half_life is not None:
        entry["half_life"] = half_life
    with pytest.raises(SpecError, match=r"kind ewm_mean\): (missing )?half_life") as err:
        FeatureSet.from_spec(_spec(**entry))
    assert "valid keys: name, kind, field, half_life" in str(err.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "window_sum", "field": "x"}, "missing window"),
        ({"kind": "window_sum", "field": "x", "window": 1, "max_events": 0}, "max_events must"),
        ({"kind": "window_sum", "field": "x", "window": 1, "max_events": 2.5}, "max_events must"),
        ({"kind": "frequency", "field": "c", "max_categories": 10**6}, "max_categories must"),
        (
            {"kind": "window_mean", "field": "x", "windw": 1},
            "unknown parameter 'windw' \\(did you mean 'window'\\?\\)",
        ),
        ({"kind": "ratio", "fields": ["x"]}, "fields must list two"),
        ({"kind": "ratio", "field": "x"}, "unknown parameter 'field'"),
        ({"kind": "since_last", "field": "x"}, "unknown parameter 'field'"),
        ({"kind": "zscore", "field": ""}, "field must name"),
    ],
)
def test_bad_entries(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=r"derived\[0\] \('f', kind \w+\): " + message) as err:
        FeatureSet.from_spec(_spec(**entry))
    assert "valid keys: name, kind" in str(err.value)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"derived": []}, "needs name"),
        ({"name": "s", "derived": {}}, "derived must be a list"),
        ({"name": "s", "derived": [], "windows": 1}, "unknown key 'windows'"),
        ({"name": "s", "derived": [{"kind": "since_last"}]}, "needs name"),
        (
            {"name": "s", "derived": [{"name": "a", "kind": "since_last"}] * 2},
            "duplicate feature name 'a'",
        ),
        ({"name": "s", "derived": [{"name": "x", "kind": "zscore", "field": "x"}]}, "input field"),
    ],
)
def test_bad_sections(section: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        FeatureSet.from_spec(section)


def test_spec_error_is_a_riverline_error() -> None:
    with pytest.raises(RiverlineError):
        FeatureSet.from_spec(_spec(kind="nope"))


# --------------------------------------------------------------------------------------
# Bad batches and states
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "times", "columns", "message"),
    [
        (["a"], [1.0], {}, "lacks column long_url"),
        (["a"], [NAN], {"long_url": [1.0]}, "not finite"),
        (["a", "b"], [1.0], {"long_url": [1.0, 2.0]}, "event times has shape"),
        (["a"], [1.0], {"long_url": [1.0, 2.0]}, "field 'long_url' has shape"),
        (["a"], [1.0], {"long_url": ["high"]}, "not a number"),
        ([3], [1.0], {"long_url": [1.0]}, "keys must be strings"),
    ],
)
def test_bad_batches(keys: list[Any], times: list[float], columns: Any, message: str) -> None:
    fs = FeatureSet.from_spec(_phishing_features())
    state = fs.new_state()
    with pytest.raises(FeatureError, match=message):
        fs.compute(state, keys, times, columns)
    assert state.n_keys == 0


def test_state_of_another_feature_set_is_refused() -> None:
    fs = FeatureSet.from_spec(ALL_KINDS)
    other = FeatureSet.from_spec(_phishing_features())
    with pytest.raises(FeatureError, match=f"belongs to {other.label}, not {fs.label}"):
        fs.compute(other.new_state(), [], [], {"x": [], "y": [], "c": []})
    # A state its own set has checked (and remembers) is still refused by another.
    state = other.new_state()
    other.compute(state, ["a"], [1.0], {"long_url": [1.0]})
    with pytest.raises(FeatureError, match=f"belongs to {other.label}, not {fs.label}"):
        fs.compute(state, [], [], {"x": [], "y": [], "c": []})


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04broken"])
def test_damaged_state_bytes(data: bytes) -> None:
    with pytest.raises(FeatureError, match="cannot read feature state"):
        FeatureState.from_bytes(data)


def test_state_bytes_are_deterministic() -> None:
    fs = FeatureSet.from_spec(ALL_KINDS)
    made = []
    for capacity in (1, 1024):
        state = fs.new_state(capacity)
        fs.compute(state, ["a", "b"], [1.0, 2.0], {"x": [1, 2], "y": [3, 4], "c": ["u", "v"]})
        made.append(state.to_bytes())
        time.sleep(0.01)
    assert made[0] == made[1]
    assert FeatureState.from_bytes(made[0]).keys == ["a", "b"]


# --------------------------------------------------------------------------------------
# Compilation stays out of the hot path
# --------------------------------------------------------------------------------------


def _signatures() -> dict[str, int]:
    return {kind: len(fn.signatures) for kind, fn in kernels.KERNELS.items()}


def _odd_inputs(n: int) -> Iterator[tuple[Any, Any]]:
    """Times and a column in every shape a caller might hand over."""
    base = np.arange(n, dtype=np.float64)
    readonly = base.copy()
    readonly.flags.writeable = False
    yield list(base), [1] * n
    yield np.arange(2 * n, dtype=np.float64)[::2], np.arange(2 * n, dtype=np.float32)[::2]
    yield readonly, readonly
    yield base.astype(">f8"), np.array([True] * n)


def test_warm_up_compiles_everything_compute_uses() -> None:
    warm_up()
    before = _signatures()
    assert all(count >= 1 for count in before.values())
    fs = FeatureSet.from_spec(ALL_KINDS)
    state = fs.new_state(capacity=2)
    for times, column in _odd_inputs(5):
        fs.compute(state, ["a", "b", "c", "d", "e"], times, {"x": column, "y": column, "c": column})
    assert _signatures() == before


# --------------------------------------------------------------------------------------
# Measurement (printed, not asserted: timings belong in the benchmark)
# --------------------------------------------------------------------------------------


def _timed(run: Any, state: FeatureState, batch: Batch) -> float:
    start = time.perf_counter()
    run(state, *batch)
    return time.perf_counter() - start


def _best_of(repeats: int, run: Any) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


@pytest.mark.parametrize("spec_name", ["all_kinds", "phishing"])
def test_measure_speedup_and_state_size(spec_name: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec = ALL_KINDS if spec_name == "all_kinds" else _phishing_features()
    # production defaults for the buffers, not the tests' tiny ones
    buffers = ("max_events", "max_categories")
    derived = [{k: v for k, v in e.items() if k not in buffers} for e in spec["derived"]]
    fs = FeatureSet.from_spec({"name": spec["name"], "derived": derived})
    rng = np.random.default_rng(7)
    n, n_keys = 10_000, 1_000

    def batch(start: float) -> tuple[list[str], np.ndarray, dict[str, list[Any]]]:
        keys = [f"user-{k}" for k in rng.integers(0, n_keys, n)]
        times = start + np.sort(rng.uniform(0, 600, n))
        columns: dict[str, list[Any]] = {
            "x": rng.normal(size=n).tolist(),
            "y": rng.normal(size=n).tolist(),
            "c": [str(v) for v in rng.integers(0, 20, n)],
            "long_url": rng.integers(0, 2, n).astype(float).tolist(),
        }
        return keys, times, columns

    first, second = batch(1.7e9), batch(1.7e9 + 600)
    state = fs.new_state()
    reference_state = fs.new_state()
    for b in (first, second):
        _same(fs.compute(state, *b), fs.compute_reference(reference_state, *b), tol=1e-9)

    # cold: a new state meets 1,000 new keys; steady: the keys and their history exist
    warm = fs.new_state()
    fs.compute(warm, *first)
    snapshot = warm.to_bytes()
    timings: dict[str, float] = {}
    for name, run in (("fast", fs.compute), ("reference", fs.compute_reference)):
        repeats = 5 if name == "fast" else 1
        timings[f"{name} cold"] = _best_of(repeats, lambda run=run: run(fs.new_state(), *first))
        timings[f"{name} steady"] = min(
            _timed(run, FeatureState.from_bytes(snapshot), second) for _ in range(repeats)
        )
    with capsys.disabled():
        for phase in ("cold", "steady"):
            fast, ref = timings[f"fast {phase}"], timings[f"reference {phase}"]
            print(
                f"\n[{fs.label}] {phase}: {n} events / {n_keys} keys: compute "
                f"{fast * 1e3:.2f} ms ({n / fast:,.0f} ev/s), reference {ref * 1e3:.0f} ms, "
                f"speed-up x{ref / fast:.0f}",
                end="",
            )
        print(
            f"\n[{fs.label}] state: {state.nbytes_per_key():.0f} B/key in memory, "
            f"{len(state.to_bytes()) / state.n_keys:.0f} B/key checkpointed"
        )
    assert state.n_keys == n_keys


def test_check_inputs_refuses_what_compute_would_refuse_and_takes_the_rest() -> None:
    fs = FeatureSet.from_spec(
        {
            "name": "c",
            "derived": [{"name": "m", "kind": "ewm_mean", "field": "x", "half_life": 1.0}],
        }
    )
    for fine in (1, 2.5, True, None, "3.5"):
        fs.check_inputs({"x": fine})
        fs.compute(fs.new_state(), [""], [0.0], {"x": [fine]})
    for bad in ("abc", [1.0], {"a": 1}):
        with pytest.raises(FeatureError, match="field 'x'"):
            fs.check_inputs({"x": bad})
        with pytest.raises(FeatureError, match="field 'x'"):
            fs.compute(fs.new_state(), [""], [0.0], {"x": [bad]})
