"""Guessing a schema and a spec from a sample of the user's data."""

from __future__ import annotations

import tomllib

import pytest

from streams.errors import RiverlineError
from streams.ingestion.inference import (
    guess_pipeline,
    profile_columns,
    render_schema,
    render_spec,
)
from streams.spec import field_problems, parse_spec

TS = {"type": "long", "logicalType": "timestamp-millis"}

#: CSV rows: every cell is text.
ORDERS = [
    {
        "order_id": f"o-{i}",
        "customer": f"c-{i % 3}",
        "placed_at": f"2024-05-01T10:0{i}:00Z",
        "amount": f"{10 + i}.5",
        "items": str(i % 4),
        "coupon": "" if i % 2 else "SPRING",
        "is_returned": "true" if i % 3 == 0 else "false",
    }
    for i in range(8)
]


def test_csv_text_is_typed_and_roles_are_guessed() -> None:
    guess = guess_pipeline("orders", profile_columns(ORDERS))
    assert (guess.id_field, guess.time_field, guess.key_field) == (
        "order_id",
        "placed_at",
        "customer",
    )
    assert (guess.target, guess.task, guess.inputs, guess.added) == (
        "is_returned",
        "binary",
        ["amount", "items"],
        [],
    )
    types = {f["name"]: f["type"] for f in render_schema(guess)["fields"]}
    assert types == {
        "order_id": "string",
        "customer": "string",
        "placed_at": TS,
        "amount": "double",
        "items": "long",
        "coupon": ["null", "string"],
        "is_returned": "boolean",
    }
    assert any("coupon" in line and "OneHotEncoder" in line for line in guess.checks)


def test_json_rows_without_id_or_time_get_them_added_and_a_regression_target() -> None:
    rows = [
        {"sensor": "s1", "reading_ts": 1714557600000 + i, "temp": 20.0 + i, "watts": i * 1.5}
        for i in range(5)
    ]
    rows[2]["watts"] = None
    del rows[3]["temp"]
    guess = guess_pipeline("power", profile_columns(rows), target="watts")
    assert (guess.id_field, guess.time_field, guess.added) == (
        "event_id",
        "reading_ts",
        ["event_id"],
    )
    assert (guess.key_field, guess.task, guess.inputs) == ("", "regression", ["temp"])
    fields = render_schema(guess)["fields"]
    assert fields[0] == {"name": "event_id", "type": "string", "doc": "Unique event id."}
    types = {f["name"]: f["type"] for f in fields}
    assert types["reading_ts"] == TS
    assert types["temp"] == ["null", "double"]
    assert types["watts"] == ["null", "double"]
    assert any("no id column" in line for line in guess.checks)


def test_the_rendered_spec_loads_and_names_only_schema_fields() -> None:
    guess = guess_pipeline("orders-2", profile_columns(ORDERS))
    spec = parse_spec(tomllib.loads(render_spec(guess)))
    assert (spec.name, spec.subject, spec.key_field) == ("orders-2", "orders-2", "customer")
    assert [s["estimator"] for s in spec.model.steps] == [
        "preprocessing.StandardScaler",
        "linear_model.LogisticRegression",
    ]
    assert field_problems(spec, render_schema(guess), "schema") == []


def test_column_names_become_avro_names() -> None:
    rows = [
        {"unit price": "1.5", "2nd": "3", "label": "a"},
        {"unit price": "2", "2nd": "4", "label": "b"},
    ]
    guess = guess_pipeline("shop", profile_columns(rows))
    assert guess.inputs == ["unit_price", "_2nd"]
    assert guess.task == "multiclass"


@pytest.mark.parametrize(
    ("target", "message"),
    [("nope", "--target 'nope' is not a column"), (None, "no column looks like the label")],
)
def test_a_missing_target_asks_for_one(target: str | None, message: str) -> None:
    rows = [{"a": 1, "b": 2.0}, {"a": 2, "b": 3.0}]
    with pytest.raises(RiverlineError, match=message):
        guess_pipeline("x", profile_columns(rows), target=target)


def test_an_empty_sample_is_refused() -> None:
    with pytest.raises(RiverlineError, match="no rows"):
        profile_columns([])


@pytest.mark.parametrize(
    ("column", "is_id"),
    [("id", True), ("orderId", True), ("Order_ID", True), ("uuid", True), ("paid", False)],
)
def test_an_id_is_a_unique_column_named_like_one(column: str, is_id: bool) -> None:
    rows = [{column: f"x{i}", "label": i % 2 == 0} for i in range(4)]
    guess = guess_pipeline("p", profile_columns(rows))
    assert guess.id_field == (column if is_id else "event_id")
