"""The code-shape contract: no module over 600 lines, no function over 60.

Every ``.py`` file of ``streams/``, ``agents/`` and ``benchmarks/`` is read with
:mod:`ast`. A module's size is its number of lines; a function's (or method's) runs from
its first decorator, or its ``def`` if it has none, to its last line, docstring included.
A nested function counts on its own and inside the function that holds it. The only
exceptions are listed below, each with its reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP_PACKAGES = ("streams", "agents", "benchmarks")

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60

#: Modules that may exceed MAX_MODULE_LINES, and why.
LONG_MODULES: dict[str, str] = {
    "streams/features/kernels.py": (
        "each Numba kernel sits beside its plain-Python twin with the same contract, so one "
        "module holds both halves of every kind; split, a kernel and its twin would drift"
    ),
}

#: Functions (``path``, qualified name) that may exceed MAX_FUNCTION_LINES, and why.
_KERNEL_REASON = (
    "a Numba kernel or its _py_ twin: one loop over the batch that Numba compiles as a "
    "whole; split, the twins would no longer read operation for operation alike"
)
#: The Numba kernels of streams/features/kernels.py, each beside its ``_py_`` twin.
_KERNELS = (
    "_window_step",
    "_py_window_step",
    "window_count",
    "_py_window_count",
    "window_sum",
    "_py_window_sum",
    "window_mean",
    "_py_window_mean",
    "ewm_mean",
    "_py_ewm_mean",
    "ewm_var",
    "_py_ewm_var",
    "since_last",
    "_py_since_last",
    "zscore",
    "_py_zscore",
    "ratio",
    "_py_ratio",
    "frequency",
    "_py_frequency",
)
LONG_FUNCTIONS: dict[tuple[str, str], str] = {
    ("streams/features/kernels.py", name): _KERNEL_REASON for name in _KERNELS
}


@dataclass(frozen=True)
class Offence:
    path: str
    name: str | None  # None: the module itself
    line: int
    size: int

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.path, self.name)

    def __str__(self) -> str:
        if self.name is None:
            return f"{self.path}: {self.size:,} lines (at most {MAX_MODULE_LINES})"
        return (
            f"{self.path}:{self.line} {self.name}: {self.size} lines (at most {MAX_FUNCTION_LINES})"
        )


def function_sizes(source: str) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, lines) of every function and method in ``source``."""

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                assert child.end_lineno is not None
                yield name, child.lineno, child.end_lineno - start + 1
                yield from visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(ast.parse(source), "")


def offences(path: str, source: str) -> list[Offence]:
    """Everything in ``source`` (the file at ``path``) over the limits, exceptions aside."""
    found: list[Offence] = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES and path not in LONG_MODULES:
        found.append(Offence(path, None, 1, lines))
    for name, line, size in function_sizes(source):
        if size > MAX_FUNCTION_LINES and (path, name) not in LONG_FUNCTIONS:
            found.append(Offence(path, name, line, size))
    return found


def _sources() -> list[Path]:
    return sorted(p for top in TOP_PACKAGES for p in (REPO_ROOT / top).rglob("*.py"))


def _all_offences() -> list[Offence]:
    return [
        offence
        for p in _sources()
        for offence in offences(p.relative_to(REPO_ROOT).as_posix(), p.read_text())
    ]


def test_no_module_or_function_is_over_the_limits() -> None:
    paths = _sources()
    assert len(paths) > 80, "the modules of streams/, agents/ and benchmarks/ were not found"
    found = _all_offences()
    assert found == [], "over the code-shape limits; split along the seams:\n" + "\n".join(
        map(str, found)
    )


def test_every_exception_names_something_that_exists() -> None:
    missing = [f"{path} (module)" for path in LONG_MODULES if not (REPO_ROOT / path).is_file()]
    names = {
        path: {name for name, _, _ in function_sizes((REPO_ROOT / path).read_text())}
        for path in {path for path, _ in LONG_FUNCTIONS}
    }
    missing += [f"{path} {name}" for path, name in LONG_FUNCTIONS if name not in names[path]]
    assert missing == [], "exceptions for code that no longer exists:\n" + "\n".join(missing)


def _function(name: str, body_lines: int, decorators: int = 0, indent: str = "") -> str:
    head = "".join(f"{indent}@decorator{i}\n" for i in range(decorators))
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{head}{indent}def {name}() -> None:\n{body}"


def test_the_checker_flags_a_long_function_with_its_name_and_size() -> None:
    source = _function("short", 59) + _function("long", 60)  # 60 and 61 lines
    [offence] = offences("streams/example.py", source)
    assert str(offence) == "streams/example.py:61 long: 61 lines (at most 60)"


def test_the_checker_counts_decorators_and_names_methods_and_nested_functions() -> None:
    method = _function("method", 58, decorators=2, indent="    ")  # 61 lines
    source = (
        "class Thing:\n"
        + method
        + "\n\ndef outer() -> None:\n"
        + _function("inner", 60, indent="    ")
    )
    found = offences("agents/example.py", source)
    assert [(o.name, o.line, o.size) for o in found] == [
        ("Thing.method", 4, 61),
        ("outer", 65, 62),
        ("outer.inner", 66, 61),
    ]


def test_the_checker_flags_a_long_module_and_keeps_the_kernel_exceptions() -> None:
    source = "x = 1\n" * 601
    assert [str(o) for o in offences("benchmarks/example.py", source)] == [
        "benchmarks/example.py: 601 lines (at most 600)"
    ]
    assert offences("streams/features/kernels.py", source) == []
    kernel = _function("_py_frequency", 70)
    assert offences("streams/features/kernels.py", kernel) == []
    assert [o.name for o in offences("streams/features/engine.py", kernel)] == ["_py_frequency"]
