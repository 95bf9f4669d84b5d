"""Contract of the feature kernels: each Numba kernel equals its ``_py_`` twin, and both
give the hand-computed values of the documented semantics."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.features import kernels

NAN = math.nan
CONTRACT = settings(max_examples=150, deadline=None, database=None)


# --------------------------------------------------------------------------------------
# How to call each kind: value arrays, fresh state, scalar parameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    n_keys: int
    slots: np.ndarray
    times: np.ndarray
    values: np.ndarray
    other: np.ndarray  # a ratio's denominator
    codes: np.ndarray  # frequency's categories
    window: float
    half_life: float
    width: int  # max_events / max_categories


def _window_state(s: Stream) -> list[np.ndarray]:
    return [
        np.zeros((s.n_keys, s.width)),
        np.zeros((s.n_keys, s.width)),
        np.zeros(s.n_keys, dtype=np.int64),
    ]


@dataclass
class Call:
    """A kernel call without ``out``: per-event arrays, state arrays, scalar parameters."""

    events: list[np.ndarray]
    state: list[np.ndarray]
    scalars: list[float]

    def args(self, lo: int = 0, hi: int | None = None) -> list[Any]:
        events = [np.ascontiguousarray(a[lo:hi]) for a in self.events]
        return [*events, *self.state, *self.scalars]

    def copy(self) -> Call:
        return Call(list(self.events), [a.copy() for a in self.state], list(self.scalars))


def _call(kind: str, s: Stream) -> Call:
    """How to call ``kind`` on stream ``s`` from a fresh state."""
    k = s.n_keys
    head = [s.slots, s.times]
    if kind in ("window_count", "window_sum", "window_mean"):
        return Call([*head, s.values], _window_state(s), [s.window])
    if kind == "ewm_mean":
        return Call([*head, s.values], [np.zeros(k), np.zeros(k), np.full(k, NAN)], [s.half_life])
    if kind == "ewm_var":
        state = [np.zeros(k), np.zeros(k), np.zeros(k), np.full(k, NAN)]
        return Call([*head, s.values], state, [s.half_life])
    if kind == "since_last":
        return Call(head, [np.full(k, NAN)], [])
    if kind == "zscore":
        return Call([*head, s.values], [np.zeros(k, dtype=np.int64), np.zeros(k), np.zeros(k)], [])
    if kind == "ratio":
        return Call([*head, s.values, s.other], [], [])
    if kind == "frequency":
        tables = [np.zeros((k, s.width), dtype=np.int64) for _ in range(2)]
        counters = [np.zeros(k, dtype=np.int64) for _ in range(2)]
        return Call([*head, s.codes], [*tables, *counters], [])
    raise AssertionError(kind)


def _run(fn: Callable[..., None], call: Call) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run a kernel on a private copy of the state; return its output and final state."""
    mine = call.copy()
    out = np.full(len(call.events[0]), -12345.0)
    fn(*mine.args(), out)
    return out, mine.state


def _assert_same(got: np.ndarray, want: np.ndarray) -> None:
    if got.dtype.kind == "i":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, equal_nan=True)


# --------------------------------------------------------------------------------------
# Random streams: many keys, out-of-order and repeated times, NaNs, overflowing buffers
# --------------------------------------------------------------------------------------


def _values_like(rng: np.random.Generator, n: int, p_nan: float, p_special: float) -> np.ndarray:
    """Floats with ties (small integers), NaNs, and a few infinities and large values."""
    values = np.where(rng.random(n) < 0.5, rng.normal(0.0, 100.0, n), rng.integers(-2, 3, n))
    special = rng.choice(np.array([math.inf, -math.inf, 1e6, 0.0]), n)
    values = np.where(rng.random(n) < p_special, special, values)
    return np.where(rng.random(n) < p_nan, NAN, values).astype(np.float64)


@st.composite
def event_streams(draw: st.DrawFn) -> Stream:
    """Many keys, repeated and out-of-order times, NaNs, buffers small enough to overflow.

    Hypothesis draws the shape of the stream; a seeded generator fills the arrays (fast).
    """
    n_keys = draw(st.integers(1, 12))
    n = draw(st.integers(0, 200))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p_same = draw(st.sampled_from([0.0, 0.3, 0.8]))
    p_late = draw(st.sampled_from([0.0, 0.2, 0.6]))
    p_nan = draw(st.sampled_from([0.0, 0.1, 0.5]))
    p_special = draw(st.sampled_from([0.0, 0.02, 0.2]))
    steps = np.where(rng.random(n) < p_same, 0.0, rng.choice([0.25, 1.0, 2.5, 7.0], n))
    late = np.where(rng.random(n) < p_late, rng.choice([0.5, 1.0, 4.0, 30.0], n), 0.0)
    origin = draw(st.sampled_from([0.0, 1.7e9]))  # epoch-sized times lose low bits
    other = _values_like(rng, n, p_nan, p_special)
    return Stream(
        n_keys=n_keys,
        slots=rng.integers(0, n_keys, n).astype(np.int64),
        times=origin + np.cumsum(steps) - late,
        values=_values_like(rng, n, p_nan, p_special),
        other=np.where(rng.random(n) < 0.2, 0.0, other),
        codes=rng.integers(-1, draw(st.integers(1, 8)), n).astype(np.int64),
        window=draw(st.sampled_from([0.5, 1.0, 2.5, 10.0, 1000.0])),
        half_life=draw(st.sampled_from([0.1, 1.0, 5.0, 60.0])),
        width=draw(st.integers(1, 6)),
    )


@pytest.mark.parametrize("kind", sorted(kernels.KERNELS))
@CONTRACT
@given(stream=event_streams())
def test_kernel_equals_python_twin(kind: str, stream: Stream) -> None:
    call = _call(kind, stream)
    fast_out, fast_state = _run(kernels.KERNELS[kind], call)
    ref_out, ref_state = _run(kernels.REFERENCES[kind], call)
    _assert_same(fast_out, ref_out)
    for got, want in zip(fast_state, ref_state, strict=True):
        _assert_same(got, want)
    assert not (fast_out == -12345.0).any(), "every event gets an output"


@pytest.mark.parametrize("kind", sorted(kernels.KERNELS))
@CONTRACT
@given(stream=event_streams(), cut=st.integers(0, 200))
def test_kernel_state_carries_across_batches(kind: str, stream: Stream, cut: int) -> None:
    call = _call(kind, stream)
    whole, whole_state = _run(kernels.KERNELS[kind], call)
    n = len(stream.slots)
    cut = min(cut, n)
    parts = []
    for lo, hi in ((0, cut), (cut, n)):
        out = np.empty(hi - lo)
        kernels.KERNELS[kind](*call.args(lo, hi), out)  # call.state carries over
        parts.append(out)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    for got, want in zip(call.state, whole_state, strict=True):
        np.testing.assert_array_equal(got, want)


def test_twins_and_kernels_cover_the_same_kinds() -> None:
    assert set(kernels.KERNELS) == set(kernels.REFERENCES)
    for kind, fn in kernels.REFERENCES.items():
        assert fn.__name__ == f"_py_{kind}"
        assert fn.__name__ in kernels.__all__
        assert kind in kernels.__all__


# --------------------------------------------------------------------------------------
# Known values, checked on both implementations
# --------------------------------------------------------------------------------------

IMPLS = pytest.mark.parametrize("impl", ["numba", "python"])


def _impl(impl: str, kind: str) -> Callable[..., None]:
    return (kernels.KERNELS if impl == "numba" else kernels.REFERENCES)[kind]


def _stream(
    times: list[float],
    values: list[float] | None = None,
    *,
    slots: list[int] | None = None,
    other: list[float] | None = None,
    codes: list[int] | None = None,
    window: float = 10.0,
    half_life: float = 10.0,
    width: int = 8,
) -> Stream:
    n = len(times)
    slots = slots or [0] * n
    return Stream(
        n_keys=max(slots) + 1,
        slots=np.array(slots, dtype=np.int64),
        times=np.array(times, dtype=np.float64),
        values=np.array(values if values is not None else [0.0] * n, dtype=np.float64),
        other=np.array(other if other is not None else [1.0] * n, dtype=np.float64),
        codes=np.array(codes if codes is not None else [0] * n, dtype=np.int64),
        window=window,
        half_life=half_life,
        width=width,
    )


def _values(impl: str, kind: str, stream: Stream) -> list[float]:
    out, _ = _run(_impl(impl, kind), _call(kind, stream))
    return [round(float(v), 9) for v in out]


def _eq(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(
        (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9)
        for a, b in zip(got, want, strict=True)
    )


@IMPLS
def test_window_mean_over_10_seconds(impl: str) -> None:
    # At t=12 the event at t=0 has left (2, 12]; the late event at t=1 sees 0 and itself;
    # the NaN event reports the others; the other key is separate.
    s = _stream(
        [0.0, 5.0, 12.0, 1.0, 12.0, 3.0],
        [1.0, 2.0, 3.0, 4.0, NAN, 100.0],
        slots=[0, 0, 0, 0, 0, 1],
    )
    assert _eq(_values(impl, "window_mean", s), [1.0, 1.5, 2.5, 2.5, 2.5, 100.0])
    assert _eq(_values(impl, "window_sum", s), [1.0, 3.0, 5.0, 5.0, 5.0, 100.0])
    assert _eq(_values(impl, "window_count", s), [1.0, 2.0, 2.0, 2.0, 2.0, 1.0])


@IMPLS
def test_window_is_open_at_its_start(impl: str) -> None:
    s = _stream([0.0, 10.0, 10.0], [1.0, 1.0, 1.0], window=10.0)
    assert _eq(_values(impl, "window_count", s), [1.0, 1.0, 2.0])


@IMPLS
def test_window_mean_is_nan_and_sum_zero_without_values(impl: str) -> None:
    s = _stream([0.0, 1.0], [NAN, NAN])
    assert _eq(_values(impl, "window_mean", s), [NAN, NAN])
    assert _eq(_values(impl, "window_sum", s), [0.0, 0.0])
    assert _eq(_values(impl, "window_count", s), [0.0, 0.0])


@IMPLS
def test_window_overflow_drops_the_earliest_events(impl: str) -> None:
    # max_events=2: the third event evicts t=0, the fourth t=1 (exact sum would be 10).
    # A late event earlier than all buffered counts for itself and is then dropped.
    s = _stream([0.0, 1.0, 2.0, 3.0, 0.5, 3.0], [1.0, 2.0, 3.0, 4.0, 10.0, 0.0], width=2)
    assert _eq(_values(impl, "window_sum", s), [1.0, 3.0, 6.0, 9.0, 10.0, 7.0])


@IMPLS
def test_ewm_mean_weighs_half_after_one_half_life(impl: str) -> None:
    # [0 at t=0, 1 at t=10] with half-life 10: (0.5 * 0 + 1) / 1.5. The late event at t=5
    # enters with weight 1 and no decay: (0 * 0.5 + 1 + 1) / 2.5. NaN changes nothing.
    s = _stream([0.0, 10.0, 5.0, 6.0], [0.0, 1.0, 1.0, NAN], half_life=10.0)
    assert _eq(_values(impl, "ewm_mean", s), [0.0, 2 / 3, 0.8, 0.8])


@IMPLS
def test_ewm_mean_forgets_after_a_long_gap_and_averages_equal_times(impl: str) -> None:
    s = _stream([0.0, 1e6, 1e6], [5.0, 7.0, 9.0], half_life=1.0)
    assert _eq(_values(impl, "ewm_mean", s), [5.0, 7.0, 8.0])


@IMPLS
def test_ewm_var_is_the_weighted_population_variance(impl: str) -> None:
    # weights 0.5, 1 around mean 2/3: (0.5 * 4/9 + 1/9) / 1.5 = 2/9
    s = _stream([0.0, 10.0, 10.0], [0.0, 1.0, NAN], half_life=10.0)
    assert _eq(_values(impl, "ewm_var", s), [0.0, 2 / 9, 2 / 9])
    assert _eq(_values(impl, "ewm_var", _stream([0.0, 1.0], [NAN, 3.0])), [NAN, 0.0])


@IMPLS
def test_since_last_counts_every_event_and_clips_late_ones(impl: str) -> None:
    s = _stream([10.0, 11.0, 12.5, 11.0, 13.0], [NAN] * 5, slots=[0, 1, 0, 0, 0])
    assert _eq(_values(impl, "since_last", s), [NAN, NAN, 2.5, 0.0, 0.5])


@IMPLS
def test_zscore_uses_history_before_the_event(impl: str) -> None:
    # history 1, 3: mean 2, sample std sqrt(2); then 1, 3, 4 (NaN is neither scored nor learned)
    s = _stream([0.0] * 5, [1.0, 3.0, 4.0, NAN, 8.0 / 3])
    assert _eq(_values(impl, "zscore", s), [NAN, NAN, math.sqrt(2), NAN, 0.0])
    constant = _stream([0.0] * 3, [2.0, 2.0, 5.0])
    assert _eq(_values(impl, "zscore", constant), [NAN, NAN, NAN])


@IMPLS
def test_ratio_is_nan_on_zero_denominator(impl: str) -> None:
    s = _stream([0.0] * 4, [1.0, 1.0, NAN, -3.0], other=[4.0, 0.0, 2.0, -1.5])
    assert _eq(_values(impl, "ratio", s), [0.25, NAN, NAN, 2.0])


@IMPLS
def test_frequency_counts_per_key_and_skips_missing(impl: str) -> None:
    s = _stream([0.0] * 5, codes=[7, 9, 7, -1, 7], slots=[0, 0, 0, 0, 1])
    assert _eq(_values(impl, "frequency", s), [1.0, 0.5, 2 / 3, NAN, 1.0])


@IMPLS
def test_frequency_overflow_uses_space_saving(impl: str) -> None:
    # max_categories=2: code 3 replaces the least counted entry (2, count 1) -> count 2 of 4
    s = _stream([0.0] * 5, codes=[1, 1, 2, 3, 1], width=2)
    assert _eq(_values(impl, "frequency", s), [1.0, 1.0, 1 / 3, 0.5, 0.6])
