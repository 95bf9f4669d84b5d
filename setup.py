"""Packaging hook: the wheel carries what Riverline ships besides code.

Everything else is in pyproject.toml. The schemas, the example pipelines and the broker's
POM and Log4j2 configuration keep their places at the top of the repository (DESIGN.md,
Layout); a wheel build copies them into ``streams/bundled/``, where
``streams.settings.bundled_path`` finds them once installed. An editable install needs no
copy: there ``bundled_path`` answers the source checkout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent

#: ``streams/bundled/<name>`` -> the folder it is copied from; the same as
#: ``streams.settings.BUNDLED`` (tests/unit/cli/test_packaging.py holds them together).
BUNDLED = {
    "schemas": "schemas",
    "pipelines": "pipelines",
    "kafka": "deploy/kafka",
}
#: Files of those folders the package does not need at run time.
LEFT_OUT = ("*.sh", "__pycache__", "*.pyc")


class BuildWithBundledData(build_py):
    """``build_py`` that also copies :data:`BUNDLED` into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "streams" / "bundled"
        for name, source in BUNDLED.items():
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(HERE / source, target / name, ignore=shutil.ignore_patterns(*LEFT_OUT))


if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildWithBundledData})
