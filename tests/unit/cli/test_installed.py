"""What an installed Riverline finds: its shipped data, the user's folders, its version.

The wheel itself is built and run in tests/integration/test_wheel.py; these check the
pieces without building: the folders setup.py copies into the package are the ones
``bundled_path`` answers, the schema catalog merges a user's folder with Riverline's own
records, ``--pipeline NAME`` finds a spec in the pipelines folder, and requirements.lock
pins what pyproject.toml allows.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import click
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from agents.internals import WRITTEN_FOR
from streams.cli.commands import PIPELINE_FILE
from streams.serialization.catalog import CatalogError, SchemaCatalog
from streams.settings import BUNDLED, REPO_ROOT, Settings, bundled_path

GAUGE = {
    "type": "record",
    "name": "Gauge",
    "namespace": "test",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "level", "type": "double"},
    ],
}


def _riverline(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=cwd,
        timeout=60,
        check=False,
    )


def _user_schemas(tmp_path: Path) -> Path:
    root = tmp_path / "my-schemas"
    (root / "gauge").mkdir(parents=True)
    (root / "gauge" / "v1.avsc").write_text(json.dumps(GAUGE))
    return root


def test_setup_py_copies_the_folders_bundled_path_answers() -> None:
    setup = runpy.run_path(str(REPO_ROOT / "setup.py"), run_name="not_main")
    assert setup["BUNDLED"] == BUNDLED
    for name, source in BUNDLED.items():
        assert (REPO_ROOT / source).is_dir()
        # From the source checkout (no streams/bundled/): the checkout's folders.
        assert bundled_path(name) == REPO_ROOT / source


def test_the_broker_pom_and_log4j_config_ship() -> None:
    assert {"pom.xml", "log4j2.yaml"} <= {p.name for p in bundled_path("kafka").iterdir()}


def test_a_users_schema_folder_gets_riverlines_own_records(tmp_path: Path) -> None:
    catalog = SchemaCatalog.load(_user_schemas(tmp_path))
    shipped = SchemaCatalog.load(bundled_path("schemas"))
    assert catalog.latest("gauge").field_names == ["event_id", "level"]
    assert catalog.record("prediction") == shipped.record("prediction")
    own = [s for s in shipped.subjects() if s.startswith("riverline.")]
    assert catalog.subjects() == sorted(["gauge", *own])


def test_a_copy_of_the_own_records_in_a_users_folder_is_accepted(tmp_path: Path) -> None:
    root = _user_schemas(tmp_path)
    shutil.copytree(bundled_path("schemas") / "riverline", root / "riverline")
    catalog = SchemaCatalog.load(root)
    assert catalog.record("label") == SchemaCatalog.load(bundled_path("schemas")).record("label")


def test_a_users_folder_cannot_redefine_an_own_record(tmp_path: Path) -> None:
    root = _user_schemas(tmp_path)
    (root / "riverline").mkdir()
    (root / "riverline" / "label.avsc").write_text(json.dumps({**GAUGE, "name": "Label"}))
    with pytest.raises(CatalogError, match=r"redefines Riverline's own record riverline\.label"):
        SchemaCatalog.load(root)


def _convert(value: str, settings: Settings) -> Path:
    ctx = click.Context(click.Command("riverline"), obj=settings)
    return PIPELINE_FILE.convert(value, None, ctx)


def test_a_pipeline_name_is_found_in_the_pipelines_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "mine.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    settings = Settings(pipelines_dir=folder)
    assert _convert("mine", settings) == folder / "mine.toml"
    assert _convert("mine.toml", settings) == folder / "mine.toml"
    # A file in the working directory wins; a path or an unknown name stays as given.
    (tmp_path / "mine.toml").write_text("")
    assert _convert("mine.toml", settings) == Path("mine.toml")
    assert _convert("other", settings) == Path("other")
    assert _convert("specs/none.toml", settings) == Path("specs/none.toml")


def test_the_shipped_example_pipelines_run_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RIVERLINE_PIPELINES_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert _convert("phishing", Settings()) == bundled_path("pipelines") / "phishing.toml"


def test_version_is_the_installed_packages(tmp_path: Path) -> None:
    result = _riverline("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["riverline,", "version", metadata.version("riverline")]


def test_schemas_dir_flag_checks_the_users_folder(tmp_path: Path) -> None:
    root = _user_schemas(tmp_path)
    result = _riverline("--schemas-dir", str(root), "schemas", "check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    checked = dict(line.split(": ") for line in result.stdout.splitlines())
    assert checked["gauge"] == "ok"
    assert "phishing" not in checked
    assert checked["riverline.prediction"] == "ok"


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (REPO_ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line.removesuffix(" \\"))
            (spec,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_the_lock_pins_every_dependency_within_pyprojects_ranges() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    locked = _locked()
    for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run `make lock`"
        assert locked[name] in requirement.specifier, (
            f"requirements.lock pins {name} {locked[name]}, outside {requirement}: run `make lock`"
        )


def test_pyproject_allows_only_the_versions_agents_internals_was_written_for() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    ranges = {
        canonicalize_name(r.name): r.specifier for r in map(Requirement, project["dependencies"])
    }
    locked = _locked()
    for dist, prefixes in WRITTEN_FOR.items():
        assert str(locked[dist]).startswith(prefixes)
        # The next minor version (which the private APIs may have changed) is outside.
        major, minor = (int(part) for part in prefixes[-1].split(".")[:2])
        assert Version(f"{major}.{minor + 1}.0") not in ranges[dist], dist
