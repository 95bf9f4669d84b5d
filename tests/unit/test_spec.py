from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from streams.errors import SpecError
from streams.settings import REPO_ROOT
from streams.spec import load_spec, parse_spec
from streams.spec_keys import SPEC_TABLES, keys_of

PHISHING = REPO_ROOT / "pipelines" / "phishing.toml"


def test_phishing_spec_loads_with_nine_raw_inputs() -> None:
    spec = load_spec(PHISHING)
    assert spec.name == "phishing"
    assert spec.subject == "phishing"
    assert spec.partitions == 1
    assert len(spec.model.inputs) == 9
    assert spec.model.target == "is_phishing"
    assert spec.label == f"phishing@{spec.hash}"
    assert len(spec.hash) == 12


def test_topics_follow_the_design_names_and_namespace() -> None:
    topics = load_spec(PHISHING).topics("t1.")
    assert topics.raw == "t1.phishing.raw"
    assert topics.events == "t1.phishing.events"
    assert topics.features == "t1.phishing.features"
    assert topics.predictions == "t1.phishing.predictions"
    assert topics.labels == "t1.phishing.labels"


def test_hash_changes_when_the_spec_changes() -> None:
    spec = load_spec(PHISHING)
    source = dict(spec.source)
    source["model"] = dict(source["model"], inputs=["https"])
    assert parse_spec(source).hash != spec.hash
    assert parse_spec(dict(spec.source)).hash == spec.hash


def test_missing_file_says_where_to_look(tmp_path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pipeline]\nname='Bad Name'\nsubject='s'\n[model]\n", "must match"),
        ("[pipeline]\nname='p'\n", "missing 'subject'"),
        (
            "[pipeline]\nname='p'\nsubject='s'\n[model]\nname='m'\ntask='cluster'\n"
            "inputs=[]\nsteps=[]\n",
            "task 'cluster' is not one of",
        ),
        ("not toml [", "not valid TOML"),
    ],
)
def test_invalid_specs_fail_with_a_clear_message(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message):
        load_spec(path)


# Strict specs: unknown keys, missing targets, field references ------------------------

SENSOR = REPO_ROOT / "pipelines" / "sensor.toml"
SCHEMAS = REPO_ROOT / "schemas"

#: A spec that sets every key the reference lists (streams.spec_keys), each to a valid value.
FULL = """
[pipeline]
name = "full"
subject = "sensor"
description = "every key"
partitions = 2
dataset = ""
id_field = "event_id"
time_field = "event_time"
key_field = "sensor_id"
mode = "single"

[features]
name = "full_features"
allowed_lateness = 60.0
late_policy = "dead_letter"
key_ttl = 3600.0
max_keys = 1000
[[features.derived]]
name = "temperature_ewm"
kind = "ewm_mean"
field = "temperature"
half_life = 60.0

[model]
name = "lr"
task = "regression"
target = "power"
inputs = ["temperature", "temperature_ewm"]
[[model.steps]]
estimator = "preprocessing.StandardScaler"
params = {}
[[model.steps]]
estimator = "linear_model.LinearRegression"

[[shadow]]
name = "tree"
task = "regression"
target = "power"
inputs = ["humidity"]
[[shadow.steps]]
estimator = "tree.HoeffdingTreeRegressor"

[promotion]
metric = "mae"
margin = 0.1
window = 100
enabled = false

[drift]
detector = "ADWIN"
action = "none"
params = {}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_every_bundled_pipeline_loads_strictly_against_its_schema() -> None:
    for path in sorted((REPO_ROOT / "pipelines").glob("*.toml")):
        assert load_spec(path, SCHEMAS).path == path


def test_a_spec_setting_every_key_of_the_reference_loads(tmp_path: Path) -> None:
    source = tomllib.loads(FULL)
    for table in SPEC_TABLES:
        if table.header in ("(top level)", "[[model.steps]], [[shadow.steps]]", "[[shadow]]"):
            continue
        section = source[table.header.strip("[]")]
        assert set(section) == set(table.names), table.header
    assert set(source) == set(keys_of("(top level)"))
    assert set(source["model"]["steps"][0]) == set(keys_of("[[model.steps]], [[shadow.steps]]"))
    spec = load_spec(_write(tmp_path, FULL), SCHEMAS)
    assert (spec.partitions, spec.key_field, spec.promotion.window) == (2, "sensor_id", 100)
    assert spec.shadows[0].inputs == ("humidity",)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("partitions = 2", "partitons = 4", r"\[pipeline\]: unknown key 'partitons' \(did you "),
        (
            'key_field = "sensor_id"',
            'keyfield = "sensor_id"',
            r"'keyfield' \(did you mean 'key_field'\?\)",
        ),
        ("[promotion]", "[promotoin]", r"unknown key 'promotoin' \(did you mean 'promotion'\?\)"),
        ('task = "regression"\ntarget', 'tsak = "regression"\ntarget', r"'tsak' \(did you"),
        ("params = {}\n[[model", "parms = {}\n[[model", r"steps #1: unknown key 'parms'"),
        ("margin = 0.1", "margn = 0.1", r"\[promotion\]: unknown key 'margn'"),
        ('action = "none"', 'acton = "none"', r"\[drift\]: unknown key 'acton'"),
        ("max_keys = 1000", "max_key = 1000", r"\[features\]: unknown key 'max_key' \(did you "),
        ("half_life = 60.0", "halflife = 60.0", r"unknown parameter 'halflife' \(did you mean"),
        ('target = "power"\ninputs = ["temp', 'inputs = ["temp', r"\[model\]: missing 'target'"),
        ("partitions = 2", "partitions = true", "partitions must be a positive integer"),
        ('id_field = "event_id"', 'id_field = ""', "id_field must name a field"),
        ('key_field = "sensor_id"', "key_field = 3", "'key_field' must be str"),
    ],
)
def test_a_mistake_is_an_error_naming_the_key_and_the_fix(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in FULL
    with pytest.raises(SpecError, match=message):
        load_spec(_write(tmp_path, FULL.replace(old, new, 1)))


def test_an_anomaly_model_needs_no_target(tmp_path: Path) -> None:
    text = FULL.replace('task = "regression"\ntarget = "power"\n', 'task = "anomaly"\n', 1)
    text = text.replace("[[shadow]]", "[[shadow_]]").split("[[shadow_]]")[0]
    text = text.replace("linear_model.LinearRegression", "anomaly.HalfSpaceTrees")
    spec = load_spec(_write(tmp_path, text), SCHEMAS)
    assert (spec.model.task, spec.model.target) == ("anomaly", "")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"temperature", "temperature_ewm"', '"temperatur"', r"inputs: 'temperatur' is not a "),
        ('field = "temperature"', 'field = "temp"', r"\[features\] derived 'temperature_ewm'"),
        ('target = "power"', 'target = "watts"', r"target: 'watts' is not a field of "),
        ('key_field = "sensor_id"', 'key_field = "sensor"', r"key_field: 'sensor' is not a"),
        ('time_field = "event_time"', 'time_field = "status"', "'status' .* is not a number"),
        ('["humidity"]', '["humidity", "power"]', r"'power' is the target, which models never"),
        ('name = "temperature_ewm"', 'name = "humidity"', "rename the derived feature"),
    ],
)
def test_fields_the_schema_lacks_are_errors_when_the_spec_loads(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert old in FULL
    path = _write(tmp_path, FULL.replace(old, new, 1))
    with pytest.raises(SpecError, match=message):
        load_spec(path, SCHEMAS)


def test_a_misspelt_input_names_the_schema_and_the_nearest_field(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL.replace('"temperature", "temperature_ewm"', '"humidty"'))
    with pytest.raises(SpecError) as err:
        load_spec(path, SCHEMAS)
    [line] = str(err.value).splitlines()
    assert line == (
        f"{path} [model] 'lr' inputs: 'humidty' is not a field of {SCHEMAS / 'sensor' / 'v2.avsc'}"
        " nor a derived feature; did you mean 'humidity'? Fix the spec or add the field to "
        "the schema."
    )


def test_every_missing_field_is_listed_one_per_line(tmp_path: Path) -> None:
    text = FULL.replace('"temperature", "temperature_ewm"', '"a1", "b2"').replace(
        'target = "power"', 'target = "c3"', 1
    )
    with pytest.raises(SpecError) as err:
        load_spec(_write(tmp_path, text), SCHEMAS)
    lines = str(err.value).splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == ["'c3'", "'a1'", "'b2'"]


def test_a_subject_without_a_schema_says_how_to_make_one(tmp_path: Path) -> None:
    path = _write(tmp_path, FULL.replace('subject = "sensor"', 'subject = "nothing"'))
    with pytest.raises(SpecError, match="riverline init NAME --sample FILE"):
        load_spec(path, SCHEMAS)
    assert load_spec(path).subject == "nothing"  # no catalog given: fields not checked
