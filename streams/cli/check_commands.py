"""``riverline check PIPELINE``: everything a worker would refuse, found without a broker.

:func:`check_pipeline` returns every problem of a spec, one line each: the spec itself
(strict: unknown keys, types), the subject's schemas in the catalog (readable, compatible
versions), each model's River estimators (built, and of the kind the task needs), the
``[features]`` table (built as a feature set), and every field the spec names.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from streams.cli.commands import PIPELINE_FILE, console, err_console, friendly, settings_of
from streams.errors import RiverlineError
from streams.settings import Settings
from streams.spec import ModelSpec, PipelineSpec

__all__ = ["CheckResult", "check", "check_pipeline"]


@dataclass
class CheckResult:
    """What was checked (one line each) and every problem found (one line each)."""

    passed: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _task_problem(model: ModelSpec, estimator: Any, where: str) -> str | None:
    """A problem if the model's last step cannot do the model's task."""
    from river import base

    steps = getattr(estimator, "steps", None)
    last = list(steps.values())[-1] if isinstance(steps, dict) else estimator
    fits = {
        "binary": isinstance(last, base.Classifier),
        "multiclass": isinstance(last, base.Classifier),
        "regression": isinstance(last, base.Regressor),
        "anomaly": hasattr(last, "score_one"),
    }[model.task]
    if fits:
        return None
    return (
        f"{where} [model] {model.name!r}: the last step {type(last).__name__} cannot do task "
        f"{model.task!r}; end the steps with a "
        f"{'regressor' if model.task == 'regression' else 'classifier'} or change the task."
    )


def _check_models(spec: PipelineSpec, where: str, result: CheckResult) -> None:
    from streams.models.model import build_estimator

    if "drift" in spec.source:  # the default detector needs no check (nor River's import)
        from streams.models.drift import DriftMonitor

        try:
            DriftMonitor(spec.drift.detector, **spec.drift.params)
        except (RiverlineError, TypeError, ValueError) as exc:
            result.problems.append(f"{where} [drift]: {exc}")

    for model in (spec.model, *spec.shadows):
        try:
            estimator = build_estimator(model)
        except RiverlineError as exc:
            result.problems.append(f"{where} [model] {model.name!r}: {exc}")
            continue
        problem = _task_problem(model, estimator, where)
        if problem:
            result.problems.append(problem)
        else:
            steps = " | ".join(str(step.get("estimator")) for step in model.steps)
            result.passed.append(f"model {model.name}: {steps} ({model.task})")


def _check_schema(settings: Settings, spec: PipelineSpec, where: str, result: CheckResult) -> None:
    from streams.serialization.catalog import SchemaCatalog
    from streams.serialization.compat import check_catalog
    from streams.spec import field_problems, latest_schema

    try:
        catalog = SchemaCatalog.load(settings.schemas_dir)
        latest = catalog.latest(spec.subject)
        compat = [p for p in check_catalog(catalog) if p.subject == spec.subject]
        schema_path, schema = latest_schema(settings.schemas_dir, spec.subject)
    except RiverlineError as exc:
        result.problems.append(f"{where} [pipeline] subject {spec.subject!r}: {exc}")
        return
    result.problems.extend(str(p) for p in compat)
    fields = field_problems(spec, schema, str(schema_path))
    result.problems.extend(fields)
    if not compat:
        result.passed.append(f"schema {latest.label} ({len(latest.field_names)} fields)")
    if not fields:
        result.passed.append("fields: every field the spec names is in the schema")


def check_pipeline(settings: Settings, path: Path) -> CheckResult:
    """Every problem of the spec at ``path`` against the catalog in ``settings``."""
    from streams.features.engine import FeatureSet
    from streams.spec import load_spec

    result = CheckResult()
    try:
        spec = load_spec(path)
    except RiverlineError as exc:
        result.problems.extend(str(exc).splitlines())
        return result
    where = str(path)
    result.passed.append(f"spec {spec.label} ({spec.mode}, {spec.partitions} partition(s))")
    _check_schema(settings, spec, where, result)
    try:
        feature_set = FeatureSet.from_spec(spec.features)
    except RiverlineError as exc:
        result.problems.append(f"{where} {exc}")
    else:
        result.passed.append(f"features {feature_set.label} ({len(feature_set.outputs)} derived)")
    _check_models(spec, where, result)
    return result


@click.command()
@click.argument("pipeline", type=PIPELINE_FILE)
@click.pass_context
@friendly
def check(ctx: click.Context, pipeline: Path) -> None:
    """Validate a pipeline spec, its schema, estimators and field references (no broker).

    Exit 1 with one line per problem: where it is and what to do.
    """
    result = check_pipeline(settings_of(ctx), pipeline)
    for line in result.passed:
        console.print(f"[green]ok[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in result.problems:
        err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if result.problems:
        sys.exit(1)
    console.print(f"{pipeline}: no problems found", highlight=False, soft_wrap=True)
