"""Every key a pipeline spec may hold: its table, type, default and meaning.

:data:`SPEC_TABLES` is the one source of truth for the keys of a spec: the parser
(:mod:`streams.spec`, :mod:`streams.features.spec`) refuses any other key with
:func:`unknown_keys`, and ``docs/pipeline-reference.md`` is rendered from it
(:mod:`streams.cli.spec_reference`). The parameters of each feature kind live beside the
kinds (:data:`streams.features.spec.KINDS_BY_NAME`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DERIVED_TABLE",
    "SPEC_TABLES",
    "SpecKey",
    "SpecTable",
    "keys_of",
    "nearest",
    "unknown_keys",
]


@dataclass(frozen=True)
class SpecKey:
    """One key of a spec table. ``default`` is None for a required key."""

    name: str
    type: str
    default: str | None
    meaning: str


@dataclass(frozen=True)
class SpecTable:
    """A TOML table of the spec (``[pipeline]``, ``[[model.steps]]``, ...) and its keys."""

    header: str
    meaning: str
    keys: tuple[SpecKey, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)


_REQUIRED = None

_TOP = SpecTable(
    "(top level)",
    "The tables a spec may hold.",
    (
        SpecKey("pipeline", "table", _REQUIRED, "Names the pipeline, its schema and its fields."),
        SpecKey("features", "table", "no derived features", "Online features per entity key."),
        SpecKey("model", "table", _REQUIRED, "The champion model: task, target, inputs, steps."),
        SpecKey("shadow", "array of tables", "none", "Shadow models, scored beside the champion."),
        SpecKey("promotion", "table", "no promotion", "When a shadow replaces the champion."),
        SpecKey("drift", "table", "ADWIN, no action", "Drift detection on each model's errors."),
    ),
)

_PIPELINE = SpecTable(
    "[pipeline]",
    "What the pipeline is called, which schema its events follow, which fields play which role.",
    (
        SpecKey(
            "name",
            "string",
            _REQUIRED,
            "Lowercase letters, digits, `_` or `-`, at most 64; prefixes the topic names "
            "(`NAME.raw`, `NAME.predictions`, ...).",
        ),
        SpecKey(
            "subject",
            "string",
            _REQUIRED,
            "Schema subject: the events follow the newest `schemas/SUBJECT/vN.avsc`.",
        ),
        SpecKey("description", "string", '""', "One line for people."),
        SpecKey(
            "partitions",
            "integer >= 1",
            "1",
            "Partitions of the pipeline's topics; one keeps the prequential order.",
        ),
        SpecKey(
            "dataset",
            "string",
            '""',
            "Bundled dataset `riverline produce` replays when given no `--dataset` or `--from`.",
        ),
        SpecKey("id_field", "string", '"event_id"', "Schema field holding the unique event id."),
        SpecKey(
            "time_field",
            "string",
            '"event_time"',
            "Schema field holding the event time (long, `timestamp-millis`).",
        ),
        SpecKey(
            "key_field",
            "string",
            '""',
            'Schema field online features are kept per (the entity); `""`: one state for all.',
        ),
        SpecKey(
            "mode",
            "string",
            '"single"',
            "`single`: one pass predicts and learns; `decoupled`: serving workers and one "
            "learner (docs/scaling.md).",
        ),
    ),
)

_FEATURES = SpecTable(
    "[features]",
    "The feature set: raw fields pass through, derived features are computed per key.",
    (
        SpecKey(
            "name",
            "string",
            _REQUIRED,
            "Feature set name, in `rl.features` (with no `[features]` table: `NAME_features`).",
        ),
        SpecKey(
            "derived",
            "array of tables",
            "[]",
            "`[[features.derived]]` entries, one per derived feature (kinds below).",
        ),
        SpecKey(
            "allowed_lateness",
            "seconds >= 0",
            "unbounded",
            "How far behind its key's latest event time an event may be.",
        ),
        SpecKey(
            "late_policy",
            "string",
            '"process"',
            "`process` or `dead_letter` (needs `allowed_lateness`): what happens to later events.",
        ),
        SpecKey(
            "key_ttl",
            "seconds > 0",
            "never",
            "Event time a key may go without events before its state is evicted.",
        ),
        SpecKey("max_keys", "integer >= 1", "unbounded", "Keys kept per partition state."),
    ),
)

_MODEL = SpecTable(
    "[model]",
    "The champion: what it predicts, from which inputs, with which River estimators.",
    (
        SpecKey("name", "string", _REQUIRED, "Model name, in `rl.model` as `name@version`."),
        SpecKey(
            "task",
            "string",
            _REQUIRED,
            "`binary`, `multiclass`, `regression` or `anomaly`.",
        ),
        SpecKey(
            "target",
            "string",
            "required unless task is anomaly",
            'Schema field holding the label; `""`: labels come only on `NAME.labels`.',
        ),
        SpecKey(
            "inputs",
            "list of strings",
            _REQUIRED,
            "Schema fields and derived feature names the model reads; `[]`: every feature.",
        ),
        SpecKey(
            "steps",
            "array of tables",
            _REQUIRED,
            "`[[model.steps]]`, chained in order into one River pipeline.",
        ),
    ),
)

_STEPS = SpecTable(
    "[[model.steps]], [[shadow.steps]]",
    "One River estimator of a model's pipeline.",
    (
        SpecKey(
            "estimator",
            "string",
            _REQUIRED,
            "An allow-listed River estimator, `module.Class` (`riverline check` lists them).",
        ),
        SpecKey(
            "params",
            "table",
            "{}",
            "Its constructor's parameters: numbers, strings or booleans.",
        ),
    ),
)

_SHADOW = SpecTable(
    "[[shadow]]",
    "A shadow model; task, target and inputs default to the champion's.",
    tuple(
        SpecKey(k.name, k.type, "the champion's", k.meaning)
        if k.name in ("task", "target", "inputs")
        else k
        for k in _MODEL.keys
    ),
)

_PROMOTION = SpecTable(
    "[promotion]",
    "Present: the best shadow replaces the champion when it is better by a margin.",
    (
        SpecKey("metric", "string", '"accuracy"', "Metric compared (MAE for regressors)."),
        SpecKey("margin", "number", "0.02", "How much better the shadow must be."),
        SpecKey("window", "integer", "500", "Over how many of the latest labels."),
        SpecKey("enabled", "boolean", "true", "`false` keeps the table but promotes nothing."),
    ),
)

_DRIFT = SpecTable(
    "[drift]",
    "A drift detector on each model's error stream, and what to do on an increase.",
    (
        SpecKey("detector", "string", '"ADWIN"', "`ADWIN`, `PageHinkley` or `KSWIN` (River)."),
        SpecKey("action", "string", '"none"', "`none` (alert only), `reset` or `promote_shadow`."),
        SpecKey("params", "table", "{}", "The detector's parameters."),
    ),
)

#: The tables of a spec, in the order the reference lists them.
SPEC_TABLES: tuple[SpecTable, ...] = (
    _TOP,
    _PIPELINE,
    _FEATURES,
    _MODEL,
    _STEPS,
    _SHADOW,
    _PROMOTION,
    _DRIFT,
)

#: ``[[features.derived]]``: its keys depend on the kind (streams.features.spec).
DERIVED_TABLE = "[[features.derived]]"


def keys_of(header: str) -> tuple[str, ...]:
    """The valid keys of the table whose header is ``header``."""
    for table in SPEC_TABLES:
        if table.header == header:
            return table.names
    raise KeyError(header)


def nearest(word: str, valid: Iterable[str]) -> str | None:
    """The valid word closest to a misspelt ``word``, if one is close enough."""
    found = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_keys(table: object, valid: Iterable[str], where: str) -> str | None:
    """A message naming every key of ``table`` not in ``valid`` and the nearest valid
    key to each; None if there is none."""
    if not isinstance(table, dict):
        return None
    valid = tuple(valid)
    unknown = [str(k) for k in table if k not in valid]
    if not unknown:
        return None
    guesses = []
    for key in unknown:
        guess = nearest(key, valid)
        guesses.append(f"{key!r} (did you mean {guess!r}?)" if guess else repr(key))
    return (
        f"{where}: unknown key {', '.join(guesses)}; valid keys: {', '.join(valid)}. "
        "Fix the spelling or remove the key (docs/pipeline-reference.md lists every key)."
    )
