"""Spec versioning: a changed pipeline spec never continues a model of the old one.

The spec's hash (``PipelineSpec.hash``, carried as ``rl.pipeline``) is in every model
manifest (``spec_hash``). Feature state is guarded the same way by the feature set's
hash: :meth:`streams.featurization.Featurization.restore` refuses a checkpoint of another
feature set. :func:`model_continuity` is the model side: whoever restores a model from
the registry at worker start asks it first, and starts a new version from a fresh
estimator when the spec changed, instead of mixing the old model into the new spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.registry import ModelRegistry
from streams.spec import PipelineSpec

__all__ = ["Continuity", "model_continuity"]


@dataclass(frozen=True)
class Continuity:
    """Whether a model may continue from its latest registry version, and why."""

    name: str
    latest: int | None
    resume: bool
    reason: str

    @property
    def next_version(self) -> int:
        """The version the worker's model gets next (always a new one)."""
        return (self.latest or 0) + 1


def model_continuity(registry: ModelRegistry, spec: PipelineSpec, name: str) -> Continuity:
    """May model ``name`` of ``spec`` continue from the registry's latest version?

    Yes only if that version was made under the same spec hash. Either way the model the
    worker serves gets a new version, so predictions of different specs never share a
    ``name@version``.
    """
    latest = registry.latest(name)
    if latest is None:
        return Continuity(name, None, False, f"no version of {name} yet: a fresh model")
    manifest = registry.manifest(name, latest)
    if manifest.spec_hash != spec.hash:
        return Continuity(
            name,
            latest,
            False,
            f"{name}@{latest} was made by spec {manifest.spec_hash}, this is {spec.label}: "
            f"a fresh model as {name}@{latest + 1}",
        )
    return Continuity(name, latest, True, f"{name}@{latest} has spec {spec.hash}: continue from it")
