from __future__ import annotations

import pytest

from streams.errors import SpecError
from streams.settings import REPO_ROOT
from streams.spec import load_spec, parse_spec

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
