"""``riverline init NAME --sample FILE``: a schema and a pipeline spec for the user's data.

Reads up to ``--rows`` records of the sample (JSON lines, CSV or Parquet), guesses types
and roles (:mod:`streams.ingestion.inference`), writes ``<schemas>/NAME/v1.avsc`` and
``<pipelines>/NAME.toml`` (``RIVERLINE_SCHEMAS_DIR``, ``RIVERLINE_PIPELINES_DIR``), and
prints what it guessed and what to check. Existing files are kept unless ``--force``.
"""

from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streams.cli.commands import console, friendly, settings_of
from streams.errors import RiverlineError

if TYPE_CHECKING:
    from streams.ingestion.inference import PipelineGuess

__all__ = ["init"]


def _written_files(schema_path: Path, spec_path: Path, force: bool) -> None:
    existing = [p for p in (schema_path, spec_path) if p.exists()]
    if existing and not force:
        raise RiverlineError(
            f"{' and '.join(map(str, existing))} already exist: pass --force to overwrite, "
            "or choose another NAME."
        )


@click.command()
@click.argument("name")
@click.option(
    "--sample",
    required=True,
    help="Some of your events: JSON lines, CSV or Parquet file (or - for stdin).",
)
@click.option("--target", default=None, help="The label column (default: guessed).")
@click.option(
    "--input-format",
    type=click.Choice(["jsonl", "csv", "parquet"]),
    default=None,
    help="Format of the sample (default: from its name or first bytes).",
)
@click.option("--rows", type=int, default=10_000, show_default=True, help="Rows to look at.")
@click.option("--force", is_flag=True, help="Overwrite an existing schema and spec.")
@click.pass_context
@friendly
def init(
    ctx: click.Context,
    name: str,
    sample: str,
    target: str | None,
    input_format: str | None,
    rows: int,
    force: bool,
) -> None:
    """Write a schema and a pipeline spec guessed from a sample of your data."""
    from streams.ingestion.inference import (
        guess_pipeline,
        profile_columns,
        render_schema,
        render_spec,
        schema_text,
    )
    from streams.ingestion.user_files import read_rows
    from streams.spec import field_problems, parse_spec

    settings = settings_of(ctx)
    schema_path = settings.schemas_dir / name / "v1.avsc"
    spec_path = settings.pipelines_dir / f"{name}.toml"
    _written_files(schema_path, spec_path, force)
    read = list(itertools.islice(read_rows(sample, input_format), rows))
    good = [r.values for r in read if r.values is not None]
    guess = guess_pipeline(name, profile_columns(good), target)
    schema = render_schema(guess)
    text = render_spec(guess)
    spec = parse_spec(tomllib.loads(text), spec_path)  # refuses a NAME topics cannot take
    problems = field_problems(spec, schema, str(schema_path))
    if problems:  # the guesses contradict each other: a fault here, not in the sample
        raise RiverlineError("the guessed spec does not match its schema:\n" + "\n".join(problems))
    schema_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    schema_path.write_text(schema_text(schema))
    spec_path.write_text(text)
    _report(guess, schema, len(good), len(read) - len(good), schema_path, spec_path, sample)


def _report(
    guess: PipelineGuess,
    schema: dict[str, Any],
    used: int,
    unreadable: int,
    schema_path: Path,
    spec_path: Path,
    sample: str,
) -> None:
    """What was guessed, what to check, what to run next."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{guess.name}: guessed from {used:,} rows of {sample}")
    for column in ("field", "type", "role"):
        table.add_column(column)
    roles = {
        guess.id_field: "id",
        guess.time_field: "time",
        guess.key_field: "key",
        guess.target: f"target ({guess.task})",
        **{i: "input" for i in guess.inputs},
    }
    for entry in schema["fields"]:
        ftype = json.dumps(entry["type"])
        added = " (added)" if entry["name"] in guess.added else ""
        table.add_row(entry["name"], ftype, roles.get(entry["name"], "") + added)
    console.print(table)
    if unreadable:
        console.print(f"[yellow]{unreadable:,} lines of the sample could not be read[/]")
    console.print(
        f"wrote {schema_path}\nwrote {spec_path}\n\n[bold]check:[/]",
        highlight=False,
        soft_wrap=True,
    )
    for line in guess.checks:
        console.print(f"- {escape(line)}", highlight=False)
    console.print(
        f"\n[bold]next:[/]\n  riverline check {spec_path}\n"
        f"  riverline worker --pipeline {spec_path}\n"
        f"  riverline produce --pipeline {spec_path} --from {sample}\n"
        f"  riverline tail --pipeline {spec_path}",
        highlight=False,
        soft_wrap=True,
    )
