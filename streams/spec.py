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

__all__ = [
    "DriftSpec",
    "ModelSpec",
    "PipelineSpec",
    "PipelineTopics",
    "PromotionPolicy",
    "load_spec",
]

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


def _model_spec(table: Mapping[str, Any], where: str, like: ModelSpec | None = None) -> ModelSpec:
    """A [model] or [[shadow]] table; a shadow inherits task, target and inputs."""
    task = table.get("task", like.task if like else None)
    if not isinstance(task, str) or task not in _TASKS:
        raise SpecError(f"{where}: task {task!r} is not one of {', '.join(_TASKS)}.")
    inputs = table.get("inputs", list(like.inputs) if like else None)
    if not isinstance(inputs, list):
        raise SpecError(f"{where}: missing 'inputs' (a list of field names). Add it to the spec.")
    steps = _require(table, "steps", list, where)
    if not steps:
        raise SpecError(f"{where}: at least one [[model.steps]] is needed.")
    return ModelSpec(
        name=_require(table, "name", str, where),
        task=task,
        target=str(table.get("target", like.target if like else "")),
        inputs=tuple(str(i) for i in inputs),
        steps=tuple(steps),
    )


def parse_spec(source: dict[str, Any], path: Path | None = None) -> PipelineSpec:
    """Validate a spec already read from TOML."""
    where = str(path) if path else "spec"
    pipeline = _require(source, "pipeline", dict, where)
    name = _require(pipeline, "name", str, f"{where} [pipeline]")
    if not _NAME.match(name):
        raise SpecError(
            f"{where} [pipeline]: name {name!r} must match {_NAME.pattern} "
            "(lowercase letters, digits, '_' or '-'; it prefixes topic names)."
        )
    subject = _require(pipeline, "subject", str, f"{where} [pipeline]")
    partitions = pipeline.get("partitions", 1)
    if not isinstance(partitions, int) or partitions < 1:
        raise SpecError(f"{where} [pipeline]: partitions must be a positive integer.")
    mode = pipeline.get("mode", "single")
    if mode not in _MODES:
        raise SpecError(
            f"{where} [pipeline]: mode {mode!r} is not one of {', '.join(_MODES)} (single: one "
            "pass predicts and learns; decoupled: serving workers and one learner)."
        )
    features = source.get("features", {"name": f"{name}_features", "derived": []})
    if not isinstance(features, dict):
        raise SpecError(f"{where}: [features] must be a table.")
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
        name=name,
        description=str(pipeline.get("description", "")),
        subject=subject,
        partitions=partitions,
        dataset=str(pipeline.get("dataset", "")),
        id_field=str(pipeline.get("id_field", "event_id")),
        time_field=str(pipeline.get("time_field", "event_time")),
        key_field=str(pipeline.get("key_field", "")),
        features=features,
        model=model,
        shadows=shadow_specs,
        promotion=policy,
        drift=drift_spec,
        source=source,
        path=path,
        mode=mode,
    )


def _policies(source: dict[str, Any], where: str) -> tuple[PromotionPolicy, DriftSpec]:
    """The spec's [promotion] and [drift] tables."""
    promotion = source.get("promotion", {})
    drift = source.get("drift", {})
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


def load_spec(path: Path | str) -> PipelineSpec:
    """Read and validate a pipeline spec file."""
    path = Path(path)
    try:
        source = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(
            f"pipeline spec {path} does not exist. See pipelines/ for examples."
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"pipeline spec {path} is not valid TOML: {exc}") from exc
    return parse_spec(source, path)
