"""The ``[features]`` table of a pipeline spec: its kinds and their parameters, validated.

:func:`parse_features` checks a table (the module docstring of
:mod:`streams.features.engine` says what it may hold) and returns a :class:`FeaturesSpec`
with defaults filled in; :data:`KINDS_BY_NAME` says, per kind, what it reads, which
parameters it takes and which per-key state arrays it keeps. Errors are
:class:`~streams.errors.SpecError` naming the entry and what it may say instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from streams.errors import SpecError
from streams.spec_keys import keys_of, nearest, unknown_keys

__all__ = [
    "DEFAULT_MAX_CATEGORIES",
    "DEFAULT_MAX_EVENTS",
    "KINDS",
    "KINDS_BY_NAME",
    "LATE_POLICIES",
    "MAX_BUFFER",
    "Derived",
    "FeaturesSpec",
    "Kind",
    "Param",
    "StateArray",
    "parse_features",
]

DEFAULT_MAX_EVENTS = 64
DEFAULT_MAX_CATEGORIES = 32
#: Upper bound of ``max_events`` / ``max_categories``: per-key state must stay small.
MAX_BUFFER = 4096

#: What ``late_policy`` may say about events later than ``allowed_lateness``.
LATE_POLICIES = ("process", "dead_letter")

#: The keys a ``[features]`` table may hold.
_SECTION_KEYS = keys_of("[features]")


@dataclass(frozen=True)
class Param:
    """A parameter of a kind: seconds or a count, with its default (None: required)."""

    name: str
    unit: Literal["seconds", "count"]
    default: float | int | None  # None: required

    def describe(self) -> str:
        what = "seconds > 0" if self.unit == "seconds" else f"integer 1..{MAX_BUFFER}"
        need = "required" if self.default is None else f"default {self.default}"
        return f"{self.name} ({what}, {need})"


@dataclass(frozen=True)
class StateArray:
    """One per-key state array: ``dtype``, row width (a parameter name, or scalar rows)."""

    name: str
    dtype: Literal["float64", "int64"]
    width: str | None
    fill: float


@dataclass(frozen=True)
class Kind:
    """A feature kind: what it reads, its parameters, its per-key state arrays."""

    name: str
    reads: Literal["field", "optional field", "nothing", "two fields"]
    params: tuple[Param, ...]
    state: tuple[StateArray, ...]
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


_WINDOW = Param("window", "seconds", None)
_MAX_EVENTS = Param("max_events", "count", DEFAULT_MAX_EVENTS)
_HALF_LIFE = Param("half_life", "seconds", None)
_MAX_CATEGORIES = Param("max_categories", "count", DEFAULT_MAX_CATEGORIES)
_RING = (
    StateArray("ring_times", "float64", "max_events", 0.0),
    StateArray("ring_values", "float64", "max_events", 0.0),
    StateArray("ring_len", "int64", None, 0),
)

KINDS_BY_NAME: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("window_count", "optional field", (_WINDOW, _MAX_EVENTS), _RING),
        Kind("window_sum", "field", (_WINDOW, _MAX_EVENTS), _RING),
        Kind("window_mean", "field", (_WINDOW, _MAX_EVENTS), _RING),
        Kind(
            "ewm_mean",
            "field",
            (_HALF_LIFE,),
            (
                StateArray("weight", "float64", None, 0.0),
                StateArray("mean", "float64", None, 0.0),
                StateArray("clock", "float64", None, math.nan),
            ),
        ),
        Kind(
            "ewm_var",
            "field",
            (_HALF_LIFE,),
            (
                StateArray("weight", "float64", None, 0.0),
                StateArray("mean", "float64", None, 0.0),
                StateArray("m2", "float64", None, 0.0),
                StateArray("clock", "float64", None, math.nan),
            ),
        ),
        Kind("since_last", "nothing", (), (StateArray("clock", "float64", None, math.nan),)),
        Kind(
            "zscore",
            "field",
            (),
            (
                StateArray("count", "int64", None, 0),
                StateArray("mean", "float64", None, 0.0),
                StateArray("m2", "float64", None, 0.0),
            ),
        ),
        Kind("ratio", "two fields", (), ()),
        Kind(
            "frequency",
            "field",
            (_MAX_CATEGORIES,),
            (
                StateArray("table_codes", "int64", "max_categories", 0),
                StateArray("table_counts", "int64", "max_categories", 0),
                StateArray("table_len", "int64", None, 0),
                StateArray("totals", "int64", None, 0),
            ),
            categorical=True,
        ),
    )
}

#: The feature kinds a spec may use.
KINDS: tuple[str, ...] = tuple(sorted(KINDS_BY_NAME))


@dataclass(frozen=True)
class Derived:
    """One validated ``[[features.derived]]`` entry, defaults filled in."""

    name: str
    kind: Kind
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
class FeaturesSpec:
    """A validated ``[features]`` table, defaults filled in."""

    name: str
    derived: tuple[Derived, ...]
    allowed_lateness: float | None
    late_policy: str
    key_ttl: float | None
    max_keys: int | None


def parse_features(section: Any) -> FeaturesSpec:
    """Validate a ``[features]`` table.

    Raises
    ------
    SpecError
        Naming the bad key or entry, and the valid kinds or that kind's valid parameters.
    """
    if not isinstance(section, Mapping):
        raise SpecError(f"[features] must be a table with name and derived, got {section!r}.")
    problem = unknown_keys(dict(section), _SECTION_KEYS, "[features]")
    if problem:
        raise SpecError(problem)
    lateness, policy = _late_rules(section)
    key_ttl, max_keys = _key_bounds(section)
    name = section.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError('[features]: needs name = "<feature set name>" (a non-empty string).')
    return FeaturesSpec(name, _derived(section), lateness, policy, key_ttl, max_keys)


def _is_seconds(value: Any) -> bool:
    """A finite number that is not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _late_rules(section: Mapping[str, Any]) -> tuple[float | None, str]:
    """(allowed_lateness, late_policy) of a table."""
    lateness = section.get("allowed_lateness")
    if lateness is not None and (not _is_seconds(lateness) or lateness < 0):
        raise SpecError(f"[features]: allowed_lateness must be seconds >= 0, got {lateness!r}.")
    policy = section.get("late_policy", "process")
    if policy not in LATE_POLICIES:
        raise SpecError(
            f"[features]: late_policy must be one of {', '.join(LATE_POLICIES)}, got {policy!r}."
        )
    if policy != "process" and lateness is None:
        raise SpecError(f'[features]: late_policy = "{policy}" needs allowed_lateness (seconds).')
    return (None if lateness is None else float(lateness)), str(policy)


def _key_bounds(section: Mapping[str, Any]) -> tuple[float | None, int | None]:
    """(key_ttl, max_keys) of a table."""
    key_ttl = section.get("key_ttl")
    if key_ttl is not None and (not _is_seconds(key_ttl) or key_ttl <= 0):
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
    return (None if key_ttl is None else float(key_ttl)), max_keys


def _derived(section: Mapping[str, Any]) -> tuple[Derived, ...]:
    """The table's ``derived`` entries, validated in order."""
    entries = section.get("derived", [])
    if not isinstance(entries, list):
        raise SpecError(
            f"[features]: derived must be a list of tables ([[features.derived]]), got {entries!r}."
        )
    derived: list[Derived] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        d = _parse_entry(i, entry, seen)
        seen.add(d.name)
        derived.append(d)
    return tuple(derived)


def _parse_entry(index: int, entry: Any, seen: set[str]) -> Derived:
    where = f"[features] derived[{index}]"
    if not isinstance(entry, Mapping):
        raise SpecError(f"{where}: must be a table with name and kind, got {entry!r}.")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError(f'{where}: needs name = "<output feature name>" (a non-empty string).')
    if name in seen:
        raise SpecError(f"{where}: duplicate feature name {name!r}; names must be unique.")
    kind_name = entry.get("kind")
    kind = KINDS_BY_NAME.get(kind_name) if isinstance(kind_name, str) else None
    if kind is None:
        guess = nearest(kind_name, KINDS) if isinstance(kind_name, str) else None
        hint = f" (did you mean {guess!r}?)" if guess else ""
        raise SpecError(
            f"{where} ({name!r}): unknown kind {kind_name!r}{hint}; valid kinds: "
            f"{', '.join(KINDS)}."
        )
    where = f"{where} ({name!r}, kind {kind.name})"
    usage = f"{kind.describe()}; valid keys: {', '.join(kind.keys)}"
    unknown = sorted(str(k) for k in entry if k not in kind.keys)
    if unknown:
        guesses = [(k, nearest(k, kind.keys)) for k in unknown]
        named = ", ".join(f"{k!r} (did you mean {g!r}?)" if g else repr(k) for k, g in guesses)
        raise SpecError(f"{where}: unknown parameter {named}; {usage}.")
    fields = _entry_fields(kind, entry, where, usage)
    params = {
        p.name: _param_value(p, entry.get(p.name, p.default), where, usage) for p in kind.params
    }
    return Derived(name, kind, fields, params)


def _entry_error(where: str, what: str, usage: str) -> SpecError:
    return SpecError(f"{where}: {what}; {usage}.")


def _entry_fields(kind: Kind, entry: Mapping[str, Any], where: str, usage: str) -> tuple[str, ...]:
    """The raw fields an entry reads."""
    if kind.reads == "two fields":
        raw = entry.get("fields")
        if (
            not isinstance(raw, list)
            or len(raw) != 2
            or not all(isinstance(f, str) and f for f in raw)
        ):
            raise _entry_error(where, f"fields must list two field names, got {raw!r}", usage)
        return (raw[0], raw[1])
    if kind.reads in ("field", "optional field"):
        raw = entry.get("field")
        if raw is None and kind.reads == "optional field":
            return ()
        if isinstance(raw, str) and raw:
            return (raw,)
        raise _entry_error(where, f"field must name a raw field, got {raw!r}", usage)
    return ()


def _param_value(p: Param, value: Any, where: str, usage: str) -> float | int:
    """A parameter's value, checked."""
    if value is None:
        raise _entry_error(where, f"missing {p.name}", usage)
    if p.unit == "seconds":
        if not _is_seconds(value) or value <= 0:
            raise _entry_error(
                where, f"{p.name} must be a positive number of seconds, got {value!r}", usage
            )
        return float(value)
    if not (isinstance(value, int) and not isinstance(value, bool)) or not (
        1 <= value <= MAX_BUFFER
    ):
        raise _entry_error(
            where, f"{p.name} must be an integer from 1 to {MAX_BUFFER}, got {value!r}", usage
        )
    return int(value)
