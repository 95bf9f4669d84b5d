"""The model registry: signed snapshots of online models, taken at known input offsets.

Each version is a directory ``<root>/<pipeline>/<model>/v<N>/`` holding

* ``artifact.pkl``: the pickled River estimator (and its prequential metrics),
* ``manifest.json``: pipeline, name, version, parent, input offsets per partition, samples
  seen, metrics, spec hash, River and Python versions, the artifact's sha256, creation time,
* ``signature``: HMAC-SHA256 (key from settings) over the artifact's sha256 and the
  canonical manifest.

Pickles execute code when loaded, so :meth:`ModelRegistry.load` verifies the signature
and the digest *before* unpickling, and checks that the signed manifest names the
pipeline, model and version asked for (a signed folder copied elsewhere is refused).
Versions are written to a temporary directory and renamed into place, so a crash never
leaves a half-written version behind; a version is complete when its ``signature`` is.

Each model folder also holds ``LATEST``, the number of its newest complete version, so
finding it does not list the folder (which would cost as much as the versions ever
written). It is replaced atomically after a version is in place and only ever names a
complete version; when it is missing or damaged, one listing rebuilds it.
:meth:`ModelRegistry.prune` bounds the folder: it keeps the newest versions and the ones
the caller still needs, and removes the others by renaming each out of the way first.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import pickle
import platform
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Collection, Mapping
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
    "canonical_pickle",
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


def canonical_pickle(estimator: Any) -> bytes:
    """The estimator's pickle as it reads back: the same bytes for the same model whether
    or not it went through a pickle on the way (a model restored from a checkpoint shares
    its objects differently from one that learned without a break, and its first pickle
    shows it; a pickle of the unpickled copy no longer does). So a model's sha256 names
    what it learned, not how often its learner restarted, and a replay can reproduce it."""
    first = pickle.dumps(estimator, protocol=pickle.HIGHEST_PROTOCOL)
    return pickle.dumps(pickle.loads(first), protocol=pickle.HIGHEST_PROTOCOL)


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


#: The file in each model folder naming its newest complete version.
LATEST_FILE = "LATEST"
DISCARDED_FILE = "DISCARDED"

#: Prefix of a version folder being removed: hidden, so it is never taken for a version.
_REMOVING = ".removing-"

_VERSION_DIR = re.compile(r"v([1-9][0-9]*)")


def _fsync_dir(folder: Path) -> None:
    """Make the renames and removals in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class ModelRegistry:
    """Versions of one pipeline's models on disk, signed with ``key``.

    One object may be used from several threads (a worker writes and prunes off its event
    loop); other processes may write to the same root (``riverline train``): version
    numbers stay unique, and :meth:`latest` sees their versions.
    """

    def __init__(self, root: Path, pipeline: str, key: bytes) -> None:
        if not key:
            raise RegistryError("the signing key is empty; set RIVERLINE_SIGNING_KEY.")
        self.root = Path(root)
        self.pipeline = pipeline
        self._key = key
        self._lock = threading.Lock()  # guards _latest and _reserved
        self._pointer_lock = threading.Lock()  # one LATEST writer at a time
        self._latest: dict[str, int] = {}  # name -> newest complete version known, 0: none
        self._reserved: dict[str, int] = {}  # name -> highest version number handed out

    def _model_dir(self, name: str) -> Path:
        return self.root / self.pipeline / name

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / f"v{version}"

    def _complete(self, name: str, version: int) -> bool:
        return (self._version_dir(name, version) / "signature").exists()

    def has(self, name: str, version: int) -> bool:
        """Whether ``name@version`` is here, complete (its signature written last)."""
        return self._complete(name, version)

    def artifact_size(self, name: str, version: int) -> int:
        """Bytes of a version's artifact (0 if it is not here)."""
        try:
            return (self._version_dir(name, version) / "artifact.pkl").stat().st_size
        except OSError:
            return 0

    def _scan(self, name: str) -> tuple[list[int], list[Path]]:
        """One listing of the model folder: its complete versions (ascending) and the
        leftovers of removals a crash interrupted."""
        complete: list[int] = []
        leftovers: list[Path] = []
        try:
            with os.scandir(self._model_dir(name)) as entries:
                children = [(entry.name, entry.path) for entry in entries]
        except (FileNotFoundError, NotADirectoryError):
            return [], []
        for child_name, path in children:
            if child_name.startswith(_REMOVING):
                leftovers.append(Path(path))
                continue
            match = _VERSION_DIR.fullmatch(child_name)
            if match and os.path.exists(os.path.join(path, "signature")):
                complete.append(int(match.group(1)))
        return sorted(complete), leftovers

    def versions(self, name: str) -> list[int]:
        """Every complete version of ``name``, ascending (one listing of its folder)."""
        return self._scan(name)[0]

    def latest(self, name: str) -> int | None:
        """The newest complete version of ``name``, or None; no listing once known.

        Taken from memory, else from the ``LATEST`` file, else from one listing (which
        rewrites that file); then the next numbers are probed, one ``stat`` each, for
        versions another process wrote meanwhile.
        """
        with self._lock:
            return self._latest_locked(name) or None

    def _latest_locked(self, name: str) -> int:
        known = self._latest.get(name)
        if known is None:
            known = self._read_pointer(name)
            if known is None:
                versions = self.versions(name)
                known = versions[-1] if versions else 0
                self._rewrite_pointer(name, known)
        while self._complete(name, known + 1):
            known += 1
        self._latest[name] = known
        return known

    def _read_pointer(self, name: str) -> int | None:
        """The version ``LATEST`` names if it is a complete version; None if it is missing,
        damaged or names a version that is not (or no longer) complete."""
        try:
            text = (self._model_dir(name) / LATEST_FILE).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            return None
        match = re.fullmatch(r"([1-9][0-9]{0,17})\n?", text)
        if match is None:
            return None
        version = int(match.group(1))
        return version if self._complete(name, version) else None

    def _rewrite_pointer(self, name: str, version: int) -> None:
        """After a listing: ``LATEST`` names ``version`` (or is removed when there is none).

        Best effort: a reader without write access to the registry still gets its answer,
        and the next start lists once more.
        """
        with self._pointer_lock, contextlib.suppress(OSError):
            if version:
                self._replace_pointer(name, version)
            else:
                (self._model_dir(name) / LATEST_FILE).unlink()

    def _advance_pointer(self, name: str, version: int) -> None:
        """After ``version`` is in place: ``LATEST`` names it unless it names a newer one."""
        with self._pointer_lock:
            current = self._read_pointer(name)
            if current is None or current < version:
                self._replace_pointer(name, version)

    def _replace_pointer(self, name: str, version: int) -> None:
        folder = self._model_dir(name)
        fd, staging = tempfile.mkstemp(prefix=f".{LATEST_FILE}-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(f"{version}\n".encode())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(staging, folder / LATEST_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
        _fsync_dir(folder)

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
        (the estimator keeps learning) and writes and fsyncs off it (streams.state.pipeline).
        A reserved number is never handed out twice, written or not. Once the model's
        latest version is known in memory (after its first save or :meth:`latest`), no
        file is touched here; a number another process took meanwhile makes :meth:`write`
        fail, and the next reservation goes past it.
        """
        artifact = canonical_pickle(estimator)
        with self._lock:
            known = self._latest.get(name)
            if known is None:
                known = self._latest_locked(name)
            if name not in self._reserved:
                self._reserved[name] = self._discarded(name)
            version = max(known, self._reserved[name]) + 1
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
        """Write a prepared version: staged in a temporary folder, fsynced, renamed into
        place; then ``LATEST`` names it if it is the newest."""
        manifest = pending.manifest
        name, version = manifest.name, manifest.version
        if manifest.pipeline != self.pipeline:
            raise RegistryError(
                f"{manifest.label} was prepared for pipeline {manifest.pipeline!r}, not "
                f"{self.pipeline!r}; write it with that pipeline's registry."
            )
        folder = self._model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".v{version}-", dir=folder))
        try:
            _write_durably(staging / "artifact.pkl", pending.artifact)
            _write_durably(staging / "manifest.json", manifest.canonical())
            signature = sign(self._key, manifest.sha256, manifest)
            _write_durably(staging / "signature", signature.encode())
            os.rename(staging, self._version_dir(name, version))
        except OSError as exc:
            # Linux refuses a rename onto a non-empty folder with ENOTEMPTY, others EEXIST.
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            raise RegistryError(
                f"{name}@{version} already exists in {folder}: another writer saved it "
                "concurrently. Prepare the version again to get a free number."
            ) from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        _fsync_dir(folder)
        with self._lock:
            if name in self._latest:
                self._latest[name] = max(self._latest[name], version)
        try:
            self._advance_pointer(name, version)
        except OSError as exc:
            raise RegistryError(
                f"{name}@{version} is written, but {folder / LATEST_FILE} could not be "
                f"updated ({exc}); the next start finds the version by probing. Check the "
                "disk (full, read-only?)."
            ) from exc
        return manifest

    def signature(self, manifest: Manifest) -> str:
        """The signature this registry gives ``manifest`` (to publish it with the version)."""
        return sign(self._key, manifest.sha256, manifest)

    def _same_as_here(self, manifest: Manifest) -> None:
        """A published version this registry already has must be the one it has."""
        here = self.manifest(manifest.name, manifest.version)
        if here.sha256 != manifest.sha256:
            raise ArtifactIntegrityError(
                f"{manifest.pipeline}/{manifest.label}: this registry holds another version "
                f"under that number (sha256 {here.sha256[:16]}, not {manifest.sha256[:16]}; "
                f"note {here.note!r}). Remove {self._version_dir(manifest.name, manifest.version)} "
                "so the published one can be cached."
            )

    def import_version(self, pending: PendingVersion, signature: str) -> bool:
        """Cache a version published elsewhere (``riverline.artifacts``), once.

        Its signature must be this registry's key's, and its bytes the manifest's digest,
        before anything is written; a version already here is left as it is.
        Returns whether it was written now.

        Raises
        ------
        ArtifactIntegrityError
            If the signature or the digest does not match, or this registry holds another
            version under the same number.
        """
        manifest = pending.manifest
        if not hmac.compare_digest(self.signature(manifest), signature):
            raise ArtifactIntegrityError(
                f"{manifest.pipeline}/{manifest.label}: the published version's signature "
                "does not match: it was forged, or signed with another RIVERLINE_SIGNING_KEY."
            )
        if hashlib.sha256(pending.artifact).hexdigest() != manifest.sha256:
            raise ArtifactIntegrityError(
                f"{manifest.pipeline}/{manifest.label}: the published artifact does not match "
                "the sha256 of its signed manifest."
            )
        if self._complete(manifest.name, manifest.version):
            self._same_as_here(manifest)
            return False
        try:
            self.write(pending)
        except RegistryError:
            if self._complete(manifest.name, manifest.version):
                return False  # another thread or process cached it meanwhile
            raise
        return True

    def prune(self, name: str, keep: int, protect: Collection[int] = ()) -> list[int]:
        """Remove old versions of ``name``; returns the removed version numbers, ascending.

        Keeps the newest ``keep`` complete versions and every version in ``protect``
        (the caller's champion, shadows, rollback targets and the versions its latest
        checkpoint names). Each removal first renames the version folder to a hidden
        name, so from then on the version is out of the registry and a crash leaves
        either the whole version or a hidden leftover, never a version that looks
        complete but is not; the next prune deletes such leftovers. Costs one listing of
        the model folder (bounded by ``keep`` plus the protected versions once pruned)
        and reads no manifest.

        Parameters
        ----------
        name
            The model.
        keep
            How many of the newest versions to keep, at least 1: the newest version is
            the one the next is numbered from.
        protect
            Versions kept whatever their age; numbers that are not in the registry are
            ignored.
        """
        if keep < 1:
            raise RegistryError(
                f"cannot keep {keep} versions of {name}: keep at least 1 (the newest "
                "version is the one the next is numbered from); see RIVERLINE_REGISTRY_KEEP."
            )
        complete, leftovers = self._scan(name)
        for leftover in leftovers:
            shutil.rmtree(leftover, ignore_errors=True)
        kept = set(protect)
        removed = [v for v in complete[:-keep] if v not in kept]
        for version in removed:
            self._remove(name, version)
        return removed

    def discard(self, name: str, versions: Collection[int]) -> None:
        """Remove versions written for a transaction that never committed; their numbers
        are never handed out again (``DISCARDED`` keeps the highest)."""
        if not versions:
            return
        highest = max(max(versions), self._discarded(name))
        _write_durably(self._model_dir(name) / DISCARDED_FILE, f"{highest}\n".encode())
        for version in sorted(versions):
            if self._complete(name, version):
                self._remove(name, version)
        with self._lock:
            self._latest.pop(name, None)
            self._reserved[name] = max(self._reserved.get(name, 0), highest)

    def _discarded(self, name: str) -> int:
        """The highest version number :meth:`discard` removed (0: none)."""
        try:
            return int((self._model_dir(name) / DISCARDED_FILE).read_text(encoding="ascii"))
        except (OSError, ValueError):
            return 0

    def _remove(self, name: str, version: int) -> None:
        """Take a version out of the registry (one rename), then delete its files."""
        folder = self._model_dir(name)
        hidden = folder / f"{_REMOVING}v{version}-{secrets.token_hex(4)}"
        try:
            os.rename(self._version_dir(name, version), hidden)
        except FileNotFoundError:
            return  # another writer in this home removed it first
        # The rename reaches the disk before any file goes: a crash cannot leave a
        # ``v<N>`` that has its signature but lost its artifact.
        _fsync_dir(folder)
        try:
            shutil.rmtree(hidden)
        except FileNotFoundError:
            pass  # a prune in another process swept it as a leftover
        except OSError as exc:
            raise RegistryError(
                f"{name}@{version} is out of the registry, but deleting {hidden} failed "
                f"({exc}); the next prune retries. Check the folder's permissions."
            ) from exc

    def manifest(self, name: str, version: int) -> Manifest:
        """Read and verify a manifest (the artifact's digest is checked by :meth:`load`).

        The manifest must carry a valid signature and name this registry's pipeline,
        ``name`` and ``version``: a signed folder copied to another place is refused.
        """
        folder = self._version_dir(name, version)
        try:
            raw = json.loads((folder / "manifest.json").read_bytes())
            signature = (folder / "signature").read_text().strip()
        except FileNotFoundError as exc:
            raise self._missing(name, version) from exc
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
        found = (manifest.pipeline, manifest.name, manifest.version)
        if found != (self.pipeline, name, version):
            raise ArtifactIntegrityError(
                f"{folder}: expected the manifest of {self.pipeline}/{name}@{version}, found "
                f"the signed manifest of {manifest.pipeline}/{manifest.label}: the folder was "
                "copied or moved there. Refusing to load it; remove that folder."
            )
        return manifest

    def _missing(self, name: str, version: int) -> RegistryError:
        known = ", ".join(f"v{v}" for v in self.versions(name)) or "none"
        return RegistryError(
            f"{name}@{version} is not in the registry at {self._model_dir(name)} "
            f"(versions: {known})."
        )

    def load(self, name: str, version: int) -> tuple[Any, Manifest]:
        """Verify signature, identity and digest, then unpickle. Never unpickles unverified
        bytes."""
        manifest = self.manifest(name, version)
        try:
            artifact = (self._version_dir(name, version) / "artifact.pkl").read_bytes()
        except FileNotFoundError as exc:  # pruned between the two reads
            raise self._missing(name, version) from exc
        digest = hashlib.sha256(artifact).hexdigest()
        if not hmac.compare_digest(digest, manifest.sha256):
            raise ArtifactIntegrityError(
                f"{name}@{version}: artifact.pkl does not match the sha256 in its signed "
                "manifest: it was changed or corrupted. Refusing to unpickle it."
            )
        # Safe only because the bytes were verified against the signed digest above.
        return pickle.loads(artifact), manifest
