"""Per-key feature state: a key->row map and state arrays, bounded, saved and restored.

A :class:`FeatureState` holds what a :class:`~streams.features.engine.FeatureSet` has
learned per entity key, and is what a checkpoint saves (:meth:`FeatureState.to_bytes`).
A bounded state (its set has ``key_ttl`` or ``max_keys``) also keeps each key's latest
event time and evicts keys by the rules of the engine's module docstring.
:class:`StateBudget` tells how a state's size stands against the checkpoint limit.
"""

from __future__ import annotations

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

from streams.errors import FeatureError
from streams.features.columns import BOOL, F64, I64

__all__ = [
    "DEFAULT_CAPACITY",
    "EVICTION_CAUSES",
    "LAST_SEEN",
    "Admission",
    "ArraySpec",
    "FeatureState",
    "StateBudget",
]

DEFAULT_CAPACITY = 1024
#: Latest event time per key, in states of a set with ``key_ttl`` or ``max_keys`` (it is
#: then also the lateness test's reference).
LAST_SEEN = "_keys/last_time"
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


@dataclass(frozen=True)
class ArraySpec:
    """The dtype, row width and fill of one state array."""

    dtype: str
    width: int  # 0: one scalar per key
    fill: float

    def row_bytes(self) -> int:
        return np.dtype(self.dtype).itemsize * max(self.width, 1)

    def shape(self) -> tuple[str, int]:
        """What must match between a state and a feature set (fills are NaN-valued)."""
        return (self.dtype, self.width)


@dataclass(frozen=True)
class Admission:
    """Rows :meth:`~streams.features.engine.FeatureSet.late` gave the events it let through,
    for the next compute."""

    keys: list[str]
    times: F64
    slots: I64


class FeatureState:
    """What a :class:`~streams.features.engine.FeatureSet` has learned per key: a key->slot
    map and state arrays.

    Made by :meth:`~streams.features.engine.FeatureSet.new_state` or :meth:`from_bytes`;
    grows (doubling) when new keys appear. A bounded state (its set has ``key_ttl`` or
    ``max_keys``) also keeps each key's latest event time and its own watermark, evicts
    keys as :meth:`admit` and :meth:`settle` say, and compacts its rows. Not thread-safe:
    one state belongs to one agent.
    """

    def __init__(
        self, label: str, layout: Mapping[str, ArraySpec], capacity: int = DEFAULT_CAPACITY
    ) -> None:
        self.label = label
        self._layout = dict(layout)
        #: The feature set that last checked this state's label and layout (FeatureSet._run).
        self.checked_by: object | None = None
        #: True if the state keeps per-key event times and evicts (key_ttl / max_keys).
        self.bounded = LAST_SEEN in self._layout
        #: Latest event time of the events admitted (bounded states; -inf before any).
        self.watermark = -math.inf
        #: Keys evicted from this state since it was made or restored, by cause. A process
        #: count, not state: not saved by :meth:`to_bytes`.
        self.evictions: dict[str, int] = dict.fromkeys(EVICTION_CAUSES, 0)
        #: What FeatureSet.late admitted for the compute call that follows it.
        self.admitted: Admission | None = None
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
    def _allocate(spec: ArraySpec, rows: int) -> np.ndarray:
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
        self._lru_heap()  # built from the keys held now; _admit_new pushes the new ones
        last = self.arrays[LAST_SEEN]
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
                row = self._admit_new(key, t, watermark - ttl, cap)
                last = self.arrays[LAST_SEEN]  # growing replaces the arrays
            rows.append(row)
        self.watermark = watermark
        return np.array(rows, dtype=np.int64), late

    def _admit_new(self, key: str, t: float, stale_before: float, cap: int) -> int:
        """The row of a key not held, seen at ``t``; if the state holds ``cap`` keys, the
        least recently seen one is evicted first (as stale if seen before ``stale_before``)."""
        if len(self._slots) >= cap:
            least = self._least_recent(math.inf)
            assert least is not None  # every live key has a pair in the heap
            self._evict(least[1], "ttl" if least[0] < stale_before else "cap")
        row = self._append(key)
        self.arrays[LAST_SEEN][row] = t
        heapq.heappush(self._lru_heap(), (t, row))
        return row

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
            last = self.arrays[LAST_SEEN].tolist()
            self._lru = [(last[row], row) for row in self._slots.values()]
            heapq.heapify(self._lru)
        return self._lru

    def _least_recent(self, before: float) -> tuple[float, int] | None:
        """Take the least recently seen live key off the heap, as (latest time, row), if
        its latest time is before ``before``; ties go to the lower row (entered first)."""
        lru = self._lru_heap()
        last = self.arrays[LAST_SEEN]
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
                    a["name"]: ArraySpec(str(a["dtype"]), int(a["width"]), float(a["fill"]))
                    for a in meta["arrays"]
                }
                if (LAST_SEEN in layout) != (version == _STATE_VERSION):
                    raise ValueError(
                        f"version {version} with the array {LAST_SEEN!r} "
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
                    seen = state.arrays[LAST_SEEN][: len(keys)]
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
