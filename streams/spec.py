"""Pipeline specs: one TOML file per pipeline, versioned by the hash of its content.

A spec names the schema subject, the topics' partitioning, the feature set and the model.
Its hash goes into every message Riverline writes (``rl.pipeline``), so a changed spec
never mixes silently with the old one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from streams.errors import SpecError
from streams.features.spec import parse_features
from streams.spec_keys import keys_of, nearest, unknown_keys

__all__ = [
    "DriftSpec",
    "ModelSpec",
    "PipelineSpec",
    "PipelineTopics",
    "PromotionPolicy",
    "field_problems",
    "latest_schema",
    "load_spec",
    "parse_spec",
]

_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_TASKS = ("binary", "multiclass", "regression", "anomaly")


@dataclass(frozen=True)
class ModelSpec:
    """What model to learn, from which inputs, towards which target."""

    name: str
    task: str
    target: str
    inputs: tuple[str, ...]
    steps: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class PromotionPolicy:
    """Promote the shadow when it beats the champion by ``margin`` over the last ``window``
    labels (on ``metric``: accuracy for classifiers, MAE for regressors)."""

    metric: str = "accuracy"
    margin: float = 0.02
    window: int = 500
    enabled: bool = False


@dataclass(frozen=True)
class DriftSpec:
    """A drift detector on each model's error stream, and what to do on an increase."""

    detector: str = "ADWIN"
    action: str = "none"  # none | reset | promote_shadow
    params: Mapping[str, Any] = field(default_factory=dict)


_DRIFT_ACTIONS = ("none", "reset", "promote_shadow")
_MODES = ("single", "decoupled")


@dataclass(frozen=True)
class PipelineTopics:
    """The pipeline's topic names (namespace already applied)."""

    raw: str
    events: str
    features: str
    predictions: str
    labels: str
    #: The learning log of a decoupled pipeline (one partition): serving workers append,
    #: the one learner reads.
    learn: str


@dataclass(frozen=True)
class PipelineSpec:
    """A parsed, validated pipeline spec."""

    name: str
    description: str
    subject: str
    partitions: int
    dataset: str
    id_field: str
    time_field: str
    key_field: str
    features: Mapping[str, Any]
    model: ModelSpec
    source: dict[str, Any] = field(repr=False, compare=False, hash=False)
    shadows: tuple[ModelSpec, ...] = ()
    promotion: PromotionPolicy = PromotionPolicy()
    drift: DriftSpec = DriftSpec()
    path: Path | None = None
    #: ``single``: one worker (or several, each its partitions' learner) predicts and
    #: learns in one pass; ``decoupled``: serving workers predict with the versions one
    #: learner publishes, and append what it learns from to the learning log.
    mode: str = "single"

    @property
    def decoupled(self) -> bool:
        return self.mode == "decoupled"

    @functools.cached_property
    def hash(self) -> str:
        """12 hex digits of sha256 over the canonical JSON of the spec's content.

        Computed once (every event's lineage carries it); ``source`` is not changed after
        :func:`parse_spec`.
        """
        canonical = json.dumps(self.source, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @functools.cached_property
    def label(self) -> str:
        return f"{self.name}@{self.hash}"

    def topics(self, namespace: str = "") -> PipelineTopics:
        base = f"{namespace}{self.name}"
        return PipelineTopics(
            raw=f"{base}.raw",
            events=f"{base}.events",
            features=f"{base}.features",
            predictions=f"{base}.predictions",
            labels=f"{base}.labels",
            learn=f"{base}.learn",
        )

    def renamed(self, name: str) -> PipelineSpec:
        """The same spec under another pipeline name (tests use random names)."""
        source = json.loads(json.dumps(self.source))
        source["pipeline"]["name"] = name
        return replace(self, name=name, source=source)


def _require(table: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in table:
        raise SpecError(f"{where}: missing '{key}'. Add it to the spec.")
    value = table[key]
    if not isinstance(value, kind):
        raise SpecError(
            f"{where}: '{key}' must be {kind.__name__}, got {type(value).__name__} {value!r}."
        )
    return value


def _optional(table: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    """``table[key]`` if it is there (then of type ``kind``), else ``default``."""
    if key not in table:
        return default
    return _require(table, key, kind, where)


def _strict(table: Any, header: str, where: str) -> None:
    """Refuse a table that is not a table, or holds a key the spec does not know."""
    if not isinstance(table, dict):
        raise SpecError(f"{where}: {header} must be a table, got {table!r}.")
    problem = unknown_keys(table, keys_of(header), where)
    if problem:
        raise SpecError(problem)


def _target(table: Mapping[str, Any], task: str, like: ModelSpec | None, where: str) -> str:
    """The model's label field: required unless the task learns without labels."""
    if "target" in table:
        return str(_require(table, "target", str, where))
    if like is not None:
        return like.target
    if task == "anomaly":
        return ""
    raise SpecError(
        f'{where}: missing \'target\'. Add target = "<label field>", or target = "" when '
        "labels come only on the pipeline's labels topic."
    )


def _model_spec(table: Any, where: str, like: ModelSpec | None = None) -> ModelSpec:
    """A [model] or [[shadow]] table; a shadow inherits task, target and inputs."""
    _strict(table, "[[shadow]]" if like else "[model]", where)
    task = table.get("task", like.task if like else None)
    if not isinstance(task, str) or task not in _TASKS:
        raise SpecError(f"{where}: task {task!r} is not one of {', '.join(_TASKS)}.")
    inputs = table.get("inputs", list(like.inputs) if like else None)
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise SpecError(f"{where}: missing 'inputs' (a list of field names). Add it to the spec.")
    steps = _require(table, "steps", list, where)
    if not steps:
        raise SpecError(f"{where}: at least one [[model.steps]] is needed.")
    for i, step in enumerate(steps):
        _strict(step, "[[model.steps]], [[shadow.steps]]", f"{where} steps #{i + 1}")
    return ModelSpec(
        name=_require(table, "name", str, where),
        task=task,
        target=_target(table, task, like, where),
        inputs=tuple(inputs),
        steps=tuple(steps),
    )


def _pipeline_table(source: dict[str, Any], where: str) -> dict[str, Any]:
    """The [pipeline] table, checked, defaults filled in."""
    _strict(source, "(top level)", where)
    table = _require(source, "pipeline", dict, where)
    where = f"{where} [pipeline]"
    _strict(table, "[pipeline]", where)
    name = _require(table, "name", str, where)
    if not _NAME.match(name):
        raise SpecError(
            f"{where}: name {name!r} must match {_NAME.pattern} "
            "(lowercase letters, digits, '_' or '-'; it prefixes topic names)."
        )
    partitions = table.get("partitions", 1)
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise SpecError(f"{where}: partitions must be a positive integer, got {partitions!r}.")
    mode = table.get("mode", "single")
    if mode not in _MODES:
        raise SpecError(
            f"{where}: mode {mode!r} is not one of {', '.join(_MODES)} (single: one "
            "pass predicts and learns; decoupled: serving workers and one learner)."
        )
    text = {
        key: _optional(table, key, str, default, where)
        for key, default in (
            ("description", ""),
            ("dataset", ""),
            ("id_field", "event_id"),
            ("time_field", "event_time"),
            ("key_field", ""),
        )
    }
    for role in ("id_field", "time_field"):
        if not text[role]:
            raise SpecError(f"{where}: {role} must name a field; every event needs one.")
    return {
        "name": name,
        "subject": _require(table, "subject", str, where),
        "partitions": partitions,
        "mode": mode,
        **text,
    }


def _features_table(source: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    """The [features] table, validated (streams.features.spec); a default one if absent."""
    features: dict[str, Any] = source.get("features", {"name": f"{name}_features", "derived": []})
    try:
        parse_features(features)
    except SpecError as exc:
        raise SpecError(f"{where} {exc}") from exc
    return features


def parse_spec(source: dict[str, Any], path: Path | None = None) -> PipelineSpec:
    """Validate a spec already read from TOML: every key known, every value of its type.

    Raises
    ------
    SpecError
        Naming the table and key, and what to write instead (the nearest valid key for
        an unknown one).
    """
    where = str(path) if path else "spec"
    pipeline = _pipeline_table(source, where)
    features = _features_table(source, pipeline["name"], where)
    model = _model_spec(_require(source, "model", dict, where), f"{where} [model]")
    shadows = source.get("shadow", [])
    if not isinstance(shadows, list):
        raise SpecError(f"{where}: shadow models are [[shadow]] tables.")
    shadow_specs = tuple(
        _model_spec(t, f"{where} [[shadow]] #{i + 1}", model) for i, t in enumerate(shadows)
    )
    names = [model.name, *(m.name for m in shadow_specs)]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}: model names must be unique, got {names}.")
    policy, drift_spec = _policies(source, where)
    return PipelineSpec(
        **pipeline,
        features=features,
        model=model,
        shadows=shadow_specs,
        promotion=policy,
        drift=drift_spec,
        source=source,
        path=path,
    )


def _policies(source: dict[str, Any], where: str) -> tuple[PromotionPolicy, DriftSpec]:
    """The spec's [promotion] and [drift] tables."""
    promotion = source.get("promotion", {})
    drift = source.get("drift", {})
    _strict(promotion, "[promotion]", f"{where} [promotion]")
    _strict(drift, "[drift]", f"{where} [drift]")
    try:
        policy = (
            PromotionPolicy(**{"enabled": True, **promotion}) if promotion else PromotionPolicy()
        )
        drift_spec = DriftSpec(**drift)
    except TypeError as exc:
        raise SpecError(
            f"{where}: [promotion] takes metric, margin, window, enabled; [drift] takes "
            f"detector, action, params ({exc})."
        ) from exc
    if drift_spec.action not in _DRIFT_ACTIONS:
        valid = ", ".join(_DRIFT_ACTIONS)
        raise SpecError(f"{where} [drift]: action {drift_spec.action!r} is not one of {valid}.")
    return policy, drift_spec


def latest_schema(schemas_dir: Path, subject: str) -> tuple[Path, dict[str, Any]]:
    """The newest ``schemas_dir/<subject>/v<N>.avsc`` and its JSON.

    Raises
    ------
    SpecError
        If the subject has no version there, or the newest is not a JSON record.
    """
    folder = Path(schemas_dir) / subject
    versions = sorted(
        (int(m.group(1)), p)
        for p in (folder.iterdir() if folder.is_dir() else ())
        if (m := _VERSION_FILE.fullmatch(p.name))
    )
    if not versions:
        raise SpecError(
            f"subject {subject!r} has no schema: no {folder}/v1.avsc. Write one (`riverline "
            "init NAME --sample FILE` infers it from your data) or fix [pipeline] subject."
        )
    path = versions[-1][1]
    try:
        schema = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(f"schema {path} cannot be read as JSON: {exc}") from exc
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        raise SpecError(f"schema {path} is not an Avro record (no 'fields' list); fix it.")
    return path, schema


def _derived_fields(features: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """(derived feature names, (entry name, raw field read) pairs) of a [features] table."""
    names: list[str] = []
    reads: list[tuple[str, str]] = []
    for entry in features.get("derived", []):
        names.append(str(entry.get("name")))
        fields = entry.get("fields", [entry["field"]] if "field" in entry else [])
        reads.extend((str(entry.get("name")), str(f)) for f in fields)
    return names, reads


def _numeric_non_null(ftype: Any) -> bool:
    """A field type every event holds a number in (epoch milliseconds for a time)."""
    if isinstance(ftype, dict):
        ftype = ftype.get("type")
    return ftype in ("int", "long", "float", "double")


def field_problems(spec: PipelineSpec, schema: Mapping[str, Any], label: str) -> list[str]:
    """Each field the spec names that the schema (an Avro record's JSON) lacks, one line each.

    ``label`` names the schema in the messages (its file). The id, time and key fields,
    every model's target and inputs and the raw fields the derived features read must be
    fields of the schema; inputs may also name derived features.
    """
    fields = {str(f.get("name")): f.get("type") for f in schema.get("fields", [])}
    derived, reads = _derived_fields(spec.features)
    where = str(spec.path) if spec.path else "spec"
    problems: list[str] = []

    def check(what: str, name: str, also: list[str] | None = None) -> None:
        if name in fields or name in (also or []):
            return
        guess = nearest(name, [*fields, *(also or [])])
        hint = f"; did you mean {guess!r}?" if guess else ""
        nor = " nor a derived feature" if also is not None else ""
        problems.append(
            f"{where} {what}: {name!r} is not a field of {label}{nor}{hint} "
            "Fix the spec or add the field to the schema."
        )

    roles = [("id_field", spec.id_field), ("time_field", spec.time_field)]
    for role, name in [*roles, ("key_field", spec.key_field)]:
        if name:
            check(f"[pipeline] {role}", name)
    if spec.time_field in fields and not _numeric_non_null(fields[spec.time_field]):
        problems.append(
            f"{where} [pipeline] time_field: {spec.time_field!r} of {label} is not a number "
            'every event holds; make it {"type": "long", "logicalType": "timestamp-millis"}.'
        )
    for entry, raw in reads:
        check(f"[features] derived {entry!r}", raw)
    problems.extend(
        f"{where} [features] derived {name!r}: also a field of {label}; rename the derived "
        "feature so it does not hide the raw value."
        for name in derived
        if name in fields
    )
    for header, model in [("[model]", spec.model), *(("[[shadow]]", m) for m in spec.shadows)]:
        if model.target:
            check(f"{header} {model.name!r} target", model.target)
        for name in model.inputs:
            check(f"{header} {model.name!r} inputs", name, derived)
        role_of = {spec.id_field: "id_field", spec.time_field: "time_field"}
        role_of[model.target] = "target"
        problems.extend(
            f"{where} {header} {model.name!r} inputs: {name!r} is the {role_of[name]}, which "
            "models never see; remove it from inputs."
            for name in model.inputs
            if name and name in role_of
        )
    return problems


def load_spec(path: Path | str, schemas_dir: Path | None = None) -> PipelineSpec:
    """Read and validate a pipeline spec file.

    With ``schemas_dir`` (the catalog root, ``Settings.schemas_dir``) every field the
    spec names is checked against the newest schema of its subject (:func:`field_problems`).

    Raises
    ------
    SpecError
        If the file is missing, not TOML, not a valid spec, or names fields the schema
        lacks (every such field, one per line).
    """
    path = Path(path)
    try:
        source = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(
            f"pipeline spec {path} does not exist. See pipelines/ for examples."
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"pipeline spec {path} is not valid TOML: {exc}") from exc
    spec = parse_spec(source, path)
    if schemas_dir is not None:
        schema_path, schema = latest_schema(schemas_dir, spec.subject)
        problems = field_problems(spec, schema, str(schema_path))
        if problems:
            raise SpecError("\n".join(problems))
    return spec
