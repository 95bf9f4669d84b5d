"""A batch's input columns as the arrays kernels take: times, numbers, category codes, keys.

Every array handed to a kernel is C-contiguous, writeable and of one dtype, so Numba
compiles one specialization per kernel. Categories become stable 63-bit codes (the same
in every process), so per-key state holds no table of the values ever seen.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.errors import FeatureError

__all__ = [
    "BOOL",
    "F64",
    "I64",
    "PLAIN_NUMBERS",
    "category_code",
    "check_finite",
    "code_column",
    "float_column",
    "key_texts",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]


#: Types a numeric kind takes without asking numpy (what a decoded Avro record holds).
PLAIN_NUMBERS = frozenset({int, float, bool, type(None)})


def float_column(what: str, column: Any, n: int) -> F64:
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


def check_finite(t: F64) -> None:
    if not np.isfinite(t).all():
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise FeatureError(
            f"event time {t[bad]!r} at position {bad} is not finite; times must be "
            "seconds since the epoch."
        )


def category_code(text: str) -> int:
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
        code = _CODE_CACHE[text] = category_code(text)
    return code


def code_column(what: str, column: Any, n: int) -> I64:
    try:
        # Fast path: every value a cached string. Only str keys are cached, so any other
        # value (1, 1.0 and True hash alike but are different categories) raises KeyError.
        codes = [_CODE_CACHE[v] for v in column]
    except (KeyError, TypeError):
        codes = [_code(v) for v in column]
    if len(codes) != n:
        raise FeatureError(f"{what} has {len(codes)} values, expected {n} like the keys.")
    return np.array(codes, dtype=np.int64)


def key_texts(keys: Sequence[Any]) -> list[str]:
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
