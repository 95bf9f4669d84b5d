"""Online features: a pipeline's ``[features]`` table, compiled to Numba kernels over per-key state.

A :class:`FeatureSet` is built once from the spec; a :class:`FeatureState` holds what it
has learned per entity key (and is what a checkpoint saves). Each micro-batch calls every
kernel once::

    fs = FeatureSet.from_spec(spec["features"])
    state = fs.new_state()
    derived = fs.compute(state, keys, times, columns)   # {output name: float64[n]}

The ``[features]`` table
------------------------
``name`` (required) and ``derived``, a list of tables with ``name``, ``kind`` and the
kind's parameters:

==============  ===========================  ==============================================
kind            reads                        parameters
==============  ===========================  ==============================================
window_count    ``field`` (optional)         ``window`` (s), ``max_events`` (64)
window_sum      ``field``                    ``window`` (s), ``max_events`` (64)
window_mean     ``field``                    ``window`` (s), ``max_events`` (64)
ewm_mean        ``field``                    ``half_life`` (s)
ewm_var         ``field``                    ``half_life`` (s)
since_last      nothing                      none
zscore          ``field``                    none
ratio           ``fields = [num, denom]``    none
frequency       ``field`` (categorical)      ``max_categories`` (32)
==============  ===========================  ==============================================

Late events: ``allowed_lateness`` (seconds, optional) and ``late_policy`` (``"process"``,
the default, or ``"dead_letter"``). An event is *late* if its time is more than
``allowed_lateness`` before the latest event time its key has seen. With ``"process"`` it
is computed like any other (the kernels' out-of-order rules below apply); with
``"dead_letter"`` :meth:`FeatureSet.late` flags it, it touches no state and the features
stage sends it to the dead-letter topic with reason ``late``. Both keys enter the hash.

Bounded state: ``key_ttl`` (seconds of event time) and ``max_keys`` (keys per state), both
optional; unset, a state keeps every key it has seen. Per event, in order:

* ``key_ttl``: a key is *stale* once its latest event time is more than ``key_ttl`` before
  the latest event time the state has seen (its watermark); a stale key is evicted. An
  event already that far behind is computed (its key fresh) and its key evicted after it.
* ``max_keys``: a new key that would make one more than ``max_keys`` evicts the key with
  the earliest latest event time (of those, the one that entered the state first). A
  stale key goes first, and counts as a ``ttl`` eviction.
* An evicted key's state is dropped; if the key comes back, it starts fresh, as a key
  never seen (``allowed_lateness`` included: an evicted key has no latest time).

Only event times decide, so the same events in the same order give the same state and
outputs however they are cut into batches. Rows of evicted keys are reclaimed by
compaction: the arrays stay proportional to the keys alive, not to the keys ever seen.
Evictions are counted by cause (:data:`EVICTION_CAUSES`). Both keys enter the hash.

Semantics (event time, per key; details in :mod:`streams.features.kernels`):

* Windows cover the key's events seen so far with time in ``(t - window, t]``, this event
  included. At most ``max_events`` events per key are kept (those with the latest times);
  results are exact while no window needs more. ``window_count`` without ``field`` counts
  events; with ``field`` it counts events whose value is not missing.
* ``ewm_mean`` / ``ewm_var``: every value weighs 1 when it arrives and half as much per
  ``half_life`` seconds of event time since; late events count as arriving now.
* ``since_last``: seconds since the key's latest earlier event (NaN first, 0.0 if late).
* ``zscore``: against the key's values before this event (sample std; NaN until two).
* ``ratio``: NaN on a zero denominator. ``frequency``: share of the key's events so far
  with this value; exact up to ``max_categories`` distinct values per key, Space-Saving
  approximation beyond.
* Missing values (``None``/NaN) are skipped by every aggregate (output NaN where there is
  nothing to report); the event still counts for ``since_last``.
* Keys are strings; ``""`` (or ``None``) is the single global key. Event times are finite
  float seconds since the epoch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from streams.errors import FeatureError, SpecError
from streams.features import kernels
from streams.features.columns import (
    BOOL,
    F64,
    I64,
    PLAIN_NUMBERS,
    check_finite,
    code_column,
    float_column,
    key_texts,
)
from streams.features.spec import (
    DEFAULT_MAX_CATEGORIES,
    DEFAULT_MAX_EVENTS,
    KINDS,
    LATE_POLICIES,
    Derived,
    parse_features,
)
from streams.features.state import (
    DEFAULT_CAPACITY,
    EVICTION_CAUSES,
    LAST_SEEN,
    Admission,
    ArraySpec,
    FeatureState,
    StateBudget,
)

__all__ = [
    "DEFAULT_MAX_CATEGORIES",
    "DEFAULT_MAX_EVENTS",
    "ENGINE_VERSION",
    "EVICTION_CAUSES",
    "KINDS",
    "LATE_POLICIES",
    "FeatureError",
    "FeatureSet",
    "FeatureState",
    "StateBudget",
    "warm_up",
]

#: Part of every feature-set hash: bump when a kernel's results change for the same spec,
#: so lineage (``name@hash``) and checkpoints tell the two apart.
ENGINE_VERSION = 1
#: Latest event time per key, for the lateness test of a set without ``key_ttl`` and
#: ``max_keys`` (a bounded set uses its states' LAST_SEEN).
_LATEST = "_late/latest_time"


@dataclass(frozen=True)
class _Step:
    """What one derived feature's kernel gets in :meth:`FeatureSet._run`, besides the batch."""

    name: str
    kind: str
    reads: Literal["codes", "zeros", "numeric"]
    fields: tuple[str, ...]
    arrays: tuple[str, ...]  # state array names
    scalars: tuple[float | int, ...]  # parameters in seconds

    @staticmethod
    def of(d: Derived) -> _Step:
        reads: Literal["codes", "zeros", "numeric"] = "numeric"
        if d.kind.categorical:
            reads = "codes"
        elif d.kind.reads == "optional field" and not d.fields:
            reads = "zeros"
        return _Step(
            d.name,
            d.kind.name,
            reads,
            d.fields,
            tuple(f"{d.name}/{a.name}" for a in d.kind.state),
            tuple(d.params[p.name] for p in d.kind.params if p.unit == "seconds"),
        )


class FeatureSet:
    """Derived features of a pipeline, computed per micro-batch by Numba kernels.

    Build it with :meth:`from_spec`. ``label`` (``name@hash``) identifies the feature set in
    lineage headers and in saved states: the hash covers the normalized spec (defaults
    filled in, ``key_ttl`` and ``max_keys`` included when set) and :data:`ENGINE_VERSION`.
    :attr:`evictions` counts the keys its states evicted, by cause, since it was built.

    Examples
    --------
    >>> import numpy as np
    >>> fs = FeatureSet.from_spec({
    ...     "name": "clicks",
    ...     "derived": [
    ...         {"name": "amount_10s", "kind": "window_sum", "field": "amount", "window": 10},
    ...         {"name": "gap", "kind": "since_last"},
    ...     ],
    ... })
    >>> fs.outputs, fs.inputs
    (['amount_10s', 'gap'], ['amount'])
    >>> state = fs.new_state()
    >>> out = fs.compute(state, ["a", "b", "a"], np.array([0.0, 1.0, 4.0]),
    ...                  {"amount": [1.0, 5.0, 2.0]})
    >>> out["amount_10s"].tolist(), out["gap"].tolist()
    ([1.0, 5.0, 3.0], [nan, nan, 4.0])
    >>> state.n_keys
    2
    """

    def __init__(
        self,
        name: str,
        derived: Sequence[Derived],
        *,
        allowed_lateness: float | None = None,
        late_policy: str = "process",
        key_ttl: float | None = None,
        max_keys: int | None = None,
    ) -> None:
        self.name = name
        self._derived = tuple(derived)
        #: Seconds an event may be older than its key's latest event time (None: any).
        self.allowed_lateness = allowed_lateness
        #: ``"process"`` or ``"dead_letter"``: what happens to a later event.
        self.late_policy = late_policy
        #: Seconds of event time a key may go without events before it is evicted (None:
        #: keys never expire).
        self.key_ttl = key_ttl
        #: Most keys a state holds (None: no cap).
        self.max_keys = max_keys
        #: Keys evicted from this set's states, by cause (:data:`EVICTION_CAUSES`), totals
        #: since the set was built: what a worker exports.
        self.evictions: dict[str, int] = dict.fromkeys(EVICTION_CAUSES, 0)
        self.outputs: list[str] = [d.name for d in self._derived]
        self.inputs: list[str] = list(dict.fromkeys(f for d in self._derived for f in d.fields))
        self._numeric = list(
            dict.fromkeys(f for d in self._derived if not d.kind.categorical for f in d.fields)
        )
        self._categorical = list(
            dict.fromkeys(f for d in self._derived if d.kind.categorical for f in d.fields)
        )
        canonical = json.dumps(
            self.to_spec() | {"engine": ENGINE_VERSION},
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
        )
        self.hash = hashlib.sha256(canonical.encode()).hexdigest()[:12]
        self.label = f"{self.name}@{self.hash}"
        self._layout: dict[str, ArraySpec] = {
            f"{d.name}/{a.name}": ArraySpec(
                a.dtype, int(d.params[a.width]) if a.width else 0, float(a.fill)
            )
            for d in self._derived
            for a in d.kind.state
        }
        if self.bounded:
            # Latest event time per key, for eviction and the lateness test (checkpointed).
            self._layout[LAST_SEEN] = ArraySpec("float64", 0, math.nan)
        elif self.drops_late:
            # Latest event time per key, for the lateness test (part of every checkpoint).
            self._layout[_LATEST] = ArraySpec("float64", 0, math.nan)
        self._shapes = {name: spec.shape() for name, spec in self._layout.items()}
        #: Per derived feature, what :meth:`_run` hands its kernel, worked out once: the
        #: per-batch cost counts at low load, where a batch is one event.
        self._plan = tuple(_Step.of(d) for d in self._derived)

    @classmethod
    def from_spec(cls, section: Mapping[str, Any]) -> FeatureSet:
        """Validate a ``[features]`` table (see the module docstring) and build the set.

        Raises
        ------
        SpecError
            Naming the bad entry, and the valid kinds or that kind's valid parameters.
        """
        parsed = parse_features(section)
        fs = cls(
            parsed.name,
            parsed.derived,
            allowed_lateness=parsed.allowed_lateness,
            late_policy=parsed.late_policy,
            key_ttl=parsed.key_ttl,
            max_keys=parsed.max_keys,
        )
        clash = sorted(set(fs.outputs) & set(fs.inputs))
        if clash:
            raise SpecError(
                f"[features]: derived name {', '.join(clash)} is also an input field; "
                "rename the derived feature so it does not hide the raw value."
            )
        return fs

    def to_spec(self) -> dict[str, Any]:
        """The normalized ``[features]`` table (defaults filled in) that the hash covers."""
        spec: dict[str, Any] = {
            "name": self.name,
            "derived": [d.canonical() for d in self._derived],
        }
        if self.allowed_lateness is not None:
            spec["allowed_lateness"] = self.allowed_lateness
            spec["late_policy"] = self.late_policy
        if self.key_ttl is not None:
            spec["key_ttl"] = self.key_ttl
        if self.max_keys is not None:
            spec["max_keys"] = self.max_keys
        return spec

    @property
    def bounded(self) -> bool:
        """True if states evict keys (``key_ttl`` or ``max_keys`` set)."""
        return self.key_ttl is not None or self.max_keys is not None

    @property
    def drops_late(self) -> bool:
        """True if late events go to the dead-letter topic instead of being computed."""
        return self.allowed_lateness is not None and self.late_policy == "dead_letter"

    def late(self, state: FeatureState, keys: Sequence[str], times: npt.ArrayLike) -> BOOL:
        """Which events of a batch are late, updating the keys' latest event times.

        An event is late if its time is more than :attr:`allowed_lateness` seconds before
        the latest time of its key's earlier events (late events excluded). Without
        ``late_policy = "dead_letter"`` nothing is late and ``state`` is not touched; else
        call this before :meth:`compute` and compute only the events that are not late.

        With ``key_ttl`` or ``max_keys`` the lateness test needs the batch's evictions, so
        this admits the batch's keys (:meth:`FeatureState.admit`) and the :meth:`compute`
        call that follows must get exactly the events not flagged, in order (FeatureError
        if not). A key evicted before its event has no latest time: its event is not late.

        Examples
        --------
        >>> fs = FeatureSet.from_spec({"name": "l", "allowed_lateness": 5,
        ...                            "late_policy": "dead_letter"})
        >>> state = fs.new_state()
        >>> fs.late(state, ["a", "a", "b", "a", "a"], [10.0, 4.0, 0.0, 5.0, 20.0]).tolist()
        [False, True, False, False, False]
        """
        n = len(keys)
        flags = np.zeros(n, dtype=np.bool_)
        if not self.drops_late:
            return flags
        self._check(state)
        t = float_column("event times", times, n)
        if self.bounded:
            texts = key_texts(keys)
            check_finite(t)
            slots, flags = self._admit(state, texts, t, self.allowed_lateness)
            keep = ~flags
            state.admitted = Admission(
                [k for k, ok in zip(texts, keep.tolist(), strict=True) if ok],
                t[keep],
                slots[keep],
            )
            return flags
        slots = state.slots_for(keys)
        latest = state.arrays[_LATEST]
        limit = float(self.allowed_lateness or 0.0)
        for i in range(n):
            seen = latest[slots[i]]
            if seen == seen and t[i] < seen - limit:  # seen == seen: not NaN (seen before)
                flags[i] = True
            elif not seen >= t[i]:
                latest[slots[i]] = t[i]
        return flags

    def new_state(self, capacity: int = DEFAULT_CAPACITY) -> FeatureState:
        """Empty state with room for ``capacity`` keys before it first grows."""
        return FeatureState(self.label, self._layout, capacity)

    def check_inputs(self, values: Mapping[str, Any]) -> None:
        """Refuse one event whose values :meth:`compute` would refuse, before any state
        changes: a caller drops it (a dead letter) and computes the others.

        Raises
        ------
        FeatureError
            If a field a numeric kind reads holds something that is not a number, a
            boolean or None.
        """
        for name in self._numeric:
            value = values.get(name)
            if type(value) not in PLAIN_NUMBERS:
                float_column(f"field {name!r}", [value], 1)

    def compute(
        self,
        state: FeatureState,
        keys: Sequence[str],
        times: npt.ArrayLike,
        columns: Mapping[str, Sequence[Any]],
    ) -> dict[str, F64]:
        """Derived features of one batch, in event order, updating ``state`` in place.

        Parameters
        ----------
        state
            From :meth:`new_state` or :meth:`FeatureState.from_bytes` of this feature set.
        keys
            Entity key per event (``""`` is the global key).
        times
            Event time per event, finite float seconds since the epoch.
        columns
            Values per event for every name in :attr:`inputs`; numbers, booleans or None
            (missing) for numeric kinds, any value for ``frequency`` (compared as ``str``).

        Returns
        -------
        dict
            One float64 array per name in :attr:`outputs`, in spec order.

        Raises
        ------
        FeatureError
            If the state belongs to another feature set, a column is missing or not
            numeric, lengths differ, or a time is not finite. Nothing is learned then.

        Notes
        -----
        With ``key_ttl`` or ``max_keys``, keys are evicted as the module docstring says,
        event by event, and counted in :attr:`evictions` (and the state's own count).

        Examples
        --------
        >>> fs = FeatureSet.from_spec({"name": "b", "key_ttl": 10, "derived": [
        ...     {"name": "n", "kind": "window_count", "window": 100.0}]})
        >>> state = fs.new_state()
        >>> fs.compute(state, ["a", "b", "a"], [0.0, 5.0, 12.0], {})["n"].tolist()
        [1.0, 1.0, 1.0]
        >>> state.keys, fs.evictions
        (['b', 'a'], {'ttl': 1, 'cap': 0})
        """
        return self._run(state, keys, times, columns, kernels.KERNELS)

    def compute_reference(
        self,
        state: FeatureState,
        keys: Sequence[str],
        times: npt.ArrayLike,
        columns: Mapping[str, Sequence[Any]],
    ) -> dict[str, F64]:
        """:meth:`compute` with the plain-Python ``_py_`` twins (tests and benchmark only).

        Examples
        --------
        >>> fs = FeatureSet.from_spec({"name": "p", "derived": [
        ...     {"name": "u", "kind": "ewm_mean", "field": "x", "half_life": 60.0}]})
        >>> out = fs.compute_reference(fs.new_state(), ["", ""], [0.0, 60.0], {"x": [0, 1]})
        >>> out["u"].round(6).tolist()
        [0.0, 0.666667]
        """
        return self._run(state, keys, times, columns, kernels.REFERENCES)

    def _run(
        self,
        state: FeatureState,
        keys: Sequence[str],
        times: npt.ArrayLike,
        columns: Mapping[str, Sequence[Any]],
        impl: Mapping[str, Callable[..., None]],
    ) -> dict[str, F64]:
        self._check(state)
        admitted, state.admitted = state.admitted, None
        n = len(keys)
        t = float_column("event times", times, n)
        check_finite(t)
        missing = [f for f in self.inputs if f not in columns]
        if missing:
            raise FeatureError(
                f"batch lacks column {', '.join(missing)}; {self.label} reads "
                f"{', '.join(self.inputs)}."
            )
        numeric = {f: float_column(f"field {f!r}", columns[f], n) for f in self._numeric}
        codes = {f: code_column(f"field {f!r}", columns[f], n) for f in self._categorical}
        if not self.bounded:
            slots = state.slots_for(keys)
        elif admitted is None:
            slots, _ = self._admit(state, key_texts(keys), t, None)
        elif key_texts(keys) == admitted.keys and np.array_equal(t, admitted.times):
            slots = admitted.slots
        else:
            raise FeatureError(
                f"{self.label}: compute() got other events than the ones late() let through; "
                "with key_ttl or max_keys, late() admits the batch's keys, so compute() must "
                "follow it with exactly the events it did not flag, in order."
            )

        results: dict[str, F64] = {}
        arrays = state.arrays  # looked up per batch: growing the state replaces them
        for step in self._plan:
            values: list[np.ndarray]
            if step.reads == "codes":
                values = [codes[f] for f in step.fields]
            elif step.reads == "zeros":
                values = [np.zeros(n)]  # never NaN: every event counts
            else:
                values = [numeric[f] for f in step.fields]
            out = np.empty(n, dtype=np.float64)
            impl[step.kind](
                slots, t, *values, *[arrays[a] for a in step.arrays], *step.scalars, out
            )
            results[step.name] = out
        if self.bounded:
            before = dict(state.evictions)
            state.settle(self.key_ttl)
            self._count(state, before)
        return results

    def _check(self, state: FeatureState) -> None:
        # A state's label and layout never change: checked once per state and feature set.
        if state.checked_by is not self:
            if state.label != self.label or state.layout() != self._shapes:
                raise FeatureError(
                    f"feature state belongs to {state.label}, not {self.label}; restore a "
                    "checkpoint of this feature set or start from new_state()."
                )
            state.checked_by = self

    def _admit(
        self, state: FeatureState, keys: list[str], times: F64, lateness: float | None
    ) -> tuple[I64, BOOL]:
        before = dict(state.evictions)
        admitted = state.admit(
            keys, times, key_ttl=self.key_ttl, max_keys=self.max_keys, allowed_lateness=lateness
        )
        self._count(state, before)
        return admitted

    def _count(self, state: FeatureState, before: Mapping[str, int]) -> None:
        for cause, n in state.evictions.items():
            self.evictions[cause] += n - before[cause]

    def __repr__(self) -> str:
        return f"FeatureSet({self.label!r}, outputs={self.outputs})"


#: One feature of every kind, with the parameter types every real spec uses.
_WARM_UP_SPEC: dict[str, Any] = {
    "name": "warm_up",
    "derived": [
        {"name": "wc", "kind": "window_count", "window": 1.0, "max_events": 2},
        {"name": "ws", "kind": "window_sum", "field": "x", "window": 1.0, "max_events": 2},
        {"name": "wm", "kind": "window_mean", "field": "x", "window": 1.0, "max_events": 2},
        {"name": "em", "kind": "ewm_mean", "field": "x", "half_life": 1.0},
        {"name": "ev", "kind": "ewm_var", "field": "x", "half_life": 1.0},
        {"name": "sl", "kind": "since_last"},
        {"name": "zs", "kind": "zscore", "field": "x"},
        {"name": "ra", "kind": "ratio", "fields": ["x", "y"]},
        {"name": "fr", "kind": "frequency", "field": "c", "max_categories": 2},
    ],
}


def warm_up() -> None:
    """Compile (or load from the Numba cache) every kernel, through :meth:`FeatureSet.compute`.

    Call once at worker start so no event waits for compilation. The cache directory is
    ``NUMBA_CACHE_DIR``, set by whoever starts the process.
    """
    fs = FeatureSet.from_spec(_WARM_UP_SPEC)
    state = fs.new_state(capacity=1)
    fs.compute(
        state,
        ["a", "b", "a"],
        np.array([0.0, 0.5, 1.0]),
        {"x": [1.0, None, 2.0], "y": [2.0, 0.0, 1.0], "c": ["u", "v", None]},
    )
