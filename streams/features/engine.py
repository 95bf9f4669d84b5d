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
import heapq
import io
import json
import math
import sys
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from streams.errors import FeatureError, SpecError
from streams.features import kernels

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
DEFAULT_MAX_EVENTS = 64
DEFAULT_MAX_CATEGORIES = 32
#: Upper bound of ``max_events`` / ``max_categories``: per-key state must stay small.
MAX_BUFFER = 4096
DEFAULT_CAPACITY = 1024

#: What ``late_policy`` may say about events later than ``allowed_lateness``.
LATE_POLICIES = ("process", "dead_letter")
_LATEST = "_late/latest_time"
#: Latest event time per key, in states of a set with ``key_ttl`` or ``max_keys`` (it is
#: then also the lateness test's reference, in place of ``_LATEST``).
_LAST_SEEN = "_keys/last_time"
#: Why a key left a state: ``key_ttl`` (stale) or ``max_keys`` (least recently seen).
EVICTION_CAUSES = ("ttl", "cap")

_STATE_FORMAT = "riverline.feature_state"
#: Version 2 adds the watermark (latest event time seen) to the meta of bounded states;
#: states of sets without ``key_ttl`` and ``max_keys`` are still written as version 1.
_STATE_VERSION = 2
_UNBOUNDED_VERSION = 1
_MIN_COMPACTED_CAPACITY = 16
#: Fixed zip entry timestamp, so equal states serialize to equal bytes.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]


# --------------------------------------------------------------------------------------
# Kinds: what each reads, its parameters, its state arrays
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str
    unit: Literal["seconds", "count"]
    default: float | int | None  # None: required

    def describe(self) -> str:
        what = "seconds > 0" if self.unit == "seconds" else f"integer 1..{MAX_BUFFER}"
        need = "required" if self.default is None else f"default {self.default}"
        return f"{self.name} ({what}, {need})"


@dataclass(frozen=True)
class _Array:
    """One per-key state array: ``dtype``, row width (a parameter name, or scalar rows)."""

    name: str
    dtype: Literal["float64", "int64"]
    width: str | None
    fill: float


@dataclass(frozen=True)
class _Kind:
    name: str
    reads: Literal["field", "optional field", "nothing", "two fields"]
    params: tuple[_Param, ...]
    state: tuple[_Array, ...]
    categorical: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        field = {"field": ("field",), "optional field": ("field",), "two fields": ("fields",)}
        return ("name", "kind", *field.get(self.reads, ()), *(p.name for p in self.params))

    def describe(self) -> str:
        reads = {
            "field": 'field = "<raw field>"',
            "optional field": 'field = "<raw field>" (optional)',
            "nothing": "no field",
            "two fields": 'fields = ["<numerator>", "<denominator>"]',
        }[self.reads]
        params = ", ".join(p.describe() for p in self.params) or "no parameters"
        return f"{self.name} takes {reads}; {params}"


_WINDOW = _Param("window", "seconds", None)
_MAX_EVENTS = _Param("max_events", "count", DEFAULT_MAX_EVENTS)
_HALF_LIFE = _Param("half_life", "seconds", None)
_MAX_CATEGORIES = _Param("max_categories", "count", DEFAULT_MAX_CATEGORIES)
_RING = (
    _Array("ring_times", "float64", "max_events", 0.0),
    _Array("ring_values", "float64", "max_events", 0.0),
    _Array("ring_len", "int64", None, 0),
)

_KINDS: dict[str, _Kind] = {
    k.name: k
    for k in (
        _Kind("window_count", "optional field", (_WINDOW, _MAX_EVENTS), _RING),
        _Kind("window_sum", "field", (_WINDOW, _MAX_EVENTS), _RING),
        _Kind("window_mean", "field", (_WINDOW, _MAX_EVENTS), _RING),
        _Kind(
            "ewm_mean",
            "field",
            (_HALF_LIFE,),
            (
                _Array("weight", "float64", None, 0.0),
                _Array("mean", "float64", None, 0.0),
                _Array("clock", "float64", None, math.nan),
            ),
        ),
        _Kind(
            "ewm_var",
            "field",
            (_HALF_LIFE,),
            (
                _Array("weight", "float64", None, 0.0),
                _Array("mean", "float64", None, 0.0),
                _Array("m2", "float64", None, 0.0),
                _Array("clock", "float64", None, math.nan),
            ),
        ),
        _Kind("since_last", "nothing", (), (_Array("clock", "float64", None, math.nan),)),
        _Kind(
            "zscore",
            "field",
            (),
            (
                _Array("count", "int64", None, 0),
                _Array("mean", "float64", None, 0.0),
                _Array("m2", "float64", None, 0.0),
            ),
        ),
        _Kind("ratio", "two fields", (), ()),
        _Kind(
            "frequency",
            "field",
            (_MAX_CATEGORIES,),
            (
                _Array("table_codes", "int64", "max_categories", 0),
                _Array("table_counts", "int64", "max_categories", 0),
                _Array("table_len", "int64", None, 0),
                _Array("totals", "int64", None, 0),
            ),
            categorical=True,
        ),
    )
}

#: The feature kinds a spec may use.
KINDS: tuple[str, ...] = tuple(sorted(_KINDS))


@dataclass(frozen=True)
class _Derived:
    """One validated ``[[features.derived]]`` entry, defaults filled in."""

    name: str
    kind: _Kind
    fields: tuple[str, ...]
    params: Mapping[str, float | int]

    def canonical(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "kind": self.kind.name}
        if self.kind.reads == "two fields":
            entry["fields"] = list(self.fields)
        elif self.fields:
            entry["field"] = self.fields[0]
        entry.update(self.params)
        return entry


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
    def of(d: _Derived) -> _Step:
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


@dataclass(frozen=True)
class _ArraySpec:
    dtype: str
    width: int  # 0: one scalar per key
    fill: float

    def row_bytes(self) -> int:
        return np.dtype(self.dtype).itemsize * max(self.width, 1)

    def shape(self) -> tuple[str, int]:
        """What must match between a state and a feature set (fills are NaN-valued)."""
        return (self.dtype, self.width)


# --------------------------------------------------------------------------------------
# Spec parsing
# --------------------------------------------------------------------------------------


def _parse_entry(index: int, entry: Any, seen: set[str]) -> _Derived:
    where = f"[features] derived[{index}]"
    if not isinstance(entry, Mapping):
        raise SpecError(f"{where}: must be a table with name and kind, got {entry!r}.")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError(f'{where}: needs name = "<output feature name>" (a non-empty string).')
    if name in seen:
        raise SpecError(f"{where}: duplicate feature name {name!r}; names must be unique.")
    kind_name = entry.get("kind")
    kind = _KINDS.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        raise SpecError(
            f"{where} ({name!r}): unknown kind {kind_name!r}; valid kinds: {', '.join(KINDS)}."
        )
    where = f"{where} ({name!r}, kind {kind.name})"
    usage = f"{kind.describe()}; valid keys: {', '.join(kind.keys)}"
    unknown = sorted(str(k) for k in entry if k not in kind.keys)
    if unknown:
        raise SpecError(f"{where}: unknown parameter {', '.join(unknown)}; {usage}.")

    fields: tuple[str, ...] = ()
    if kind.reads == "two fields":
        raw = entry.get("fields")
        if (
            not isinstance(raw, list)
            or len(raw) != 2
            or not all(isinstance(f, str) and f for f in raw)
        ):
            raise SpecError(f"{where}: fields must list two field names, got {raw!r}; {usage}.")
        fields = (raw[0], raw[1])
    elif kind.reads in ("field", "optional field"):
        raw = entry.get("field")
        if raw is None and kind.reads == "optional field":
            fields = ()
        elif isinstance(raw, str) and raw:
            fields = (raw,)
        else:
            raise SpecError(f"{where}: field must name a raw field, got {raw!r}; {usage}.")

    params: dict[str, float | int] = {}
    for p in kind.params:
        value = entry.get(p.name, p.default)
        if value is None:
            raise SpecError(f"{where}: missing {p.name}; {usage}.")
        if p.unit == "seconds":
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
            )
            if not ok:
                raise SpecError(
                    f"{where}: {p.name} must be a positive number of seconds, "
                    f"got {value!r}; {usage}."
                )
            params[p.name] = float(value)
        else:
            if not (isinstance(value, int) and not isinstance(value, bool)) or not (
                1 <= value <= MAX_BUFFER
            ):
                raise SpecError(
                    f"{where}: {p.name} must be an integer from 1 to {MAX_BUFFER}, "
                    f"got {value!r}; {usage}."
                )
            params[p.name] = int(value)
    return _Derived(name, kind, fields, params)


# --------------------------------------------------------------------------------------
# Input columns
# --------------------------------------------------------------------------------------


#: Types a numeric kind takes without asking numpy (what a decoded Avro record holds).
_PLAIN_NUMBERS = frozenset({int, float, bool, type(None)})


def _float_column(what: str, column: Any, n: int) -> F64:
    """A C-contiguous, writeable float64 copy-or-view (the one array type kernels see)."""
    try:
        arr = np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FeatureError(
            f"{what} has a value that is not a number ({exc}); numeric feature kinds need "
            "numbers, booleans or None. Use kind = 'frequency' for a categorical field."
        ) from exc
    if arr.shape != (n,):
        raise FeatureError(f"{what} has shape {arr.shape}, expected ({n},) like the keys.")
    if not (arr.flags.c_contiguous and arr.flags.writeable):
        # Numba compiles one specialization per array layout and writeability; always
        # handing it the same kind keeps compilation out of the hot path.
        arr = np.array(arr, dtype=np.float64, order="C", copy=True)
    return arr


def _finite(t: F64) -> None:
    if not np.isfinite(t).all():
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise FeatureError(
            f"event time {t[bad]!r} at position {bad} is not finite; times must be "
            "seconds since the epoch."
        )


def _category_code(text: str) -> int:
    """Stable non-negative 63-bit code of a category (same in every process and run).

    A hash rather than a lookup table: the state then needs no growing dictionary of every
    value ever seen, and two workers agree on codes without sharing anything. Two values of
    one key collide with probability ~ max_categories**2 / 2**64.
    """
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


#: Recently seen category strings -> codes (a process-local cache, not state).
_CODE_CACHE: dict[str, int] = {}
_CODE_CACHE_SIZE = 1 << 16


def _code(value: Any) -> int:
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return -1
    text = value if isinstance(value, str) else str(value)
    code = _CODE_CACHE.get(text)
    if code is None:
        if len(_CODE_CACHE) >= _CODE_CACHE_SIZE:
            _CODE_CACHE.clear()
        code = _CODE_CACHE[text] = _category_code(text)
    return code


def _code_column(what: str, column: Any, n: int) -> I64:
    try:
        # Fast path: every value a cached string. Only str keys are cached, so any other
        # value (1, 1.0 and True hash alike but are different categories) raises KeyError.
        codes = [_CODE_CACHE[v] for v in column]
    except (KeyError, TypeError):
        codes = [_code(v) for v in column]
    if len(codes) != n:
        raise FeatureError(f"{what} has {len(codes)} values, expected {n} like the keys.")
    return np.array(codes, dtype=np.int64)


# --------------------------------------------------------------------------------------
# Per-key state
# --------------------------------------------------------------------------------------


def _key_texts(keys: Sequence[Any]) -> list[str]:
    """Keys as plain ``str`` (``None`` is the global key ``""``), or FeatureError."""
    texts = list(keys)
    if set(map(type, texts)) <= {str}:
        return texts
    for i, key in enumerate(texts):
        if key is None:
            texts[i] = ""
        elif isinstance(key, str):
            texts[i] = str(key)  # numpy.str_ is stored as plain str
        else:
            raise FeatureError(f"entity keys must be strings ('' for the global key), got {key!r}.")
    return texts


@dataclass(frozen=True)
class _Admission:
    """Rows :meth:`FeatureSet.late` gave the events it let through, for the next compute."""

    keys: list[str]
    times: F64
    slots: I64


class FeatureState:
    """What a :class:`FeatureSet` has learned per key: a key->slot map and state arrays.

    Made by :meth:`FeatureSet.new_state` or :meth:`from_bytes`; grows (doubling) when new
    keys appear. A bounded state (its set has ``key_ttl`` or ``max_keys``) also keeps each
    key's latest event time and its own watermark, evicts keys as :meth:`admit` and
    :meth:`settle` say, and compacts its rows. Not thread-safe: one state belongs to one
    agent.
    """

    def __init__(
        self, label: str, layout: Mapping[str, _ArraySpec], capacity: int = DEFAULT_CAPACITY
    ) -> None:
        self.label = label
        self._layout = dict(layout)
        #: The feature set that last checked this state's label and layout (FeatureSet._run).
        self.checked_by: object | None = None
        #: True if the state keeps per-key event times and evicts (key_ttl / max_keys).
        self.bounded = _LAST_SEEN in self._layout
        #: Latest event time of the events admitted (bounded states; -inf before any).
        self.watermark = -math.inf
        #: Keys evicted from this state since it was made or restored, by cause. A process
        #: count, not state: not saved by :meth:`to_bytes`.
        self.evictions: dict[str, int] = dict.fromkeys(EVICTION_CAUSES, 0)
        #: What FeatureSet.late admitted for the compute call that follows it.
        self.admitted: _Admission | None = None
        self._capacity = max(int(capacity), 1)
        #: Key per row; None for the rows of evicted keys until the next compaction.
        self._keys: list[str | None] = []
        #: Live keys -> rows, in row order (rows are only appended, and compaction keeps
        #: their order), so this is also the order keys are saved in.
        self._slots: dict[str, int] = {}
        self._dead = 0  # rows of evicted keys
        self._key_bytes = 0  # sys.getsizeof of the live key strings
        #: A heap of one (event time, row) per live key, the least recently seen on top.
        #: The time may be older than the key's latest: it is brought up to date when it
        #: reaches the top (see _least_recent), so an event costs no heap operation. Pairs
        #: of evicted keys leave when they reach the top. Built when first needed.
        self._lru: list[tuple[float, int]] | None = None
        self.arrays: dict[str, np.ndarray] = {
            name: self._allocate(spec, self._capacity) for name, spec in self._layout.items()
        }

    @staticmethod
    def _allocate(spec: _ArraySpec, rows: int) -> np.ndarray:
        shape = (rows, spec.width) if spec.width else (rows,)
        return np.full(shape, spec.fill, dtype=spec.dtype)

    @property
    def n_keys(self) -> int:
        """Number of keys held (seen, less the ones evicted)."""
        return len(self._slots)

    @property
    def capacity(self) -> int:
        """Rows allocated in every state array (>= ``n_keys``)."""
        return self._capacity

    @property
    def keys(self) -> list[str]:
        """Keys in slot order (a copy)."""
        return list(self._slots)

    def layout(self) -> dict[str, tuple[str, int]]:
        """State array name -> (dtype, row width; 0 for one value per key)."""
        return {name: spec.shape() for name, spec in self._layout.items()}

    def slot(self, key: str) -> int | None:
        """The state row of ``key``, or None if it is not held (never seen, or evicted)."""
        return self._slots.get(key)

    def _grow(self, rows: int) -> None:
        capacity = max(rows, 2 * self._capacity)
        for name, spec in self._layout.items():
            bigger = self._allocate(spec, capacity)
            bigger[: self._capacity] = self.arrays[name]
            self.arrays[name] = bigger
        self._capacity = capacity

    def _append(self, key: str) -> int:
        """A new row, at the end, for ``key`` (not held)."""
        row = len(self._keys)
        if row >= self._capacity:
            self._grow(row + 1)
        self._slots[key] = row
        self._keys.append(key)
        self._key_bytes += sys.getsizeof(key)
        return row

    def slots_for(self, keys: Sequence[str]) -> I64:
        """Rows of ``keys`` (int64), adding unseen keys and growing the arrays as needed.

        New keys get rows in order of first appearance, so the rows do not depend on how a
        stream is cut into batches. ``None`` is the global key ``""``. Unbounded states
        only: a bounded one admits its keys through :meth:`admit`.
        """
        if self.bounded:
            raise FeatureError(
                f"{self.label}: a bounded feature state (key_ttl or max_keys) takes its keys "
                "through FeatureState.admit, which keeps their event times; use "
                "FeatureSet.compute."
            )
        try:
            return np.fromiter(map(self._slots.__getitem__, keys), np.int64, count=len(keys))
        except (KeyError, TypeError):  # an unseen, None or unhashable key
            pass
        try:
            new = [k for k in dict.fromkeys(keys) if k is None or k not in self._slots]
        except TypeError as exc:
            raise FeatureError(f"entity keys must be strings: {exc}.") from exc
        bad = [k for k in new if k is not None and not isinstance(k, str)]
        if bad:
            raise FeatureError(
                f"entity keys must be strings ('' for the global key), got {bad[0]!r}."
            )
        for key in new:
            text = "" if key is None else str(key)  # numpy.str_ is stored as plain str
            if text not in self._slots:
                self._append(text)
        slot = self._slots.__getitem__
        return np.fromiter((slot("" if k is None else k) for k in keys), np.int64, count=len(keys))

    # -- bounded states -------------------------------------------------------------------

    def admit(
        self,
        keys: Sequence[str],
        times: F64,
        *,
        key_ttl: float | None,
        max_keys: int | None,
        allowed_lateness: float | None = None,
    ) -> tuple[I64, BOOL]:
        """Rows of a batch's events in a bounded state, evicting keys event by event.

        Per event, in order (the module docstring states the rules): a stale key is
        evicted and comes back fresh; with ``allowed_lateness``, an event more than that
        before its (held) key's latest time is late and changes nothing; the watermark
        moves; a new key past ``max_keys`` evicts the least recently seen one; the key's
        latest time moves. A returning key gets a new row, so the batch's earlier events
        of the key keep their old one: the kernels need no reset.

        Parameters
        ----------
        keys
            Entity keys as plain ``str`` (FeatureSet turns ``None`` into ``""`` first).
        times
            Finite event times, float64, one per key.

        Returns
        -------
        slots, late
            The row of every event (-1 for late ones), and which events are late.
        """
        late = np.zeros(len(keys), dtype=np.bool_)
        rows: list[int] = []
        ttl = math.inf if key_ttl is None else float(key_ttl)
        lateness = math.inf if allowed_lateness is None else float(allowed_lateness)
        cap = max_keys if max_keys is not None else sys.maxsize
        lru = self._lru_heap()
        last = self.arrays[_LAST_SEEN]
        held = self._slots
        watermark = self.watermark
        for i, (key, t) in enumerate(zip(keys, times.tolist(), strict=True)):
            row = held.get(key)
            if t > watermark:
                watermark = t  # a late event (below) never gets here: t < seen <= watermark
            if row is not None:
                seen = last.item(row)  # a Python float: numpy scalar arithmetic is slow
                if seen < watermark - ttl:
                    self._evict(row, "ttl")
                    row = None
                elif t < seen - lateness:
                    late[i] = True
                    rows.append(-1)
                    continue
                elif t > seen:
                    last[row] = t
            if row is None:
                if len(held) >= cap:
                    least = self._least_recent(math.inf)
                    assert least is not None  # every live key has a pair in the heap
                    self._evict(least[1], "ttl" if least[0] < watermark - ttl else "cap")
                row = self._append(key)
                last = self.arrays[_LAST_SEEN]  # growing replaces the arrays
                last[row] = t
                heapq.heappush(lru, (t, row))
            rows.append(row)
        self.watermark = watermark
        return np.array(rows, dtype=np.int64), late

    def settle(self, key_ttl: float | None) -> None:
        """After a batch's kernels: evict every stale key, and compact once rows of
        evicted keys outnumber the live ones (each row moves O(1) times per eviction)."""
        if key_ttl is not None:
            cutoff = self.watermark - key_ttl
            while (least := self._least_recent(cutoff)) is not None:
                self._evict(least[1], "ttl")
        if self._dead > len(self._slots):
            self._compact()

    def _lru_heap(self) -> list[tuple[float, int]]:
        if self._lru is None:
            last = self.arrays[_LAST_SEEN].tolist()
            self._lru = [(last[row], row) for row in self._slots.values()]
            heapq.heapify(self._lru)
        return self._lru

    def _least_recent(self, before: float) -> tuple[float, int] | None:
        """Take the least recently seen live key off the heap, as (latest time, row), if
        its latest time is before ``before``; ties go to the lower row (entered first)."""
        lru = self._lru_heap()
        last = self.arrays[_LAST_SEEN]
        while lru and lru[0][0] < before:
            t, row = lru[0]
            if self._keys[row] is None:  # evicted since
                heapq.heappop(lru)
                continue
            latest = last.item(row)
            if latest != t:  # seen since: every other pair's time is at least t
                heapq.heapreplace(lru, (latest, row))
                continue
            return heapq.heappop(lru)
        return None

    def _evict(self, row: int, cause: str) -> None:
        key = self._keys[row]
        assert key is not None
        del self._slots[key]
        self._keys[row] = None
        self._key_bytes -= sys.getsizeof(key)
        self._dead += 1
        self.evictions[cause] += 1

    def _compact(self) -> None:
        rows = np.fromiter(self._slots.values(), np.int64, count=len(self._slots))
        capacity = max(2 * len(rows), _MIN_COMPACTED_CAPACITY)
        for name, spec in self._layout.items():
            smaller = self._allocate(spec, capacity)
            smaller[: len(rows)] = self.arrays[name][rows]
            self.arrays[name] = smaller
        self._capacity = capacity
        self._adopt(list(self._slots))
        self._lru = None

    def _adopt(self, keys: list[str]) -> None:
        """Hold ``keys`` in rows 0..n-1 (and no evicted rows)."""
        rows: list[str | None] = list(keys)
        self._keys = rows
        self._slots = {k: i for i, k in enumerate(keys)}
        self._key_bytes = sum(map(sys.getsizeof, keys))
        self._dead = 0

    # -- size ----------------------------------------------------------------------------

    def nbytes(self) -> int:
        """Bytes this state holds: its arrays (every allocated row) and its key strings and
        key map containers, in O(number of arrays), for a gauge.

        Compare with :meth:`nbytes_per_key`, which also counts the key map's entries. The
        serialized state (:meth:`to_bytes`, compressed, live rows only) is smaller in
        practice, so checking this against a checkpoint limit errs on the safe side.
        """
        arrays = sum(a.nbytes for a in self.arrays.values())
        return arrays + self._key_bytes + sys.getsizeof(self._slots) + sys.getsizeof(self._keys)

    def nbytes_per_key(self) -> float:
        """Bytes of state per key: one row of every state array plus the key map's share.

        The key map share (dict entry, key string, slot int) is measured with
        ``sys.getsizeof``; spare array capacity (below 2x after growth) is not counted.
        """
        row = sum(spec.row_bytes() for spec in self._layout.values())
        if not self._slots:
            return float(row)
        keymap = sys.getsizeof(self._slots) + sys.getsizeof(self._keys)
        keymap += sum(sys.getsizeof(k) + sys.getsizeof(s) for k, s in self._slots.items())
        return row + keymap / len(self._slots)

    # -- checkpoints ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Everything needed to continue exactly where this state is, as deterministic bytes.

        A zip of ``meta.json`` (label, keys in slot order, array layout; a bounded state's
        watermark) and one ``.npy`` per state array (the rows of the keys held, in slot
        order). Equal states give equal bytes.
        """
        return self.frozen()()

    def frozen(self) -> Callable[[], bytes]:
        """:meth:`to_bytes` in two steps: copies of the state now, the bytes when called.

        The copies are what the state is at this instant; the call (the zip and its
        deflate, most of the cost) can run in another thread while the state moves on
        (a worker's checkpoint, streams.state.pipeline).
        """
        names = sorted(self._layout)
        meta: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "version": _UNBOUNDED_VERSION,
            "label": self.label,
            "keys": list(self._slots),
            "arrays": [
                {
                    "name": name,
                    "dtype": self._layout[name].dtype,
                    "width": self._layout[name].width,
                    "fill": self._layout[name].fill,
                }
                for name in names
            ],
        }
        if self.bounded:
            meta["version"] = _STATE_VERSION
            meta["watermark"] = self.watermark if math.isfinite(self.watermark) else None
        if self._dead:
            held = np.fromiter(self._slots.values(), np.int64, count=len(self._slots))
            rows = [self.arrays[name][held] for name in names]  # fancy indexing copies
        else:
            rows = [np.array(self.arrays[name][: self.n_keys], order="C") for name in names]

        def build() -> bytes:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(_entry("meta.json"), json.dumps(meta, sort_keys=True).encode())
                for i, array in enumerate(rows):
                    npy = io.BytesIO()
                    np.lib.format.write_array(npy, array, allow_pickle=False)
                    zf.writestr(_entry(f"arrays/{i}.npy"), npy.getvalue())
            return buf.getvalue()

        return build

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureState:
        """The state saved by :meth:`to_bytes` (format version 1 or 2).

        Raises
        ------
        FeatureError
            If ``data`` is not a feature state written by a known format version.
        """
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                meta = json.loads(zf.read("meta.json"))
                version = meta.get("version")
                if meta.get("format") != _STATE_FORMAT or version not in (
                    _UNBOUNDED_VERSION,
                    _STATE_VERSION,
                ):
                    raise ValueError(f"format {meta.get('format')!r} version {version!r}")
                keys = [str(k) for k in meta["keys"]]
                layout = {
                    a["name"]: _ArraySpec(str(a["dtype"]), int(a["width"]), float(a["fill"]))
                    for a in meta["arrays"]
                }
                if (_LAST_SEEN in layout) != (version == _STATE_VERSION):
                    raise ValueError(
                        f"version {version} with the array {_LAST_SEEN!r} "
                        f"{'missing' if version == _STATE_VERSION else 'present'}"
                    )
                state = cls(str(meta["label"]), layout, capacity=max(len(keys), 1))
                for i, a in enumerate(meta["arrays"]):
                    rows = np.lib.format.read_array(
                        io.BytesIO(zf.read(f"arrays/{i}.npy")), allow_pickle=False
                    )
                    target = state.arrays[a["name"]][: len(keys)]
                    if rows.shape != target.shape or rows.dtype != target.dtype:
                        raise ValueError(
                            f"array {a['name']!r} is {rows.dtype}{rows.shape}, "
                            f"expected {target.dtype}{target.shape}"
                        )
                    target[...] = rows
                if state.bounded:
                    watermark = meta["watermark"]
                    state.watermark = -math.inf if watermark is None else float(watermark)
                    seen = state.arrays[_LAST_SEEN][: len(keys)]
                    if not (np.isfinite(seen).all() and (seen <= state.watermark).all()):
                        raise ValueError("per-key event times not finite or past the watermark")
        except (zipfile.BadZipFile, KeyError, TypeError, ValueError, OSError) as exc:
            raise FeatureError(
                f"cannot read feature state: {exc}. The checkpoint is damaged or was written by "
                "another Riverline version; start from FeatureSet.new_state()."
            ) from exc
        if len(set(keys)) != len(keys):
            raise FeatureError("cannot read feature state: duplicate keys in the key map.")
        state._adopt(keys)
        return state

    def __repr__(self) -> str:
        return f"FeatureState({self.label!r}, n_keys={self.n_keys}, capacity={self.capacity})"


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


# --------------------------------------------------------------------------------------
# State size against the checkpoint limit
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StateBudget:
    """Where a state's size stands against the most a checkpoint may hold.

    ``limit`` is ``Settings.checkpoint_max_bytes`` (``RIVERLINE_CHECKPOINT_MAX_BYTES``),
    past which a checkpoint cannot be saved. :meth:`level` says ``"ok"``, ``"warn"`` (over
    ``warn_fraction`` of the limit: time to set ``key_ttl`` / ``max_keys``, raise the
    limit or add partitions, while checkpoints still work) or ``"over"`` (over the limit:
    the next checkpoint will fail). Give it the checkpoint's length where known, else
    :meth:`FeatureState.nbytes`, which errs on the large side.

    Examples
    --------
    >>> budget = StateBudget(limit=1000)
    >>> budget.level(400), budget.level(600), budget.level(1001)
    ('ok', 'warn', 'over')
    """

    limit: int
    warn_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.limit <= 0 or not 0.0 < self.warn_fraction < 1.0:
            raise FeatureError(
                f"StateBudget needs limit > 0 and 0 < warn_fraction < 1, got "
                f"limit={self.limit!r}, warn_fraction={self.warn_fraction!r}."
            )

    def level(self, nbytes: int) -> Literal["ok", "warn", "over"]:
        """``"over"`` past the limit, ``"warn"`` past ``warn_fraction`` of it, else ``"ok"``."""
        if nbytes > self.limit:
            return "over"
        if nbytes > self.warn_fraction * self.limit:
            return "warn"
        return "ok"

    def describe(self, nbytes: int, where: str) -> str:
        """A log or alert line for ``where`` (a pipeline and partition) at this size.

        Examples
        --------
        >>> StateBudget(limit=1000).describe(600, "cards partition 0")  # doctest: +ELLIPSIS
        'feature state of cards partition 0 is 600 bytes, 60% of ... set [features] key_ttl...'
        """
        share = f"{nbytes / self.limit:.0%} of RIVERLINE_CHECKPOINT_MAX_BYTES ({self.limit:,})"
        if self.level(nbytes) == "over":
            return (
                f"feature state of {where} is {nbytes:,} bytes, {share}: it can no longer be "
                "checkpointed. Set [features] key_ttl or max_keys, raise the limit (and the "
                "checkpoints topic's max.message.bytes) or use more partitions."
            )
        return (
            f"feature state of {where} is {nbytes:,} bytes, {share}; checkpoints fail past "
            "the limit: set [features] key_ttl or max_keys, raise the limit or use more "
            "partitions."
        )


# --------------------------------------------------------------------------------------
# The feature set
# --------------------------------------------------------------------------------------


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
        derived: Sequence[_Derived],
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
        self._layout: dict[str, _ArraySpec] = {
            f"{d.name}/{a.name}": _ArraySpec(
                a.dtype, int(d.params[a.width]) if a.width else 0, float(a.fill)
            )
            for d in self._derived
            for a in d.kind.state
        }
        if self.bounded:
            # Latest event time per key, for eviction and the lateness test (checkpointed).
            self._layout[_LAST_SEEN] = _ArraySpec("float64", 0, math.nan)
        elif self.drops_late:
            # Latest event time per key, for the lateness test (part of every checkpoint).
            self._layout[_LATEST] = _ArraySpec("float64", 0, math.nan)
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
        if not isinstance(section, Mapping):
            raise SpecError(f"[features] must be a table with name and derived, got {section!r}.")
        valid = ("name", "derived", "allowed_lateness", "late_policy", "key_ttl", "max_keys")
        unknown = sorted(str(k) for k in section if k not in valid)
        if unknown:
            raise SpecError(
                f"[features]: unknown key {', '.join(unknown)}; valid keys: {', '.join(valid)}."
            )
        lateness = section.get("allowed_lateness")
        if lateness is not None and (
            not isinstance(lateness, int | float)
            or isinstance(lateness, bool)
            or not math.isfinite(lateness)
            or lateness < 0
        ):
            raise SpecError(f"[features]: allowed_lateness must be seconds >= 0, got {lateness!r}.")
        policy = section.get("late_policy", "process")
        if policy not in LATE_POLICIES:
            raise SpecError(
                f"[features]: late_policy must be one of {', '.join(LATE_POLICIES)}, "
                f"got {policy!r}."
            )
        if policy != "process" and lateness is None:
            raise SpecError(
                f'[features]: late_policy = "{policy}" needs allowed_lateness (seconds).'
            )
        key_ttl = section.get("key_ttl")
        if key_ttl is not None and (
            not isinstance(key_ttl, int | float)
            or isinstance(key_ttl, bool)
            or not math.isfinite(key_ttl)
            or key_ttl <= 0
        ):
            raise SpecError(
                f"[features]: key_ttl must be a positive number of seconds (event time a key "
                f"may go without events before it is evicted), got {key_ttl!r}."
            )
        max_keys = section.get("max_keys")
        if max_keys is not None and (
            not isinstance(max_keys, int) or isinstance(max_keys, bool) or max_keys < 1
        ):
            raise SpecError(
                f"[features]: max_keys must be an integer >= 1 (keys per partition state), "
                f"got {max_keys!r}."
            )
        name = section.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError('[features]: needs name = "<feature set name>" (a non-empty string).')
        entries = section.get("derived", [])
        if not isinstance(entries, list):
            raise SpecError(
                "[features]: derived must be a list of tables ([[features.derived]]), "
                f"got {entries!r}."
            )
        derived: list[_Derived] = []
        seen: set[str] = set()
        for i, entry in enumerate(entries):
            d = _parse_entry(i, entry, seen)
            seen.add(d.name)
            derived.append(d)
        fs = cls(
            name,
            derived,
            allowed_lateness=None if lateness is None else float(lateness),
            late_policy=str(policy),
            key_ttl=None if key_ttl is None else float(key_ttl),
            max_keys=max_keys,
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
        t = _float_column("event times", times, n)
        if self.bounded:
            texts = _key_texts(keys)
            _finite(t)
            slots, flags = self._admit(state, texts, t, self.allowed_lateness)
            keep = ~flags
            state.admitted = _Admission(
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
            if type(value) not in _PLAIN_NUMBERS:
                _float_column(f"field {name!r}", [value], 1)

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
        t = _float_column("event times", times, n)
        _finite(t)
        missing = [f for f in self.inputs if f not in columns]
        if missing:
            raise FeatureError(
                f"batch lacks column {', '.join(missing)}; {self.label} reads "
                f"{', '.join(self.inputs)}."
            )
        numeric = {f: _float_column(f"field {f!r}", columns[f], n) for f in self._numeric}
        codes = {f: _code_column(f"field {f!r}", columns[f], n) for f in self._categorical}
        if not self.bounded:
            slots = state.slots_for(keys)
        elif admitted is None:
            slots, _ = self._admit(state, _key_texts(keys), t, None)
        elif _key_texts(keys) == admitted.keys and np.array_equal(t, admitted.times):
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
