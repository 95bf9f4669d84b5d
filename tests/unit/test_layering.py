"""The layering contract: which module may import which (DESIGN.md, Layout).

Every module of ``streams/``, ``agents/`` and ``benchmarks/`` belongs to one layer of
:data:`LAYERS`, and imports only modules of its own layer or lower ones. On top of that,
``streams/`` never imports Faust, mode, ``agents/`` or ``benchmarks/``, and nothing in
``streams/`` or ``agents/`` imports ``benchmarks/``. Imports are read with :mod:`ast`
from the source, wherever they are (module level, inside functions, under
``TYPE_CHECKING``), together with ``importlib.import_module`` and ``__import__`` calls
that name a module literally.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("streams", "agents", "benchmarks")

#: Lowest first. ``pkg.*`` is the package ``pkg`` and every module under it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "streams",
            "streams.errors",
            "streams.settings",
            "streams.messages",
            "streams.spec",
            "streams.spec_keys",
            # The [features] table is part of the spec; it imports only the foundation.
            "streams.features.spec",
        ),
    ),
    ("plumbing", ("streams.trust.*", "streams.kafka.*", "streams.serialization.*")),
    (
        "records",
        (
            "streams.pipeline",
            "streams.pipeline.lineage",
            "streams.pipeline.stage",
            "streams.state",
            "streams.state.checkpoint",
        ),
    ),
    ("stages", ("streams.ingestion.*", "streams.features.*", "streams.models.*")),
    (
        "the pass and its state",
        (
            "streams.pipeline.onepass",
            "streams.state.store",
            "streams.state.pipeline",
            "streams.state.feed",
            "streams.state.learner",
        ),
    ),
    ("store", ("streams.store.*",)),
    ("surface", ("streams.observability.*", "streams.cli.*", "streams.__main__")),
    ("agents", ("agents.*",)),
    ("benchmarks", ("benchmarks.*",)),
)

#: Top-level packages a module under a prefix must never import, and why.
FORBIDDEN: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("streams", ("faust", "mode"), "streams/ is Riverline's library and never imports Faust"),
    ("streams", ("agents",), "streams/ never imports agents/ (agents wire Faust to streams)"),
    ("streams", ("benchmarks",), "no product module imports the benchmark"),
    ("agents", ("benchmarks",), "no product module imports the benchmark"),
)


@dataclass(frozen=True)
class Layer:
    rank: int
    name: str

    def __str__(self) -> str:
        return f"layer {self.rank} ({self.name})"


def layer_of(module: str) -> Layer | None:
    """The layer a module belongs to, or None if :data:`LAYERS` does not place it."""
    for rank, (name, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern.endswith(".*"):
                package = pattern[:-2]
                if module == package or module.startswith(package + "."):
                    return Layer(rank, name)
            elif module == pattern:
                return Layer(rank, name)
    return None


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    """``streams/kafka/topics.py`` -> ``streams.kafka.topics``; a package is its ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str, root: Path) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(
    module: str, source: str, *, is_package: bool = False, root: Path = REPO_ROOT
) -> Iterator[tuple[str, int]]:
    """Every module ``source`` imports, with the line, relative imports resolved.

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module of
    the repository, else ``pkg``.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield (candidate if _is_module(candidate, root) else base), node.lineno
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
        ):
            yield node.args[0].value, node.lineno


def violations(
    module: str, source: str, *, is_package: bool = False, root: Path = REPO_ROOT
) -> list[str]:
    """What ``module`` (whose code is ``source``) imports against the contract."""
    found: list[str] = []
    mine = layer_of(module)
    if mine is None:
        return [
            f"{module} has no layer: place it in LAYERS of tests/unit/test_layering.py "
            f"(and in DESIGN.md's layering) before it imports anything."
        ]
    for imported, line in imported_modules(module, source, is_package=is_package, root=root):
        top = imported.split(".")[0]
        for prefix, banned, why in FORBIDDEN:
            if module.split(".")[0] == prefix and top in banned:
                found.append(f"{module} (line {line}) imports {imported}: {why}.")
        if top not in TOP_PACKAGES:
            continue
        theirs = layer_of(imported)
        if theirs is None:
            found.append(f"{module} (line {line}) imports {imported}, which has no layer.")
        elif theirs.rank > mine.rank:
            found.append(
                f"{module} ({mine}) imports {imported} ({theirs}) on line {line}: a module "
                f"may import only its own layer or lower ones; move the code it needs down "
                f"to {mine.name} or lower."
            )
    return found


def _sources() -> list[Path]:
    return sorted(p for top in TOP_PACKAGES for p in (REPO_ROOT / top).rglob("*.py"))


def test_every_module_keeps_to_the_layering_contract() -> None:
    paths = _sources()
    assert len(paths) > 80, "the modules of streams/, agents/ and benchmarks/ were not found"
    problems = [
        f"{path.relative_to(REPO_ROOT)}: {problem}"
        for path in paths
        for problem in violations(
            module_name(path), path.read_text(), is_package=path.name == "__init__.py"
        )
    ]
    assert problems == [], "layering contract broken:\n" + "\n".join(problems)


def test_the_checker_flags_an_upward_import_with_both_modules_and_layers() -> None:
    source = "def load():\n    from streams.models.registry import ModelRegistry\n"
    [problem] = violations("streams.kafka.topics", source)
    assert problem.startswith(
        "streams.kafka.topics (layer 1 (plumbing)) imports streams.models.registry "
        "(layer 3 (stages)) on line 2"
    )


def test_the_checker_resolves_relative_and_literal_imports() -> None:
    source = "from ..store import sink\nimport importlib\nimportlib.import_module('agents.cli')\n"
    problems = violations("streams.features.stage", source)
    assert len(problems) == 3
    assert "imports streams.store.sink (layer 5 (store))" in problems[0]
    assert "streams/ never imports agents/" in problems[1]
    assert "imports agents.cli (layer 7 (agents))" in problems[2]


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("streams.models.stage", "import faust\n", "never imports Faust"),
        ("streams.errors", "from mode.utils import x\n", "never imports Faust"),
        ("agents.pipeline", "from benchmarks.bench import run_bench\n", "the benchmark"),
        ("streams.cli.main", "import benchmarks.cli\n", "the benchmark"),
        ("streams.newthing", "", "streams.newthing has no layer"),
    ],
)
def test_the_checker_flags_forbidden_packages_and_unplaced_modules(
    module: str, source: str, expected: str
) -> None:
    assert any(expected in problem for problem in violations(module, source))


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("streams.models.stage", "import modeling\nfrom streams.state import checkpoint\n"),
        ("streams.state.store", "from streams.state.checkpoint import Checkpoint\n"),
        ("agents.cli", "from streams.cli.commands import friendly\n"),
        ("benchmarks.bench", "import agents.io\nfrom streams.cli import workerproc\n"),
    ],
)
def test_the_checker_allows_downward_and_same_layer_imports(module: str, source: str) -> None:
    assert violations(module, source) == []
