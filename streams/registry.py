"""The model registry: signed snapshots of online models, taken at known input offsets.

Each version is a directory ``<root>/<pipeline>/<model>/v<N>/`` holding

* ``artifact.pkl``: the pickled River estimator (and its prequential metrics),
* ``manifest.json``: name, version, parent, input offsets per partition, samples seen,
  metrics, spec hash, River and Python versions, the artifact's sha256, creation time,
* ``signature``: HMAC-SHA256 (key from settings) over the artifact's sha256 and the
  canonical manifest.

Pickles execute code when loaded, so :meth:`ModelRegistry.load` verifies the signature
and the digest *before* unpickling and refuses anything that does not match. Versions are
written to a temporary directory and renamed into place, so a crash never leaves a
half-written version behind.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import platform
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import river

from streams.errors import RiverlineError

__all__ = [
    "ArtifactIntegrityError",
    "Manifest",
    "ModelRegistry",
    "PendingVersion",
    "RegistryError",
    "sign",
]


class RegistryError(RiverlineError):
    """A registry operation cannot be done as asked."""


class ArtifactIntegrityError(RegistryError):
    """An artifact or manifest does not match its signature: it was changed or corrupted."""


@dataclass(frozen=True)
class Manifest:
    """What a model version is, where it came from, and the digest of its artifact."""

    pipeline: str
    name: str
    version: int
    parent: int | None
    offsets: dict[str, int]
    samples_seen: int
    metrics: dict[str, float]
    spec_hash: str
    sha256: str
    created_ts: float
    river_version: str = river.__version__
    python_version: str = platform.python_version()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def sign(key: bytes, artifact_sha256: str, manifest: Manifest) -> str:
    """HMAC-SHA256 over the artifact digest and the canonical manifest, hex."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(artifact_sha256.encode())
    mac.update(b"\n")
    mac.update(manifest.canonical())
    return mac.hexdigest()


@dataclass(frozen=True)
class PendingVersion:
    """A version prepared in memory (:meth:`ModelRegistry.prepare`), not on disk yet."""

    manifest: Manifest
    artifact: bytes


class ModelRegistry:
    """Versions of one pipeline's models on disk, signed with ``key``."""

    def __init__(self, root: Path, pipeline: str, key: bytes) -> None:
        if not key:
            raise RegistryError("the signing key is empty; set RIVERLINE_SIGNING_KEY.")
        self.root = Path(root)
        self.pipeline = pipeline
        self._key = key
        self._reserved: dict[str, int] = {}  # name -> highest version number handed out

    def _model_dir(self, name: str) -> Path:
        return self.root / self.pipeline / name

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / f"v{version}"

    def versions(self, name: str) -> list[int]:
        """Every complete version of ``name``, ascending."""
        folder = self._model_dir(name)
        if not folder.is_dir():
            return []
        found = []
        for child in folder.iterdir():
            complete = (child / "signature").exists()
            if child.name.startswith("v") and child.name[1:].isdigit() and complete:
                found.append(int(child.name[1:]))
        return sorted(found)

    def latest(self, name: str) -> int | None:
        versions = self.versions(name)
        return versions[-1] if versions else None

    def save(
        self,
        name: str,
        estimator: Any,
        *,
        parent: int | None,
        offsets: Mapping[str, int],
        samples_seen: int,
        metrics: Mapping[str, float],
        spec_hash: str,
        note: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> Manifest:
        """Write a new signed version (the next number) atomically; returns its manifest."""
        return self.write(
            self.prepare(
                name,
                estimator,
                parent=parent,
                offsets=offsets,
                samples_seen=samples_seen,
                metrics=metrics,
                spec_hash=spec_hash,
                note=note,
                extra=extra,
            )
        )

    def prepare(
        self,
        name: str,
        estimator: Any,
        *,
        parent: int | None,
        offsets: Mapping[str, int],
        samples_seen: int,
        metrics: Mapping[str, float],
        spec_hash: str,
        note: str = "",
        extra: Mapping[str, Any] | None = None,
    ) -> PendingVersion:
        """The next version in memory: the estimator pickled now, its number reserved.

        :meth:`write` puts it on disk, in any thread: a worker pickles on its event loop
        (the estimator keeps learning) and writes and fsyncs off it (agents.onepass).
        A reserved number is never handed out twice, written or not.
        """
        artifact = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
        version = max(self.latest(name) or 0, self._reserved.get(name, 0)) + 1
        self._reserved[name] = version
        manifest = Manifest(
            pipeline=self.pipeline,
            name=name,
            version=version,
            parent=parent,
            offsets=dict(offsets),
            samples_seen=samples_seen,
            metrics={k: float(v) for k, v in metrics.items()},
            spec_hash=spec_hash,
            sha256=hashlib.sha256(artifact).hexdigest(),
            created_ts=time.time(),
            note=note,
            extra=dict(extra or {}),
        )
        return PendingVersion(manifest, artifact)

    def write(self, pending: PendingVersion) -> Manifest:
        """Write a prepared version: staged in a temporary folder, fsynced, renamed."""
        manifest = pending.manifest
        name, version = manifest.name, manifest.version
        folder = self._model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=folder))
        try:
            (staging / "artifact.pkl").write_bytes(pending.artifact)
            (staging / "manifest.json").write_bytes(manifest.canonical())
            (staging / "signature").write_text(sign(self._key, manifest.sha256, manifest))
            for f in staging.iterdir():
                with f.open("rb") as fh:
                    os.fsync(fh.fileno())
            os.rename(staging, self._version_dir(name, version))
        except FileExistsError as exc:
            raise RegistryError(
                f"{name}@{version} already exists: another writer saved it concurrently."
            ) from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def manifest(self, name: str, version: int) -> Manifest:
        """Read and verify a manifest (the artifact's digest is checked by :meth:`load`)."""
        folder = self._version_dir(name, version)
        try:
            raw = json.loads((folder / "manifest.json").read_bytes())
            signature = (folder / "signature").read_text().strip()
        except FileNotFoundError as exc:
            known = ", ".join(f"v{v}" for v in self.versions(name)) or "none"
            raise RegistryError(
                f"{name}@{version} is not in the registry at {self._model_dir(name)} "
                f"(versions: {known})."
            ) from exc
        except ValueError as exc:
            raise ArtifactIntegrityError(
                f"{folder}/manifest.json is not valid JSON: it was changed or corrupted."
            ) from exc
        try:
            manifest = Manifest(**raw)
        except TypeError as exc:
            raise ArtifactIntegrityError(f"{folder}/manifest.json has unexpected fields.") from exc
        expected = sign(self._key, manifest.sha256, manifest)
        if not hmac.compare_digest(expected, signature):
            raise ArtifactIntegrityError(
                f"{name}@{version}: the manifest's signature does not match. It was changed "
                "after signing, or it was signed with another RIVERLINE_SIGNING_KEY. "
                "Refusing to load it."
            )
        return manifest

    def load(self, name: str, version: int) -> tuple[Any, Manifest]:
        """Verify signature and digest, then unpickle. Never unpickles unverified bytes."""
        manifest = self.manifest(name, version)
        artifact = (self._version_dir(name, version) / "artifact.pkl").read_bytes()
        digest = hashlib.sha256(artifact).hexdigest()
        if not hmac.compare_digest(digest, manifest.sha256):
            raise ArtifactIntegrityError(
                f"{name}@{version}: artifact.pkl does not match the sha256 in its signed "
                "manifest: it was changed or corrupted. Refusing to unpickle it."
            )
        # Safe only because the bytes were verified against the signed digest above.
        return pickle.loads(artifact), manifest
