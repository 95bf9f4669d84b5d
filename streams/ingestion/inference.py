"""A schema and a pipeline spec guessed from a sample of the user's own data.

:func:`profile_columns` looks at sample rows (JSON values, or CSV text, which it types the
way :func:`streams.ingestion.user_files.csv_coercer` will); :func:`guess_pipeline` picks
the roles (event id, event time, entity key, target, inputs) and the task, and says what
the user should check; :func:`render_schema` and :func:`render_spec` write the
``schemas/NAME/v1.avsc`` and ``pipelines/NAME.toml`` that ``riverline init`` saves.

The guesses, column by column: types from the values (``boolean``, ``long``, ``double``,
``string``; ``["null", T]`` with a null default where a value was missing or empty);
ISO-8601 text, or integers named like a time (``*time*``, ``*ts``, ``*date*``) in the
range of epoch milliseconds, are ``timestamp-millis``. The id is a column named like an
id whose values are all different; the time, the timestamp column named most like one;
the key, a column named like an id whose values repeat; the target, ``--target`` or a
column named ``label``, ``target``, ``y``, ``class`` or ``is_*``. When the sample has no
id or time column, the schema gets ``event_id`` and ``event_time`` and
``riverline produce --from`` fills them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.errors import RiverlineError

__all__ = [
    "Column",
    "PipelineGuess",
    "avro_name",
    "guess_pipeline",
    "profile_columns",
    "render_schema",
    "render_spec",
    "schema_text",
]

_TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}
_INVALID = re.compile(r"[^A-Za-z0-9_]")
#: ``id``, ``order_id``, ``orderId``, ``user_key``, ``uuid``: named like an identifier.
_ID_LIKE = re.compile(r"(?i:(^|_)(id|uuid|key)$)|[a-z0-9](Id|ID)$")
#: Entities events are commonly about: a repeated column so named is the key too.
_ENTITY_LIKE = re.compile(
    r"user|customer|client|account|card|device|sensor|machine|host|store|session|merchant",
    re.IGNORECASE,
)
_TIME_LIKE = re.compile(r"time|(^|_)ts$|date|timestamp|created|updated", re.IGNORECASE)
_TARGET_NAMES = ("label", "target", "y", "class", "outcome")
_TARGET_LIKE = re.compile(r"^(is|has|was)_", re.IGNORECASE)
#: Epoch milliseconds from 1973 to 5138: integers outside are not read as times.
_MS_RANGE = (10**11, 10**14)
#: Distinct values remembered per column (beyond: "many").
_DISTINCT_CAP = 100_000
#: Most classes a multiclass target may have before it is taken for a number to regress.
_MAX_CLASSES = 20


def avro_name(column: str) -> str:
    """A column's name as an Avro field name (letters, digits and ``_``, not a digit first).

    >>> avro_name("unit price (EUR)")
    'unit_price__EUR_'
    """
    name = _INVALID.sub("_", column.strip()) or "_"
    return f"_{name}" if name[0].isdigit() else name


@dataclass
class Column:
    """What the sample says about one column."""

    name: str
    seen: int = 0
    nulls: int = 0
    kinds: set[str] = field(default_factory=set)
    distinct: set[Any] = field(default_factory=set)
    capped: bool = False

    def add(self, value: Any) -> None:
        self.seen += 1
        if value is None or value == "":
            self.nulls += 1
            return
        self.kinds.add(_kind(value))
        if not self.capped:
            self.distinct.add(json.dumps(value, sort_keys=True))
            self.capped = len(self.distinct) >= _DISTINCT_CAP

    @property
    def avro_type(self) -> str:
        """``boolean``, ``long``, ``double``, ``string`` or ``timestamp``."""
        kinds = self.kinds
        if not kinds:
            return "string"
        if kinds == {"timestamp"} or (kinds == {"long"} and self._epoch_ms()):
            return "timestamp"
        if kinds <= {"long", "double"}:
            return "double" if "double" in kinds else "long"
        return "boolean" if kinds == {"boolean"} else "string"

    def _epoch_ms(self) -> bool:
        values = [json.loads(v) for v in self.distinct]
        lo, hi = _MS_RANGE
        return bool(_TIME_LIKE.search(self.name)) and all(lo <= v < hi for v in values)

    @property
    def unique(self) -> bool:
        return not self.capped and self.nulls == 0 and len(self.distinct) == self.seen

    @property
    def nullable(self) -> bool:
        return self.nulls > 0


def _kind(value: Any) -> str:
    """The kind of one value: a CSV cell is typed from its text."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return _text_kind(value.strip())
    return "other"


def _text_kind(text: str) -> str:
    if text.lower() in ("true", "false"):
        return "boolean"
    for kind, parse in (("long", int), ("double", float)):
        try:
            parse(text)
        except ValueError:
            continue
        return kind
    if len(text) >= 10 and text[4] == "-" and text[7] == "-":
        try:
            datetime.fromisoformat(text)
        except ValueError:
            return "string"
        return "timestamp"
    return "string"


def profile_columns(rows: Iterable[Mapping[str, Any]]) -> dict[str, Column]:
    """Per column (in first-seen order), what the rows hold; a row without a column
    counts as a null there."""
    columns: dict[str, Column] = {}
    n = 0
    for row in rows:
        for name in row:
            if name not in columns:
                columns[name] = Column(name, seen=n, nulls=n)
        for name, column in columns.items():
            column.add(row.get(name))
        n += 1
    if not n:
        raise RiverlineError("the sample holds no rows; give a file with some of your events.")
    return columns


@dataclass
class PipelineGuess:
    """The roles and task guessed for a sample, and what the user should check."""

    name: str
    columns: dict[str, Column]
    id_field: str
    time_field: str
    key_field: str
    target: str
    task: str
    inputs: list[str]
    added: list[str]
    checks: list[str]

    def field_type(self, column: str) -> Any:
        """The Avro type of a column's field."""
        col = self.columns.get(column)
        if col is None:
            return "string" if column == self.id_field else _TIMESTAMP
        base: Any = {"timestamp": _TIMESTAMP}.get(col.avro_type, col.avro_type)
        if col.nullable and column not in (self.id_field, self.time_field):
            return ["null", base]
        return base


def _best(names: Iterable[str], score: Any) -> str:
    ranked = sorted((n for n in names if score(n) is not None), key=score)
    return ranked[0] if ranked else ""


def _pick_id(columns: Mapping[str, Column]) -> str:
    def score(name: str) -> int | None:
        col = columns[name]
        if not col.unique or col.avro_type not in ("string", "long"):
            return None
        if not _ID_LIKE.search(name):
            return None
        return ("event_id", "id").index(name) if name in ("event_id", "id") else 2

    return _best(columns, score)


def _pick_time(columns: Mapping[str, Column]) -> str:
    def score(name: str) -> int | None:
        if columns[name].avro_type != "timestamp":
            return None
        preferred = ("event_time", "timestamp", "time", "ts")
        return preferred.index(name) if name in preferred else 4

    return _best(columns, score)


def _pick_target(columns: Mapping[str, Column], target: str | None) -> str:
    if target is not None:
        if target not in columns:
            raise RiverlineError(
                f"--target {target!r} is not a column of the sample; its columns are "
                f"{', '.join(columns)}."
            )
        return target

    def score(name: str) -> int | None:
        low = name.lower()
        if low in _TARGET_NAMES:
            return _TARGET_NAMES.index(low)
        return len(_TARGET_NAMES) if _TARGET_LIKE.search(name) else None

    found = _best(columns, score)
    if not found:
        raise RiverlineError(
            "no column looks like the label (label, target, y, class, is_*): pass "
            f"--target COLUMN, one of {', '.join(columns)}."
        )
    return found


def _pick_key(columns: Mapping[str, Column], taken: set[str]) -> str:
    def score(name: str) -> int | None:
        col = columns[name]
        if name in taken or col.avro_type not in ("string", "long") or col.unique:
            return None
        if len(col.distinct) < 2:
            return None
        if _ID_LIKE.search(name):
            return -len(col.distinct)  # the finest entity first
        return 0 if _ENTITY_LIKE.search(name) else None

    return _best(columns, score)


def _task(column: Column) -> str:
    kind = column.avro_type
    if kind == "boolean":
        return "binary"
    values = {json.loads(v) for v in column.distinct}
    if kind == "long" and values <= {0, 1}:
        return "binary"
    if kind == "string" or (kind == "long" and len(values) <= _MAX_CLASSES):
        return "multiclass"
    return "regression"


def guess_pipeline(
    name: str, columns: dict[str, Column], target: str | None = None
) -> PipelineGuess:
    """The roles, task and inputs for a sample's columns (see the module docstring)."""
    columns = {avro_name(c): col for c, col in columns.items()}
    target_name = _pick_target(columns, None if target is None else avro_name(target))
    id_field = _pick_id({c: v for c, v in columns.items() if c != target_name}) or "event_id"
    time_field = _pick_time(columns) or "event_time"
    key_field = _pick_key(columns, {id_field, time_field, target_name})
    roles = {id_field, time_field, key_field, target_name}
    inputs = [
        c
        for c, col in columns.items()
        if c not in roles and col.avro_type in ("long", "double", "boolean")
    ]
    added = [f for f in (id_field, time_field) if f not in columns]
    guess = PipelineGuess(
        name=name,
        columns=columns,
        id_field=id_field,
        time_field=time_field,
        key_field=key_field,
        target=target_name,
        task=_task(columns[target_name]),
        inputs=inputs,
        added=added,
        checks=[],
    )
    guess.checks = _checks(guess)
    return guess


def _checks(guess: PipelineGuess) -> list[str]:
    """What the user should look at before running the pipeline."""
    checks = [
        f"target {guess.target!r} -> task {guess.task}: pass --target COLUMN if the label "
        "is another column, and set [model] task if the task is not right."
    ]
    fills = {guess.id_field: ("id", "a sequence id"), guess.time_field: ("time", "the send time")}
    for role in guess.added:
        what, value = fills[role]
        checks.append(
            f"the sample has no {what} column: the schema adds {role!r} and `riverline "
            f"produce --from` fills it with {value} (add the column if your events have one)."
        )
    if not guess.key_field:
        checks.append(
            "no entity key (a repeated id-like column): features are kept for all events "
            'together; set [pipeline] key_field = "<column>" if each entity has its own.'
        )
    strings = [
        c
        for c, col in guess.columns.items()
        if col.avro_type == "string" and c not in (guess.id_field, guess.key_field, guess.target)
    ]
    if strings:
        checks.append(
            f"text columns {', '.join(strings)} are not model inputs: add a "
            'preprocessing.OneHotEncoder step or a "frequency" derived feature to use them.'
        )
    nullable = [c for c in guess.inputs if guess.columns[c].nullable]
    if nullable:
        checks.append(
            f"inputs with missing values in the sample: {', '.join(nullable)}; the model "
            "sees those events without them."
        )
    if not guess.inputs:
        checks.append("no numeric column is left for inputs: add some to [model] inputs.")
    return checks


def render_schema(guess: PipelineGuess) -> dict[str, Any]:
    """The Avro record of the guessed events (``schemas/NAME/v1.avsc``)."""
    order = [*guess.added, *guess.columns]
    fields: list[dict[str, Any]] = []
    for column in order:
        ftype = guess.field_type(column)
        entry: dict[str, Any] = {"name": column, "type": ftype}
        if isinstance(ftype, list):
            entry["default"] = None
        role = {
            guess.id_field: "Unique event id.",
            guess.time_field: "When the event happened (epoch ms or ISO-8601 in JSON).",
            guess.key_field: "The entity online features are kept by.",
            guess.target: "The label, when it is known.",
        }.get(column)
        if role:
            entry["doc"] = role
        fields.append(entry)
    record = "".join(part.capitalize() for part in re.split(r"[_-]", guess.name)) or "Event"
    return {
        "type": "record",
        "name": f"{record}Event",
        "namespace": f"riverline.{guess.name.replace('-', '_')}",
        "doc": f"One {guess.name} event, inferred by riverline init from a sample.",
        "fields": fields,
    }


def schema_text(schema: Mapping[str, Any]) -> str:
    """A schema as the bundled ones are written: one field per line."""
    head = {k: v for k, v in schema.items() if k != "fields"}
    lines = [json.dumps(head, indent=2)[:-2] + ',\n  "fields": [']
    lines.append(",\n".join(f"    {json.dumps(f)}" for f in schema["fields"]))
    return "\n".join(lines) + "\n  ]\n}\n"


def _toml(value: Any) -> str:
    """A string or a list of strings as TOML (JSON's escapes are TOML's)."""
    return json.dumps(value)


def render_spec(guess: PipelineGuess) -> str:
    """The pipeline spec of the guess (``pipelines/NAME.toml``), commented."""
    estimator = {
        "binary": "linear_model.LogisticRegression",
        "multiclass": "linear_model.SoftmaxRegression",
        "regression": "linear_model.LinearRegression",
    }[guess.task]
    inputs = ",\n".join(f"  {_toml(i)}" for i in guess.inputs)
    return f"""# Written by `riverline init` from a sample: check the guesses, then run
# `riverline check pipelines/{guess.name}.toml`. docs/pipeline-reference.md lists every key.

[pipeline]
name = {_toml(guess.name)}
description = "{guess.name}: StandardScaler | {estimator.split(".")[1]}, from riverline init."
subject = {_toml(guess.name)}
partitions = 1            # one partition keeps the prequential order
id_field = {_toml(guess.id_field)}
time_field = {_toml(guess.time_field)}
key_field = {_toml(guess.key_field)}{"" if guess.key_field else "            # no entity key"}

[features]
name = {_toml(guess.name.replace("-", "_") + "_features")}

[model]
name = {_toml(guess.name + "-" + estimator.split(".")[1].lower())}
task = {_toml(guess.task)}
target = {_toml(guess.target)}
inputs = [
{inputs}
]

[[model.steps]]
estimator = "preprocessing.StandardScaler"

[[model.steps]]
estimator = {_toml(estimator)}
"""
