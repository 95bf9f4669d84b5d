"""Model versions as Kafka records: how a signed registry version travels between machines.

A version is its pickled artifact and its signed manifest (:mod:`streams.models.registry`).
On ``riverline.artifacts`` (compacted) it is written as

* ``<pipeline>/<model>/v<N>/chunk/<i>``: the artifact's bytes ``i * CHUNK_BYTES`` onwards,
  at most :data:`CHUNK_BYTES` each, so a model of any size fits Kafka's message limit;
* ``<pipeline>/<model>/v<N>/manifest``: the canonical manifest, its signature and the
  number of chunks, written last.

Every record carries its ``rl.mac`` like any record Riverline writes. A reader
(:class:`VersionAssembler`) keeps chunks until a version's manifest and all its chunks are
there, then checks the assembled artifact against the signed manifest before anything
loads it: the registry (a local cache of this topic) verifies signature and digest again
before unpickling. Pruned versions are removed with tombstones of every key.

Examples
--------
>>> from streams.models.registry import Manifest, PendingVersion
>>> m = Manifest("p", "lr", 3, 2, {}, 10, {}, "h", hashlib.sha256(b"x" * 5).hexdigest(), 0.0)
>>> records = version_records(PendingVersion(m, b"x" * 5), "sig", chunk_bytes=2)
>>> [key for key, _ in records]
['p/lr/v3/chunk/0', 'p/lr/v3/chunk/1', 'p/lr/v3/chunk/2', 'p/lr/v3/manifest']
>>> assembler = VersionAssembler()
>>> [assembler.add(key, value) for key, value in records[::-1]][-1] is None
False
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.errors import RiverlineError
from streams.models.registry import Manifest, PendingVersion

__all__ = [
    "CHUNK_BYTES",
    "ArtifactError",
    "PublishedVersion",
    "VersionAssembler",
    "version_keys",
    "version_records",
]

#: Largest chunk of an artifact in one record: well under Kafka's default message limit.
CHUNK_BYTES = 512 * 1024


class ArtifactError(RiverlineError):
    """A version read from the artifacts topic that cannot be assembled or does not verify."""


@dataclass(frozen=True)
class PublishedVersion:
    """A version assembled from the artifacts topic: its manifest, signature and bytes."""

    manifest: Manifest
    signature: str
    artifact: bytes

    @property
    def pending(self) -> PendingVersion:
        return PendingVersion(self.manifest, self.artifact)


def _prefix(pipeline: str, name: str, version: int) -> str:
    return f"{pipeline}/{name}/v{version}"


def version_keys(pipeline: str, name: str, version: int, chunks: int) -> list[str]:
    """Every key a version takes on the artifacts topic (for its tombstones)."""
    prefix = _prefix(pipeline, name, version)
    return [f"{prefix}/chunk/{i}" for i in range(chunks)] + [f"{prefix}/manifest"]


def version_records(
    pending: PendingVersion, signature: str, *, chunk_bytes: int = CHUNK_BYTES
) -> list[tuple[str, bytes]]:
    """(key, value) of every record of a version, chunks first, the manifest last."""
    m = pending.manifest
    data = pending.artifact
    chunks = [data[i : i + chunk_bytes] for i in range(0, len(data), chunk_bytes)] or [b""]
    prefix = _prefix(m.pipeline, m.name, m.version)
    records = [(f"{prefix}/chunk/{i}", chunk) for i, chunk in enumerate(chunks)]
    head = {"manifest": json.loads(m.canonical()), "signature": signature, "chunks": len(chunks)}
    records.append((f"{prefix}/manifest", json.dumps(head, sort_keys=True).encode()))
    return records


@dataclass
class _Partial:
    chunks: dict[int, bytes] = field(default_factory=dict)
    head: dict[str, Any] | None = None


class VersionAssembler:
    """Collects records of the artifacts topic; returns each version once it is whole.

    Records may come in any order and more than once (compaction, a re-read from the
    start); tombstones (``None`` values) drop what was collected for their version.
    """

    def __init__(self) -> None:
        self._partial: dict[tuple[str, str, int], _Partial] = {}

    def add(self, key: str, value: bytes | None) -> PublishedVersion | None:
        """Take one record; the version it completes, if any.

        Raises
        ------
        ArtifactError
            If the key is not an artifact key, or a whole version does not match its
            manifest's digest.
        """
        where, kind, index = _parse(key)
        if value is None:
            self._partial.pop(where, None)
            return None
        partial = self._partial.setdefault(where, _Partial())
        if kind == "manifest":
            try:
                partial.head = json.loads(value)
            except ValueError as exc:
                raise ArtifactError(f"{key}: the manifest record is not JSON.") from exc
        else:
            partial.chunks[index] = value
        return self._complete(where, partial)

    def _complete(self, where: tuple[str, str, int], partial: _Partial) -> PublishedVersion | None:
        head = partial.head
        if head is None:
            return None
        try:
            n = int(head["chunks"])
            manifest = Manifest(**head["manifest"])
            signature = str(head["signature"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{'/'.join(map(str, where))}: malformed manifest: {exc}") from exc
        if any(i not in partial.chunks for i in range(n)):
            return None
        del self._partial[where]
        artifact = b"".join(partial.chunks[i] for i in range(n))
        if hashlib.sha256(artifact).hexdigest() != manifest.sha256:
            raise ArtifactError(
                f"{manifest.pipeline}/{manifest.label}: the assembled artifact does not match "
                "the sha256 of its manifest; it is not used."
            )
        if (manifest.pipeline, manifest.name, manifest.version) != where:
            raise ArtifactError(
                f"{'/'.join(map(str, where))}: the manifest names {manifest.pipeline}/"
                f"{manifest.label}; it is not used."
            )
        return PublishedVersion(manifest, signature, artifact)

    def pending(self) -> Iterable[tuple[str, str, int]]:
        """Versions seen in part (waiting for chunks or their manifest)."""
        return list(self._partial)


def _parse(key: str) -> tuple[tuple[str, str, int], str, int]:
    """``(pipeline, model, version), kind, chunk index`` of an artifact key."""
    parts = key.split("/")
    try:
        if len(parts) == 4 and parts[3] == "manifest":
            pipeline, name, v, _ = parts
            return (pipeline, name, int(v[1:])), "manifest", -1
        if len(parts) == 5 and parts[3] == "chunk" and parts[2].startswith("v"):
            pipeline, name, v, _, i = parts
            return (pipeline, name, int(v[1:])), "chunk", int(i)
    except ValueError:
        pass
    raise ArtifactError(f"{key!r} is not a key of the artifacts topic.")
