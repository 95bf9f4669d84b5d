"""``riverline schemas check`` as a user runs it: a subprocess, exit code and messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.settings import REPO_ROOT

TS = {"type": "long", "logicalType": "timestamp-millis"}
V1: dict[str, Any] = {
    "type": "record",
    "name": "Gauge",
    "namespace": "test",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "event_time", "type": TS},
        {"name": "level", "type": "double"},
        {"name": "unit", "type": "string"},
    ],
}


def _fields(*names: str, **extra: dict[str, Any]) -> dict[str, Any]:
    kept = [f for f in V1["fields"] if f["name"] in names]
    return {**V1, "fields": kept + list(extra.values())}


def _check(schemas: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    env["RIVERLINE_SCHEMAS_DIR"] = str(schemas)
    return subprocess.run(
        [sys.executable, "-m", "streams", "schemas", "check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _catalog(tmp_path: Path, v2: dict[str, Any], mode: str | None = None) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(REPO_ROOT / "schemas", root)
    gauge = root / "gauge"
    gauge.mkdir()
    (gauge / "v1.avsc").write_text(json.dumps(V1))
    (gauge / "v2.avsc").write_text(json.dumps(v2))
    if mode is not None:
        (gauge / "compat.toml").write_text(f'mode = "{mode}"\n')
    return root


def test_the_repository_catalog_passes() -> None:
    result = _check(REPO_ROOT / "schemas")
    assert result.returncode == 0, result.stderr
    assert "sensor: ok" in result.stdout


def test_a_compatible_v2_passes(tmp_path: Path) -> None:
    # The sensor pattern: one field removed, one added with a default.
    v2 = _fields(
        "event_id", "event_time", "level", site={"name": "site", "type": "string", "default": "hq"}
    )
    result = _check(_catalog(tmp_path, v2))
    assert result.returncode == 0, result.stderr
    assert "gauge: ok" in result.stdout


@pytest.mark.parametrize(
    ("mode", "v2", "expected"),
    [
        # BACKWARD (the default): v2 must read v1 data; a new field needs a default.
        (
            None,
            _fields(
                "event_id", "event_time", "level", "unit", site={"name": "site", "type": "string"}
            ),
            "field 'site' exists in v2 but not in v1",
        ),
        # A type change that is not an Avro promotion.
        (
            None,
            {
                **V1,
                "fields": [*V1["fields"][:2], {"name": "level", "type": "string"}, V1["fields"][3]],
            },
            "type changed from double (v1) to string (v2)",
        ),
        # FORWARD: v1 must read v2 data; removing a field without a default breaks it.
        (
            "FORWARD",
            _fields("event_id", "event_time", "level"),
            "field 'unit' exists in v1 but not in v2",
        ),
        # FULL: both directions.
        ("FULL", _fields("event_id", "event_time", "level"), "(FORWARD)"),
    ],
)
def test_an_incompatible_v2_fails_with_exit_1(
    tmp_path: Path, mode: str | None, v2: dict[str, Any], expected: str
) -> None:
    result = _check(_catalog(tmp_path, v2, mode))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "gauge: 1" in result.stdout
    assert "incompatible" in result.stderr
    assert expected in " ".join(result.stderr.split())
