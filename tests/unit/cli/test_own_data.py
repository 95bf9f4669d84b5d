"""``riverline init`` then ``riverline check``: a newcomer's own data, without a broker."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from streams.cli.main import cli
from streams.serialization.catalog import SchemaCatalog
from streams.spec import load_spec

CSV = """order_id,customer_id,placed_at,amount,items,channel,is_returned
o-1,c-1,2024-05-01T10:00:00Z,12.5,1,web,false
o-2,c-2,2024-05-01T10:01:00Z,80.0,3,shop,true
o-3,c-1,2024-05-01T10:02:30Z,7.25,1,web,false
o-4,c-3,2024-05-01T10:03:00Z,45.0,2,web,
o-5,c-2,2024-05-01T10:04:00Z,19.9,1,app,false
"""

JSONL = "\n".join(
    json.dumps({"device": f"d{i % 2}", "ts": 1714557600000 + i, "temp": 20.5 + i, "watts": 3.0 * i})
    for i in range(6)
)


def _run(tmp_path: Path, *args: str) -> Result:
    env = {
        "RIVERLINE_SCHEMAS_DIR": str(tmp_path / "schemas"),
        "RIVERLINE_PIPELINES_DIR": str(tmp_path / "pipelines"),
        "RIVERLINE_HOME": str(tmp_path / "home"),
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.mark.parametrize(
    ("sample", "text", "extra", "expected"),
    [
        ("orders.csv", CSV, (), ("order_id", "placed_at", "customer_id", "is_returned")),
        ("power.jsonl", JSONL, ("--target", "watts"), ("event_id", "ts", "device", "watts")),
    ],
)
def test_init_writes_a_schema_and_spec_that_check_passes_and_that_load(
    tmp_path: Path, sample: str, text: str, extra: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    (tmp_path / sample).write_text(text)
    name = sample.split(".")[0]
    result = _run(tmp_path, "init", name, "--sample", str(tmp_path / sample), *extra)
    assert result.exit_code == 0, result.output
    assert "check:" in result.output
    spec_path = tmp_path / "pipelines" / f"{name}.toml"
    checked = _run(tmp_path, "check", str(spec_path))
    assert checked.exit_code == 0, checked.output
    assert f"{spec_path}: no problems found" in checked.output
    spec = load_spec(spec_path, tmp_path / "schemas")
    assert (spec.id_field, spec.time_field, spec.key_field, spec.model.target) == expected
    latest = SchemaCatalog.load(tmp_path / "schemas").latest(name)
    assert latest.label.startswith(f"{name}/v1/")


def test_init_keeps_existing_files_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(CSV)
    sample = str(tmp_path / "orders.csv")
    assert _run(tmp_path, "init", "orders", "--sample", sample).exit_code == 0
    spec_path = tmp_path / "pipelines" / "orders.toml"
    spec_path.write_text("# mine\n")
    again = _run(tmp_path, "init", "orders", "--sample", sample)
    assert again.exit_code == 1
    assert "pass --force" in again.output
    assert spec_path.read_text() == "# mine\n"
    assert _run(tmp_path, "init", "orders", "--sample", sample, "--force").exit_code == 0
    assert spec_path.read_text().startswith("# Written by `riverline init`")


def test_check_lists_every_problem_one_line_each(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(CSV)
    assert _run(tmp_path, "init", "orders", "--sample", str(tmp_path / "orders.csv")).exit_code == 0
    spec_path = tmp_path / "pipelines" / "orders.toml"
    text = spec_path.read_text().replace('"items"', '"itemz"')
    text = text.replace("linear_model.LogisticRegression", "linear_model.LinearRegression")
    spec_path.write_text(text + '\n[drift]\ndetector = "ADWYN"\n')
    result = _run(tmp_path, "check", str(spec_path))
    assert result.exit_code == 1
    problems = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(problems) == 3, result.output
    assert "'itemz' is not a field of" in problems[0]
    assert "did you mean 'items'?" in problems[0]
    assert "unknown drift detector 'ADWYN'" in problems[1]
    assert "LinearRegression cannot do task 'binary'" in problems[2]
    assert all(str(spec_path) in line for line in problems)


def test_check_reports_an_unknown_key_without_going_further(tmp_path: Path) -> None:
    spec_path = tmp_path / "p.toml"
    spec_path.write_text('[pipeline]\nname = "p"\nsubject = "p"\npartitons = 2\n')
    result = _run(tmp_path, "check", str(spec_path))
    assert result.exit_code == 1
    assert "unknown key 'partitons' (did you mean 'partitions'?)" in result.output


def test_produce_from_a_file_refuses_dataset_options(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text(CSV)
    assert _run(tmp_path, "init", "orders", "--sample", str(tmp_path / "orders.csv")).exit_code == 0
    spec = str(tmp_path / "pipelines" / "orders.toml")
    result = _run(tmp_path, "produce", "--pipeline", spec, "--from", "x.csv", "--format", "avro")
    assert result.exit_code == 1
    assert "--from sends JSON events" in result.output


def test_init_from_parquet_reads_timestamps_whatever_their_name(tmp_path: Path) -> None:
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    table = pa.table(
        {
            "visit_id": [f"v{i}" for i in range(4)],
            "seen": [when + dt.timedelta(seconds=i) for i in range(4)],
            "pages": [1, 3, 2, 8],
            "is_buyer": [False, True, False, True],
        }
    )
    pq.write_table(table, tmp_path / "visits.parquet")
    made = _run(tmp_path, "init", "visits", "--sample", str(tmp_path / "visits.parquet"))
    assert made.exit_code == 0, made.output
    spec_path = tmp_path / "pipelines" / "visits.toml"
    assert _run(tmp_path, "check", str(spec_path)).exit_code == 0
    spec = load_spec(spec_path, tmp_path / "schemas")
    assert (spec.id_field, spec.time_field, spec.model.task, spec.model.inputs) == (
        "visit_id",
        "seen",
        "binary",
        ("pages",),
    )
