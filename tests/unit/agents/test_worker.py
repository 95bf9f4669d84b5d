"""The worker refuses to start with the built-in signing key outside development mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from streams.kafka.broker import free_port
from streams.settings import REPO_ROOT


def _worker(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RIVERLINE_")}
    clean.update(
        RIVERLINE_HOME=str(tmp_path),
        # Nothing listens there: the worker must stop before it tries the broker.
        RIVERLINE_BOOTSTRAP=f"127.0.0.1:{free_port()}",
        **env,
    )
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streams",
            "worker",
            "--pipeline",
            str(REPO_ROOT / "pipelines" / "phishing.toml"),
        ],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_built_in_key_without_development_mode_is_refused(tmp_path: Path) -> None:
    done = _worker(tmp_path, RIVERLINE_DEV_MODE="0")
    assert done.returncode == 1
    assert "RIVERLINE_SIGNING_KEY is not set" in done.stderr
    assert "openssl rand -hex 32" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_empty_key_is_refused(tmp_path: Path) -> None:
    done = _worker(tmp_path, RIVERLINE_SIGNING_KEY="", RIVERLINE_DEV_MODE="1")
    assert done.returncode == 1
    assert "RIVERLINE_SIGNING_KEY is empty" in done.stderr
