"""Benchmarks behind ``riverline bench``: sections of measurements beside their baselines.

A section is a function ``(BenchOptions) -> dict`` registered in :data:`SECTIONS`. Its
dict holds at least ``title`` and ``rows`` (a list of flat dicts with the same keys,
which the CLI prints as a table); anything else in it goes to the JSON report as is.
:func:`run_bench` runs the sections in order and returns one JSON-ready report::

    {"quick": ..., "date": ..., "commit": ..., "python": ..., "platform": ..., "cpus": ...,
     "cpu_model": ..., "memory_gib": ..., "sections": {"ingest": {"title": ..., ...}}}

``date`` is the run's UTC start, ``commit`` the checkout's short commit (with ``+changes``
when files differ from it; None outside a git checkout), so a committed report says what
it measured (:mod:`benchmarks.render` quotes both).

Sections that need Kafka take the cluster from ``options.settings``. The sections are
``ingest`` (:mod:`benchmarks.bench_ingest`), ``features``
(:mod:`benchmarks.bench_features`), ``pipeline`` (:mod:`benchmarks.bench_pipeline`),
``decoupled`` (:mod:`benchmarks.bench_decoupled`) and ``guarantees``
(:mod:`benchmarks.bench_guarantees`); docs/benchmark.md has the method.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.bench_decoupled import decoupled_section
from benchmarks.bench_features import features_section
from benchmarks.bench_guarantees import guarantees_section
from benchmarks.bench_ingest import ingest_section
from benchmarks.bench_pipeline import pipeline_section
from benchmarks.bench_stages import stages_section
from benchmarks.options import CONTENDERS, BenchOptions
from streams.errors import RiverlineError
from streams.settings import REPO_ROOT

__all__ = ["CONTENDERS", "SECTIONS", "BenchOptions", "checkout_commit", "cpu_model", "run_bench"]


#: Every section, in the order ``riverline bench`` runs them.
SECTIONS: dict[str, Callable[[BenchOptions], dict[str, Any]]] = {
    "ingest": ingest_section,
    "features": features_section,
    "stages": stages_section,
    "pipeline": pipeline_section,
    "decoupled": decoupled_section,
    "guarantees": guarantees_section,
}


def run_bench(options: BenchOptions, sections: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the named sections (default: all) and return the report (see the module doc)."""
    names = list(sections) if sections is not None else list(SECTIONS)
    unknown = [s for s in names if s not in SECTIONS]
    if unknown:
        raise RiverlineError(
            f"unknown benchmark section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}"
        )
    strangers = [c for c in options.contenders if c not in CONTENDERS]
    if strangers or not options.contenders:
        raise RiverlineError(
            f"unknown benchmark contender(s) {', '.join(strangers) or '(none given)'}; "
            f"known: {', '.join(CONTENDERS)}"
        )
    if not 0.0 < options.latency_load <= 1.0:
        raise RiverlineError(
            f"the latency load is a share of Riverline's measured events/s, more than 0 and at "
            f"most 1 (0.25 is a quarter); got {options.latency_load:g}"
        )
    report: dict[str, Any] = {
        "quick": options.quick,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": checkout_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / (1 << 30), 1),
        "sections": {},
    }
    for name in names:
        report["sections"][name] = SECTIONS[name](options)
    return report


def checkout_commit(root: Path = REPO_ROOT) -> str | None:
    """The short commit of the checkout at ``root``, ``+changes`` if tracked files differ."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+changes" if dirty else head


def cpu_model() -> str | None:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None
