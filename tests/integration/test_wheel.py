"""The wheel, installed outside the checkout, runs a user's own pipeline on the broker.

The wheel is built from a copy of the sources and installed (not editable) into a new
virtualenv; every ``riverline`` command then runs from that virtualenv, in a temporary
folder holding the user's schema and pipeline, with no ``PYTHONPATH`` and nothing of the
source tree in reach. By default the new virtualenv borrows the dependencies already
installed for the tests (a ``.pth`` file added after the wheel is installed, so pip never
sees them); ``RIVERLINE_WHEEL_FULL_INSTALL=1`` lets pip install them for the wheel, at the
versions of requirements.lock, as a user's ``pip install`` would (slower: a few minutes).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

from streams.cli.workerproc import WorkerProcess
from streams.kafka.broker import free_port
from streams.serialization.catalog import SchemaCatalog
from streams.settings import REPO_ROOT, Settings
from streams.spec import load_spec
from streams.store.outputs import OutputCollector

pytestmark = pytest.mark.integration

#: What the wheel is built from (the rest of the checkout is not part of the product).
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "streams", "agents",
           "benchmarks", "schemas", "pipelines", "deploy")  # fmt: skip
FULL_INSTALL = os.environ.get("RIVERLINE_WHEEL_FULL_INSTALL", "") not in ("", "0")
EVENTS = 200

#: How the test validates the user's pipeline without a broker: spec, schema, estimators
#: and field references.
USER_PIPELINE_CHECK = ["check", "pipelines/mine.toml"]


@dataclass(frozen=True)
class Installed:
    """A virtualenv with the wheel installed, and the environment to run it in."""

    venv: Path
    env: dict[str, str]

    @property
    def riverline(self) -> str:
        return str(self.venv / "bin" / "riverline")

    def run(self, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.riverline, *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=self.env,
            timeout=timeout,
            check=False,
        )


#: The environment without ``PYTHONPATH`` (the tests run with the checkout on it, where
#: pip would find riverline.egg-info and take Riverline as installed already).
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("RIVERLINE_", "PYTHON"))}


#: uv (a dev dependency, in requirements.lock) builds and installs faster than pip, with
#: its build environments cached; pip does the same where uv is not installed.
UV = Path(sys.executable).with_name("uv")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, env=CLEAN_ENV, timeout=900)


def _pip_install(python: Path, *args: str) -> None:
    """``pip install ARGS`` into the environment of ``python``."""
    if UV.exists():
        _run(str(UV), "pip", "install", "-q", "--python", str(python), *args)
    else:
        _run(sys.executable, "-m", "pip", "-q", "--python", str(python), "install", *args)


def _build_wheel(work: Path) -> Path:
    source = work / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, source / name)
    if UV.exists():
        _run(str(UV), "build", "--wheel", "-q", "-o", str(work / "dist"), str(source))
    else:
        _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"),
             str(source))  # fmt: skip
    (wheel,) = (work / "dist").glob("riverline-*.whl")
    return wheel


def _install(wheel: Path, venv: Path) -> None:
    # A virtualenv without pip of its own (ensurepip is the slow part): the tests' uv or
    # pip installs into it.
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    python = venv / "bin" / "python"
    if FULL_INSTALL:
        lock = (REPO_ROOT / "requirements.lock").read_text()
        pins = [line.removesuffix(" \\") for line in lock.splitlines() if "--hash=" not in line]
        constraints = venv / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        _pip_install(python, "-c", str(constraints), str(wheel))
        return
    _pip_install(python, "--no-deps", str(wheel))
    # After pip is done: the test environment's packages, behind the wheel's own.
    purelib = Path(sysconfig.get_paths()["purelib"])
    (_purelib(python) / "riverline-test-deps.pth").write_text(f"{purelib}\n")


def _purelib(python: Path) -> Path:
    """The site-packages folder of the virtualenv ``python`` belongs to."""
    done = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        env=CLEAN_ENV,
        timeout=60,
    )
    return Path(done.stdout.strip())


def _user_folder(root: Path) -> Path:
    """A user's own schema and pipeline: River's Phishing data under their own names."""
    (root / "schemas" / "mine").mkdir(parents=True)
    (root / "pipelines").mkdir()
    shutil.copy(REPO_ROOT / "schemas" / "phishing" / "v1.avsc", root / "schemas/mine/v1.avsc")
    spec = (REPO_ROOT / "pipelines" / "phishing.toml").read_text()
    spec = spec.replace('name = "phishing"', 'name = "mine"', 1)
    spec = spec.replace('subject = "phishing"', 'subject = "mine"', 1)
    (root / "pipelines" / "mine.toml").write_text(spec)
    assert tomllib.loads(spec)["pipeline"]["subject"] == "mine"
    return root


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    work = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(work)
    venv = work / "venv"
    _install(wheel, venv)
    env = dict(CLEAN_ENV)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return Installed(venv, env)


class InstalledWorker(WorkerProcess):
    """``riverline worker`` of the installed wheel, in its environment."""

    def __init__(
        self,
        installed: Installed,
        env: dict[str, str],
        cwd: Path,
        settings: Settings,
        pipeline: Path,
        log_path: Path,
    ) -> None:
        super().__init__(settings, [pipeline], log_path)
        self.installed = installed
        self.env = env
        self.cwd = cwd

    def start(self) -> None:
        cmd = [self.installed.riverline, "worker"]
        for p in self.pipelines:
            cmd += ["--pipeline", str(p)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
            )


def _settings_env(installed: Installed, settings: Settings) -> dict[str, str]:
    env = dict(installed.env)
    for name, value in settings.child_env().items():
        if name.startswith("RIVERLINE_") or name == "NUMBA_CACHE_DIR":
            env[name] = value
    return env


async def _predictions(settings: Settings, catalog: SchemaCatalog, spec_path: Path) -> int:
    collector = OutputCollector(settings, load_spec(spec_path), catalog)
    await collector.start()
    try:
        deadline = time.monotonic() + 90
        while len(collector.predictions) + len(collector.dead_letters) < EVENTS:
            assert time.monotonic() < deadline, f"{len(collector.predictions)} predictions"
            await collector.poll(500)
    finally:
        await collector.stop()
    assert not collector.dead_letters
    record = next(iter(collector.predictions.values())).record
    assert record["schema"].startswith("mine/v1/"), record
    return len(collector.predictions)


def test_the_installed_package_is_the_wheel_not_the_checkout(
    installed: Installed, tmp_path: Path
) -> None:
    result = installed.run("--version", cwd=tmp_path)
    assert result.stdout.split() == ["riverline,", "version", metadata.version("riverline")]
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import streams; print(streams.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=installed.env,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(installed.venv)
    # The examples ship inside the package and run by name.
    shipped = installed.run("schemas", "check", cwd=tmp_path)
    assert shipped.returncode == 0, shipped.stderr
    assert "phishing: ok" in shipped.stdout


def test_the_wheel_runs_a_users_pipeline_from_their_folder(
    installed: Installed, settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    user = _user_folder(tmp_path / "user")
    checked = installed.run("--schemas-dir", "schemas", *USER_PIPELINE_CHECK, cwd=user)
    assert checked.returncode == 0, checked.stderr
    assert "mine.toml: no problems found" in checked.stdout
    assert "ok spec mine" in checked.stdout  # the user's pipeline, from their folder
    settings = settings_factory(
        web_port=free_port(),
        schemas_dir=user / "schemas",
        pipelines_dir=user / "pipelines",
        cache_dir=tmp_path / "cache",
        sink_enabled=False,
    )
    env = _settings_env(installed, settings)
    worker = InstalledWorker(
        installed, env, user, settings, Path("pipelines/mine.toml"), tmp_path / "worker.log"
    )
    worker.start()
    try:
        worker.wait_ready()
        produced = subprocess.run(
            [installed.riverline, "produce", "--pipeline", "mine", "--limit", str(EVENTS)],
            capture_output=True,
            text=True,
            cwd=user,
            env=env,
            timeout=120,
            check=False,
        )
        assert produced.returncode == 0, produced.stderr
        catalog = SchemaCatalog.load(user / "schemas")
        got = asyncio.run(_predictions(settings, catalog, user / "pipelines" / "mine.toml"))
    finally:
        code = worker.stop()
    assert got == EVENTS
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
