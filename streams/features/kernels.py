"""Numba feature kernels, each beside a plain-Python ``_py_`` twin with the same contract.

Every kernel processes one micro-batch of events **in array order** and updates per-key
state in place. Argument order is always::

    kernel(slots, times, <value arrays>, <state arrays>, <scalar parameters>, out)

``slots`` (``int64[n]``) is the row of the key in every state array, ``times``
(``float64[n]``) is event time in seconds since the epoch (finite), value arrays are
``float64[n]`` (``int64[n]`` codes for :func:`frequency`), state arrays are C-contiguous
with one row per key, and ``out`` (``float64[n]``) receives one value per event. The
caller (:class:`streams.features.engine.FeatureSet`) owns the state arrays and guarantees that
every slot is a valid row; kernels do no bounds checking.

Semantics shared by all kernels
-------------------------------
* **NaN values are skipped**: they never enter sums, means, variances or category counts,
  but the event still exists (``since_last`` sees it, and its output is the feature's
  current value without it, or NaN where stated).
* **Out-of-order events**: windows use every event of the key *seen so far* whose time is
  in ``(t - window, t]`` relative to the event's own time ``t``; decays and ``since_last``
  use a per-key clock that never runs backwards (late events see elapsed time 0).
* A kernel and its twin perform the same floating-point operations in the same order, so
  they agree to the last few ulps (the contract test allows 1e-9).

Kinds: :func:`window_count`, :func:`window_sum`, :func:`window_mean`, :func:`ewm_mean`,
:func:`ewm_var`, :func:`since_last`, :func:`zscore`, :func:`ratio`, :func:`frequency`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "KERNELS",
    "REFERENCES",
    "_py_ewm_mean",
    "_py_ewm_var",
    "_py_frequency",
    "_py_ratio",
    "_py_since_last",
    "_py_window_count",
    "_py_window_mean",
    "_py_window_sum",
    "_py_zscore",
    "ewm_mean",
    "ewm_var",
    "frequency",
    "ratio",
    "since_last",
    "window_count",
    "window_mean",
    "window_sum",
    "zscore",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_LN2 = math.log(2.0)
_NAN = math.nan


# --------------------------------------------------------------------------------------
# Sliding event-time windows over a per-key buffer of the latest-time events
#
# State: ring_times, ring_values (float64[keys, max_events]), ring_len (int64[keys]).
# The buffer holds the key's non-NaN events in no particular order. When it is full, the
# event with the earliest time is dropped (first such entry on ties); if the arriving event
# is earlier than every buffered one, it is the one dropped, after counting for itself.
# Results are exact while no window of the key ever needs more than ``max_events`` events.
# --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _window_step(
    s: int,
    t: float,
    x: float,
    ring_times: F64,
    ring_values: F64,
    ring_len: I64,
    window: float,
) -> tuple[int, float]:
    """Count and sum of the key's non-NaN values in ``(t - window, t]``, then buffer ``x``."""
    lo = t - window
    count = 0
    total = 0.0
    m = ring_len[s]
    oldest = 0
    for j in range(m):
        tj = ring_times[s, j]
        if tj > lo and tj <= t:
            count += 1
            total += ring_values[s, j]
        if tj < ring_times[s, oldest]:
            oldest = j
    if math.isnan(x):
        return count, total
    count += 1
    total += x
    if m < ring_times.shape[1]:
        ring_times[s, m] = t
        ring_values[s, m] = x
        ring_len[s] = m + 1
    elif t >= ring_times[s, oldest]:
        ring_times[s, oldest] = t
        ring_values[s, oldest] = x
    return count, total


@numba.njit(cache=True)
def window_count(
    slots: I64,
    times: F64,
    values: F64,
    ring_times: F64,
    ring_values: F64,
    ring_len: I64,
    window: float,
    out: F64,
) -> None:
    """Number of the key's events with a non-NaN value in ``(t - window, t]``.

    Pass an all-zero ``values`` array to count every event. See :func:`_py_window_count`.
    """
    for i in range(slots.shape[0]):
        count, _ = _window_step(
            slots[i], times[i], values[i], ring_times, ring_values, ring_len, window
        )
        out[i] = count


@numba.njit(cache=True)
def window_sum(
    slots: I64,
    times: F64,
    values: F64,
    ring_times: F64,
    ring_values: F64,
    ring_len: I64,
    window: float,
    out: F64,
) -> None:
    """Sum of the key's non-NaN values in ``(t - window, t]`` (0.0 when there are none).

    See :func:`_py_window_sum`.
    """
    for i in range(slots.shape[0]):
        _, total = _window_step(
            slots[i], times[i], values[i], ring_times, ring_values, ring_len, window
        )
        out[i] = total


@numba.njit(cache=True)
def window_mean(
    slots: I64,
    times: F64,
    values: F64,
    ring_times: F64,
    ring_values: F64,
    ring_len: I64,
    window: float,
    out: F64,
) -> None:
    """Mean of the key's non-NaN values in ``(t - window, t]`` (NaN when there are none).

    See :func:`_py_window_mean`.
    """
    for i in range(slots.shape[0]):
        count, total = _window_step(
            slots[i], times[i], values[i], ring_times, ring_values, ring_len, window
        )
        out[i] = total / count if count > 0 else _NAN


def _py_window_step(
    s: int,
    t: float,
    x: float,
    ring_times: F64,
    ring_values: F64,
    ring_len: I64,
    window: float,
) -> tuple[int, float]:
    """Plain-Python twin of ``_window_step``."""
    m = int(ring_len[s])
    buffered = [(float(ring_times[s, j]), float(ring_values[s, j])) for j in range(m)]
    count = 0
    total = 0.0
    for tj, vj in buffered:
        if t - window < tj <= t:
            count += 1
            total += vj
    if math.isnan(x):
        return count, total
    count += 1
    total += x
    if m < ring_times.shape[1]:
        ring_times[s, m] = t
        ring_values[s, m] = x
        ring_len[s] = m + 1
    else:
        earliest = min(tj for tj, _ in buffered)
        if t >= earliest:
            j = [tj for tj, _ in buffered].index(earliest)
            ring_times[s, j] = t
            ring_values[s, j] = x
    return count, total


def _py_window_count(
    slots: I64,
    times: F64,
    values: F64,
    ring_times: F64,
    ring_values: F64,
    ring_len: I64,
    window: float,
    out: F64,
) -> None:
    """Number of the key's events with a non-NaN value in ``(t - window, t]``.

    Parameters
    ----------
    slots, times, values
        Key rows, event times (s) and values of the batch, in processing order.
    ring_times, ring_values : float64[keys, max_events]
        Per-key buffer of the latest-time non-NaN events (updated in place).
    ring_len : int64[keys]
        Number of buffered events per key (updated in place).
    window
        Window length in seconds.
    out
        Receives one count per event.

    Examples
    --------
    >>> import numpy as np
    >>> slots = np.array([0, 1, 0, 0])
    >>> times = np.array([0.0, 1.0, 5.0, 12.0])
    >>> values = np.array([1.0, 1.0, np.nan, 3.0])
    >>> ring_t, ring_v = np.zeros((2, 4)), np.zeros((2, 4))
    >>> ring_len = np.zeros(2, dtype=np.int64)
    >>> out = np.empty(4)
    >>> _py_window_count(slots, times, values, ring_t, ring_v, ring_len, 10.0, out)
    >>> out
    array([1., 1., 1., 1.])
    """
    for i in range(len(slots)):
        s, t, x = int(slots[i]), float(times[i]), float(values[i])
        count, _ = _py_window_step(s, t, x, ring_times, ring_values, ring_len, window)
        out[i] = count


def _py_window_sum(
    slots: I64,
    times: F64,
    values: F64,
    ring_times: F64,
    ring_values: F64,
    ring_len: I64,
    window: float,
    out: F64,
) -> None:
    """Sum of the key's non-NaN values in ``(t - window, t]`` (0.0 when there are none).

    Parameters are those of :func:`_py_window_count`.

    Examples
    --------
    >>> import numpy as np
    >>> slots = np.zeros(3, dtype=np.int64)
    >>> times = np.array([0.0, 5.0, 12.0])
    >>> values = np.array([1.0, 2.0, 3.0])
    >>> ring_t, ring_v = np.zeros((1, 4)), np.zeros((1, 4))
    >>> ring_len = np.zeros(1, dtype=np.int64)
    >>> out = np.empty(3)
    >>> _py_window_sum(slots, times, values, ring_t, ring_v, ring_len, 10.0, out)
    >>> out
    array([1., 3., 5.])
    """
    for i in range(len(slots)):
        s, t, x = int(slots[i]), float(times[i]), float(values[i])
        _, total = _py_window_step(s, t, x, ring_times, ring_values, ring_len, window)
        out[i] = total


def _py_window_mean(
    slots: I64,
    times: F64,
    values: F64,
    ring_times: F64,
    ring_values: F64,
    ring_len: I64,
    window: float,
    out: F64,
) -> None:
    """Mean of the key's non-NaN values in ``(t - window, t]`` (NaN when there are none).

    Parameters are those of :func:`_py_window_count`.

    Examples
    --------
    A 10 s window: at t=12 the event at t=0 has left it, and the late event at t=1
    (arriving last) sees the events at 0 and 1 only.

    >>> import numpy as np
    >>> slots = np.zeros(4, dtype=np.int64)
    >>> times = np.array([0.0, 5.0, 12.0, 1.0])
    >>> values = np.array([1.0, 2.0, 3.0, 4.0])
    >>> ring_t, ring_v = np.zeros((1, 8)), np.zeros((1, 8))
    >>> ring_len = np.zeros(1, dtype=np.int64)
    >>> out = np.empty(4)
    >>> _py_window_mean(slots, times, values, ring_t, ring_v, ring_len, 10.0, out)
    >>> out
    array([1. , 1.5, 2.5, 2.5])
    """
    for i in range(len(slots)):
        s, t, x = int(slots[i]), float(times[i]), float(values[i])
        count, total = _py_window_step(s, t, x, ring_times, ring_values, ring_len, window)
        out[i] = total / count if count > 0 else _NAN


# --------------------------------------------------------------------------------------
# Exponentially weighted mean and variance in event time
#
# Every non-NaN value enters with weight 1; between a key's events all weights decay by
# 0.5 ** (elapsed / half_life), so a value one half-life old weighs half as much as a new
# one (pandas ``ewm(halflife=..., times=..., adjust=True)`` for in-order streams). Elapsed
# time is measured on a per-key clock (latest time seen); late events see elapsed 0 and do
# not move the clock back. The variance is the weighted population variance (West's
# update), 0.0 after one value. Before the key's first non-NaN value both are NaN.
# --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def ewm_mean(
    slots: I64,
    times: F64,
    values: F64,
    weight: F64,
    mean: F64,
    clock: F64,
    half_life: float,
    out: F64,
) -> None:
    """Exponentially weighted mean with a half-life in seconds of event time.

    State per key: total ``weight`` (0.0 before any value), ``mean``, ``clock``.
    See :func:`_py_ewm_mean`.
    """
    rate = _LN2 / half_life
    for i in range(slots.shape[0]):
        s = slots[i]
        x = values[i]
        if not math.isnan(x):
            t = times[i]
            w = weight[s]
            if w > 0.0:
                elapsed = t - clock[s]
                if elapsed > 0.0:
                    w *= math.exp(-rate * elapsed)
                    clock[s] = t
            else:
                clock[s] = t
            w += 1.0
            mean[s] += (x - mean[s]) / w
            weight[s] = w
        out[i] = mean[s] if weight[s] > 0.0 else _NAN


@numba.njit(cache=True)
def ewm_var(
    slots: I64,
    times: F64,
    values: F64,
    weight: F64,
    mean: F64,
    m2: F64,
    clock: F64,
    half_life: float,
    out: F64,
) -> None:
    """Exponentially weighted population variance with a half-life in event time.

    State per key: ``weight``, ``mean``, weighted sum of squared deviations ``m2``,
    ``clock``. See :func:`_py_ewm_var`.
    """
    rate = _LN2 / half_life
    for i in range(slots.shape[0]):
        s = slots[i]
        x = values[i]
        if not math.isnan(x):
            t = times[i]
            w = weight[s]
            if w > 0.0:
                elapsed = t - clock[s]
                if elapsed > 0.0:
                    decay = math.exp(-rate * elapsed)
                    w *= decay
                    m2[s] *= decay
                    clock[s] = t
            else:
                clock[s] = t
            w += 1.0
            delta = x - mean[s]
            mean[s] += delta / w
            m2[s] += delta * (x - mean[s])
            weight[s] = w
        out[i] = m2[s] / weight[s] if weight[s] > 0.0 else _NAN


def _py_ewm_mean(
    slots: I64,
    times: F64,
    values: F64,
    weight: F64,
    mean: F64,
    clock: F64,
    half_life: float,
    out: F64,
) -> None:
    """Exponentially weighted mean with a half-life in seconds of event time.

    Parameters
    ----------
    slots, times, values
        Key rows, event times (s) and values of the batch, in processing order.
    weight, mean, clock : float64[keys]
        Per-key total weight (0.0 = no value yet), weighted mean, and latest event time.
    half_life
        Seconds after which a value weighs half as much as a new one.
    out
        Receives the mean after each event (NaN before the key's first value).

    Examples
    --------
    After one half-life the first value weighs 0.5 against the new value's 1:
    (0.5 * 0 + 1 * 1) / 1.5.

    >>> import numpy as np
    >>> slots = np.zeros(2, dtype=np.int64)
    >>> times, values = np.array([0.0, 60.0]), np.array([0.0, 1.0])
    >>> weight, mean, clock = np.zeros(1), np.zeros(1), np.full(1, np.nan)
    >>> out = np.empty(2)
    >>> _py_ewm_mean(slots, times, values, weight, mean, clock, 60.0, out)
    >>> out.round(6).tolist(), weight.round(6).tolist()
    ([0.0, 0.666667], [1.5])
    """
    rate = _LN2 / half_life
    for i in range(len(slots)):
        s = int(slots[i])
        x = float(values[i])
        if not math.isnan(x):
            t = float(times[i])
            w = float(weight[s])
            if w > 0.0:
                elapsed = max(t - float(clock[s]), 0.0)
                w *= math.exp(-rate * elapsed) if elapsed > 0.0 else 1.0
                clock[s] = max(float(clock[s]), t)
            else:
                clock[s] = t
            w += 1.0
            mean[s] = float(mean[s]) + (x - float(mean[s])) / w
            weight[s] = w
        out[i] = float(mean[s]) if weight[s] > 0.0 else _NAN


def _py_ewm_var(
    slots: I64,
    times: F64,
    values: F64,
    weight: F64,
    mean: F64,
    m2: F64,
    clock: F64,
    half_life: float,
    out: F64,
) -> None:
    """Exponentially weighted population variance with a half-life in event time.

    Parameters are those of :func:`_py_ewm_mean`, plus ``m2`` (float64[keys]), the
    decayed weighted sum of squared deviations. The output is ``m2 / weight``.

    Examples
    --------
    Two values one half-life apart weigh 0.5 and 1: mean 2/3, variance
    (0.5 * (2/3)**2 + 1 * (1/3)**2) / 1.5 = 2/9.

    >>> import numpy as np
    >>> slots = np.zeros(2, dtype=np.int64)
    >>> times, values = np.array([0.0, 10.0]), np.array([0.0, 1.0])
    >>> weight, mean, m2 = np.zeros(1), np.zeros(1), np.zeros(1)
    >>> clock = np.full(1, np.nan)
    >>> out = np.empty(2)
    >>> _py_ewm_var(slots, times, values, weight, mean, m2, clock, 10.0, out)
    >>> out.round(6).tolist()
    [0.0, 0.222222]
    """
    rate = _LN2 / half_life
    for i in range(len(slots)):
        s = int(slots[i])
        x = float(values[i])
        if not math.isnan(x):
            t = float(times[i])
            w = float(weight[s])
            if w > 0.0:
                elapsed = max(t - float(clock[s]), 0.0)
                if elapsed > 0.0:
                    decay = math.exp(-rate * elapsed)
                    w *= decay
                    m2[s] = float(m2[s]) * decay
                clock[s] = max(float(clock[s]), t)
            else:
                clock[s] = t
            w += 1.0
            delta = x - float(mean[s])
            mean[s] = float(mean[s]) + delta / w
            m2[s] = float(m2[s]) + delta * (x - float(mean[s]))
            weight[s] = w
        out[i] = float(m2[s]) / float(weight[s]) if weight[s] > 0.0 else _NAN


# --------------------------------------------------------------------------------------
# Seconds since the key's previous event
# --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def since_last(slots: I64, times: F64, clock: F64, out: F64) -> None:
    """Seconds since the key's latest earlier event; NaN for its first, 0.0 when late.

    Reads no value: every event counts. State: ``clock`` (NaN = no event yet).
    See :func:`_py_since_last`.
    """
    for i in range(slots.shape[0]):
        s = slots[i]
        t = times[i]
        last = clock[s]
        if math.isnan(last):
            out[i] = _NAN
            clock[s] = t
        elif t > last:
            out[i] = t - last
            clock[s] = t
        else:
            out[i] = 0.0


def _py_since_last(slots: I64, times: F64, clock: F64, out: F64) -> None:
    """Seconds since the key's latest earlier event; NaN for its first, 0.0 when late.

    Parameters
    ----------
    slots, times
        Key rows and event times (s) of the batch, in processing order.
    clock : float64[keys]
        Latest event time seen per key, NaN before its first event (updated in place).
    out
        Receives one value per event.

    Examples
    --------
    >>> import numpy as np
    >>> slots = np.array([0, 1, 0, 0])
    >>> times = np.array([10.0, 11.0, 12.5, 11.0])
    >>> clock = np.full(2, np.nan)
    >>> out = np.empty(4)
    >>> _py_since_last(slots, times, clock, out)
    >>> out
    array([nan, nan, 2.5, 0. ])
    """
    for i in range(len(slots)):
        s = int(slots[i])
        t = float(times[i])
        last = float(clock[s])
        if math.isnan(last):
            out[i] = _NAN
            clock[s] = t
        else:
            out[i] = max(t - last, 0.0)
            clock[s] = max(last, t)


# --------------------------------------------------------------------------------------
# z-score against the key's history before this event (Welford)
# --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def zscore(
    slots: I64,
    times: F64,
    values: F64,
    count: I64,
    mean: F64,
    m2: F64,
    out: F64,
) -> None:
    """``(x - mean) / std`` of the key's earlier non-NaN values, then learn ``x``.

    ``std`` is the sample standard deviation (n - 1). NaN while fewer than two earlier
    values, when ``std`` is 0, or when ``x`` is NaN. Ignores times (arrival order).
    See :func:`_py_zscore`.
    """
    for i in range(slots.shape[0]):
        s = slots[i]
        x = values[i]
        if math.isnan(x):
            out[i] = _NAN
            continue
        n = count[s]
        if n >= 2:
            var = m2[s] / (n - 1)
            out[i] = (x - mean[s]) / math.sqrt(var) if var > 0.0 else _NAN
        else:
            out[i] = _NAN
        n += 1
        delta = x - mean[s]
        mean[s] += delta / n
        m2[s] += delta * (x - mean[s])
        count[s] = n


def _py_zscore(
    slots: I64,
    times: F64,
    values: F64,
    count: I64,
    mean: F64,
    m2: F64,
    out: F64,
) -> None:
    """``(x - mean) / std`` of the key's earlier non-NaN values, then learn ``x``.

    Parameters
    ----------
    slots, times, values
        Key rows, event times (unused) and values of the batch, in processing order.
    count : int64[keys]
        Number of non-NaN values learned per key.
    mean, m2 : float64[keys]
        Welford running mean and sum of squared deviations per key.
    out
        Receives one z-score per event.

    Examples
    --------
    History 1, 3 has mean 2 and sample std sqrt(2); 4 is sqrt(2) std above it.

    >>> import numpy as np
    >>> slots = np.zeros(3, dtype=np.int64)
    >>> values = np.array([1.0, 3.0, 4.0])
    >>> count = np.zeros(1, dtype=np.int64)
    >>> mean, m2 = np.zeros(1), np.zeros(1)
    >>> out = np.empty(3)
    >>> _py_zscore(slots, np.zeros(3), values, count, mean, m2, out)
    >>> out.round(6).tolist()
    [nan, nan, 1.414214]
    """
    for i in range(len(slots)):
        s = int(slots[i])
        x = float(values[i])
        if math.isnan(x):
            out[i] = _NAN
            continue
        n = int(count[s])
        mu = float(mean[s])
        if n >= 2:
            var = float(m2[s]) / (n - 1)
            out[i] = (x - mu) / math.sqrt(var) if var > 0.0 else _NAN
        else:
            out[i] = _NAN
        n += 1
        delta = x - mu
        mu += delta / n
        mean[s] = mu
        m2[s] = float(m2[s]) + delta * (x - mu)
        count[s] = n


# --------------------------------------------------------------------------------------
# Ratio of two fields (stateless)
# --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def ratio(slots: I64, times: F64, numerator: F64, denominator: F64, out: F64) -> None:
    """``numerator / denominator``; NaN when the denominator is 0 or either is NaN.

    See :func:`_py_ratio`.
    """
    for i in range(slots.shape[0]):
        b = denominator[i]
        out[i] = numerator[i] / b if b != 0.0 else _NAN


def _py_ratio(slots: I64, times: F64, numerator: F64, denominator: F64, out: F64) -> None:
    """``numerator / denominator``; NaN when the denominator is 0 or either is NaN.

    Parameters
    ----------
    slots, times
        Unused (a ratio has no state); kept so every kernel has the same shape.
    numerator, denominator
        The two fields' values.
    out
        Receives one ratio per event.

    Examples
    --------
    >>> import numpy as np
    >>> out = np.empty(3)
    >>> a, b = np.array([1.0, 1.0, np.nan]), np.array([4.0, 0.0, 2.0])
    >>> _py_ratio(np.zeros(3, dtype=np.int64), np.zeros(3), a, b, out)
    >>> out
    array([0.25,  nan,  nan])
    """
    for i in range(len(slots)):
        a = float(numerator[i])
        b = float(denominator[i])
        out[i] = a / b if b != 0.0 else _NAN


# --------------------------------------------------------------------------------------
# Frequency of a categorical value per key
#
# State: table_codes, table_counts (int64[keys, max_categories]), table_len, totals
# (int64[keys]). Exact while a key has at most ``max_categories`` distinct values; beyond
# that the Space-Saving rule applies: a new value replaces the least counted entry (first
# on ties) and inherits its count + 1, so frequencies of rare values are over-estimated
# and the counts of one key still sum to its total.
# --------------------------------------------------------------------------------------


@numba.njit(cache=True)
def frequency(
    slots: I64,
    times: F64,
    codes: I64,
    table_codes: I64,
    table_counts: I64,
    table_len: I64,
    totals: I64,
    out: F64,
) -> None:
    """Fraction of the key's events so far (this one included) with this event's value.

    ``codes`` are non-negative category codes, -1 for a missing value (output NaN, not
    counted). See :func:`_py_frequency`.
    """
    for i in range(slots.shape[0]):
        c = codes[i]
        if c < 0:
            out[i] = _NAN
            continue
        s = slots[i]
        m = table_len[s]
        found = -1
        least = 0
        for j in range(m):
            if table_codes[s, j] == c:
                found = j
                break
            if table_counts[s, j] < table_counts[s, least]:
                least = j
        if found < 0:
            if m < table_codes.shape[1]:
                found = m
                table_codes[s, m] = c
                table_counts[s, m] = 0
                table_len[s] = m + 1
            else:
                found = least
                table_codes[s, least] = c
        table_counts[s, found] += 1
        totals[s] += 1
        out[i] = table_counts[s, found] / totals[s]


def _py_frequency(
    slots: I64,
    times: F64,
    codes: I64,
    table_codes: I64,
    table_counts: I64,
    table_len: I64,
    totals: I64,
    out: F64,
) -> None:
    """Fraction of the key's events so far (this one included) with this event's value.

    Parameters
    ----------
    slots, times
        Key rows and event times (unused) of the batch, in processing order.
    codes : int64[n]
        Category code per event, -1 for a missing value.
    table_codes, table_counts : int64[keys, max_categories]
        Per-key table of category codes and their counts.
    table_len, totals : int64[keys]
        Entries in use and events counted per key.
    out
        Receives one frequency per event.

    Examples
    --------
    >>> import numpy as np
    >>> slots = np.zeros(4, dtype=np.int64)
    >>> codes = np.array([7, 9, 7, -1])
    >>> table_codes = np.zeros((1, 4), dtype=np.int64)
    >>> table_counts = np.zeros((1, 4), dtype=np.int64)
    >>> table_len, totals = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    >>> out = np.empty(4)
    >>> _py_frequency(slots, np.zeros(4), codes, table_codes, table_counts,
    ...               table_len, totals, out)
    >>> out.round(6).tolist()
    [1.0, 0.5, 0.666667, nan]
    """
    for i in range(len(slots)):
        c = int(codes[i])
        if c < 0:
            out[i] = _NAN
            continue
        s = int(slots[i])
        m = int(table_len[s])
        entries = [int(table_codes[s, j]) for j in range(m)]
        if c in entries:
            j = entries.index(c)
        elif m < table_codes.shape[1]:
            j = m
            table_codes[s, j] = c
            table_counts[s, j] = 0
            table_len[s] = m + 1
        else:
            counts = [int(table_counts[s, k]) for k in range(m)]
            j = counts.index(min(counts))
            table_codes[s, j] = c
        table_counts[s, j] += 1
        totals[s] += 1
        out[i] = int(table_counts[s, j]) / int(totals[s])


#: Kind name -> Numba kernel.
KERNELS: dict[str, Callable[..., None]] = {
    "window_count": window_count,
    "window_sum": window_sum,
    "window_mean": window_mean,
    "ewm_mean": ewm_mean,
    "ewm_var": ewm_var,
    "since_last": since_last,
    "zscore": zscore,
    "ratio": ratio,
    "frequency": frequency,
}

#: Kind name -> plain-Python twin, same arguments, same results.
REFERENCES: dict[str, Callable[..., None]] = {
    "window_count": _py_window_count,
    "window_sum": _py_window_sum,
    "window_mean": _py_window_mean,
    "ewm_mean": _py_ewm_mean,
    "ewm_var": _py_ewm_var,
    "since_last": _py_since_last,
    "zscore": _py_zscore,
    "ratio": _py_ratio,
    "frequency": _py_frequency,
}
