"""A pipeline's state, saved and restored as one: feature state, models, and their offsets.

The one-pass stage (:class:`~streams.pipeline.onepass.OnePass`) keeps two halves of state that
both follow the raw offsets: each ``P.raw`` partition's feature state (with the next raw
offset it has not seen) and the models with their ``positions`` (the next offset of each
``P.raw`` and ``P.labels`` partition they have learned from). A checkpoint writes

1. every served model as a new signed registry version (in a thread: files are fsynced),
2. the predict state as the record ``<pipeline>/predict`` and each moved partition's
   feature state as ``<pipeline>/features/<partition>`` on ``riverline.checkpoints``,
3. the announcements of the new versions on ``riverline.models``,

and only then may the caller commit the offsets both halves reflect. A crash between the
two halves leaves the models ahead of the features, never behind: on restore the
features are computed again from their checkpoint and the events the models already
learned are not predicted again (:meth:`OnePass.process`). Models behind a partition's
feature state (fresh models over a used topic) make that partition's features start
again from the start of the raw topic, so every model learns from the vectors it would
have seen live.

Nothing here knows Faust: the worker's coordinator (``agents.coordinator``) calls these
methods from its rebalance handlers and batch loop, commits the offsets and seeks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.messages import OutMessage
from streams.models.lifecycle import Alert, Served
from streams.models.model import OnlineModel
from streams.models.registry import Manifest, PendingVersion
from streams.pipeline.onepass import OnePass
from streams.pipeline.stage import now_ms
from streams.serialization.catalog import SchemaCatalog
from streams.serialization.codec import encode_single_object
from streams.state.checkpoint import (
    PREDICT,
    Checkpoint,
    CheckpointError,
    CheckpointIntegrityError,
    checkpoint_key,
    predict_key,
)
from streams.state.store import CheckpointStore

__all__ = ["PipelineState", "Prepared", "Resume"]

log = logging.getLogger("riverline.checkpoints")

#: A topic partition as ``(topic, partition)``.
Partition = tuple[str, int]


@dataclass(frozen=True)
class Resume:
    """What a restore decided: where each assigned partition starts, and what to say."""

    #: Next offset of each assigned partition, as the restored state reflects it: the
    #: caller commits these.
    offsets: dict[Partition, int]
    #: Partitions whose state starts before the group's committed offset (no usable
    #: checkpoint): the caller seeks them back.
    behind: dict[Partition, int]
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True)
class Prepared:
    """A checkpoint taken between two batches, to be written while the next ones run."""

    note: str
    #: Each served model, the version it carries now, and its next version to write.
    versions: list[tuple[OnlineModel, int, PendingVersion]]
    #: The predict state's record (None on a serving worker: its models are replicas).
    predict: Checkpoint | None
    features: list[Callable[[], Checkpoint]]
    announcements: list[OutMessage]
    #: The offsets of ``P.raw`` and ``P.labels`` both halves reflect: committed after.
    offsets: dict[Partition, int]


class PipelineState:
    """Saves and restores a one-pass stage's feature state and models together."""

    def __init__(
        self,
        stage: OnePass,
        store: CheckpointStore,
        catalog: SchemaCatalog,
        *,
        labels_topic: str,
        models_topic: str,
        registry_keep: int = 50,
        exactly_once: bool = False,
    ) -> None:
        self.stage = stage
        #: Checkpoints commit in transactions: versions newer than a restored checkpoint's
        #: were written for one that never committed (:meth:`_discard_uncommitted`).
        self.exactly_once = exactly_once
        self.store = store
        self.catalog = catalog
        self.raw = stage.raw_topic
        self.labels = labels_topic
        self.models_topic = models_topic
        self.registry_keep = registry_keep
        self.predict_key = predict_key(stage.predictor.spec.name)
        self._models_restored = False
        #: Raw partition -> offset of its latest feature checkpoint (unchanged: not saved).
        self._saved: dict[int, int] = {}
        #: Positions of partitions revoked from this worker, for when they come back: the
        #: models in memory have learned their events up to there.
        self._released: dict[str, int] = {}
        #: Model versions the latest written predict checkpoint names (never pruned).
        self._checkpointed: dict[str, int] = {}
        #: Set by :meth:`forget`: the predict stage's handed offsets before a rewind.
        self._rewinding: dict[str, int] | None = None

    # -- restore ---------------------------------------------------------------------

    def mine(self, partitions: Iterable[Partition]) -> list[Partition]:
        """The partitions of ``P.raw`` and ``P.labels`` among ``partitions``, sorted."""
        return sorted(tp for tp in partitions if tp[0] in (self.raw, self.labels))

    async def restore(self, assigned: Iterable[Partition], group: str) -> Resume:
        """Hold the assigned partitions: feature state from its checkpoints, models from
        theirs (once per process, or again after :meth:`forget`).

        ``group`` is the consumer group whose committed offsets tell which partitions
        start behind them.
        """
        tps = self.mine(assigned)
        raw_parts = [p for t, p in tps if t == self.raw]
        featurization = self.stage.featurization
        for p in set(featurization.held) - set(raw_parts):
            self.release_features(p)
        alerts: list[Alert] = []
        new = [p for p in raw_parts if p not in featurization.held]
        if new:
            alerts += await self._restore_features(new)
        if not tps:
            return Resume({}, {}, alerts)
        if self.serving:
            labels_behind = await self._place_serving(tps, group)
        else:
            if not self._models_restored:
                alerts += await self._restore_models()
                self._models_restored = True
            labels_behind = await self._place(tps, group)
            await self._rebuild_features_behind_models(raw_parts)
        committed = await self.store.committed(group, self.raw, raw_parts)
        offsets: dict[Partition, int] = {
            (self.raw, p): featurization.held[p].offset for p in raw_parts
        }
        behind = {tp: o for tp, o in offsets.items() if committed.get(tp[1], 0) > o}
        positions = self.stage.predictor.positions
        for tp in tps:
            if tp[0] == self.labels:
                offsets[tp] = positions[_key(tp)]
                if tp in labels_behind:
                    behind[tp] = labels_behind[tp]
        if self._rewinding is not None:
            self.stage.predictor.rewound(self._rewinding)
            self._rewinding = None
        return Resume(offsets, behind, alerts)

    async def _restore_features(self, partitions: list[int]) -> list[Alert]:
        """Restore each partition from its checkpoint, or start it empty; an
        ``integrity`` alert per record whose MAC failed (used as no checkpoint)."""
        featurization = self.stage.featurization
        name = featurization.spec.name
        found = await self.store.load([checkpoint_key(name, p) for p in partitions])
        starts, ends = await self.store.offset_range(self.raw, partitions)
        alerts: list[Alert] = []
        for p in partitions:
            cp = found.get(checkpoint_key(name, p))
            why = ""
            if isinstance(cp, Checkpoint) and cp.offset > ends[p]:
                why = f"its offset {cp.offset} is past the end of {self.raw}:{p} ({ends[p]})"
            elif isinstance(cp, Checkpoint):
                try:
                    featurization.restore(cp)
                    self._saved[p] = cp.offset
                    log.info("restored %r", cp)
                    continue
                except CheckpointError as exc:
                    why = str(exc)
            elif isinstance(cp, CheckpointIntegrityError):
                why = str(cp)
                alerts.append(Alert(name, "integrity", "", str(cp)))
            elif isinstance(cp, CheckpointError):
                why = str(cp)
            if why:
                log.log(
                    logging.ERROR if isinstance(cp, CheckpointIntegrityError) else logging.WARNING,
                    "not using the checkpoint of %s:%d (%s); rebuilding its feature state "
                    "from the start of the partition",
                    self.raw,
                    p,
                    why,
                )
            featurization.start(p, 0)
            self._saved.pop(p, None)
        for p in partitions:
            held = featurization.held[p]
            if held.offset < starts[p]:
                log.warning(
                    "%s:%d starts at offset %d (retention); events %d..%d are gone and not in "
                    "the feature state",
                    self.raw,
                    p,
                    starts[p],
                    held.offset,
                    starts[p] - 1,
                )
                held.offset = starts[p]
        return alerts

    async def _restore_models(self) -> list[Alert]:
        """The latest predict checkpoint's models and state, or fresh models."""
        predictor = self.stage.predictor
        found = (await self.store.load([self.predict_key])).get(self.predict_key)
        if isinstance(found, Checkpoint):
            try:
                alerts = await self._restore_models_from(found)
            except CheckpointError as exc:
                found = exc
            else:
                if alerts is not None:
                    log.info(
                        "restored models %s at offsets %s",
                        [s.label for s in predictor.lifecycle.served],
                        predictor.positions,
                    )
                    return alerts
        alerts = []
        if isinstance(found, CheckpointIntegrityError):
            log.error(
                "not using the model checkpoint %s (%s); fresh models", self.predict_key, found
            )
            alerts.append(Alert(predictor.spec.name, "integrity", "", str(found)))
        elif isinstance(found, CheckpointError):
            log.warning(
                "not using the model checkpoint %s (%s); fresh models", self.predict_key, found
            )
        labels = await asyncio.to_thread(predictor.register_fresh)
        log.info("fresh models %s", labels)
        return alerts

    async def _restore_models_from(self, checkpoint: Checkpoint) -> list[Alert] | None:
        """Restore a usable checkpoint (its alerts); None, with the reason logged, if not."""
        predictor = self.stage.predictor
        if checkpoint.spec_hash != predictor.spec.hash:
            log.warning(
                "the model checkpoint %s is of another spec; fresh models", self.predict_key
            )
            return None
        past = await self._past_end(predictor.saved_positions(checkpoint.state))
        if past:
            log.warning(
                "not using the model checkpoint %s: its offsets are past the end of %s (the "
                "topics were recreated since); fresh models",
                self.predict_key,
                ", ".join(past),
            )
            return None
        # Loading artifacts reads and verifies files: off the event loop.
        alerts = await asyncio.to_thread(predictor.restore, checkpoint.state)
        for alert in alerts:
            log.error("%s", alert.message)
        self._checkpointed = {
            s.model.spec.name: s.model.version for s in predictor.lifecycle.served
        }
        if self.exactly_once:
            await asyncio.to_thread(self._discard_uncommitted)
        return alerts

    def _discard_uncommitted(self) -> None:
        """Remove the versions the worker wrote after the restored checkpoint: their
        transaction never committed, so no visible record names them. Versions written by
        others (``riverline train``, imports) stay."""
        lifecycle = self.stage.predictor.lifecycle
        registry = lifecycle.registry
        if registry is None:
            return
        for served in lifecycle.served:
            name = served.model.spec.name
            named = [v for n, v in lifecycle.history if n == name]
            above = max([served.model.version, *named])
            orphans = [
                v
                for v in registry.versions(name)
                if v > above and "stage" in registry.manifest(name, v).extra
            ]
            if orphans:
                registry.discard(name, orphans)
                log.info("registry: discarded %s versions %s (never committed)", name, orphans)

    async def _past_end(self, positions: dict[str, int]) -> list[str]:
        """The ``topic:partition`` positions beyond their topic's end now."""
        by_topic: dict[str, list[int]] = {}
        for key in positions:
            topic, _, partition = key.rpartition(":")
            by_topic.setdefault(topic, []).append(int(partition))
        past = []
        for topic, parts in sorted(by_topic.items()):
            _starts, ends = await self.store.offset_range(topic, parts)
            for p in parts:
                if positions[f"{topic}:{p}"] > ends.get(p, 0):
                    past.append(f"{topic}:{p} ({positions[f'{topic}:{p}']} > {ends.get(p, 0)})")
        return past

    @property
    def serving(self) -> bool:
        """A decoupled pipeline's serving worker: its models are replicas (no model state
        here); only feature state and the input offsets are saved."""
        return self.stage.predictor.serving

    async def _place_serving(self, tps: list[Partition], group: str) -> dict[Partition, int]:
        """Positions of a serving worker: each raw partition where its feature state is,
        each labels partition at the group's committed offset (labels keep no state here)."""
        positions = self.stage.predictor.positions
        held = {_key(tp) for tp in tps}
        for key in set(positions) - held:
            positions.pop(key)
        featurization = self.stage.featurization
        labels = [p for t, p in tps if t == self.labels]
        starts, _ends = await self.store.offset_range(self.labels, labels) if labels else ({}, {})
        committed = await self.store.committed(group, self.labels, labels) if labels else {}
        for topic, p in tps:
            if topic == self.raw:
                positions[f"{topic}:{p}"] = featurization.held[p].offset
            else:
                positions[f"{topic}:{p}"] = max(committed.get(p, 0), starts[p])
        return {}

    async def _place(self, tps: list[Partition], group: str) -> dict[Partition, int]:
        """Set the models' ``positions`` of the assigned partitions (released ones come
        back where they were); returns those behind the group's committed offset."""
        positions = self.stage.predictor.positions
        held = {_key(tp) for tp in tps}
        for key in set(positions) - held:
            self._released[key] = positions.pop(key)
        for key in held:
            if key not in positions:
                positions[key] = self._released.pop(key, 0)
        behind: dict[Partition, int] = {}
        for topic in sorted({tp[0] for tp in tps}):
            parts = [p for t, p in tps if t == topic]
            starts, _ends = await self.store.offset_range(topic, parts)
            committed = await self.store.committed(group, topic, parts)
            for p in parts:
                key = f"{topic}:{p}"
                positions[key] = max(positions[key], starts[p])
                if committed.get(p, 0) > positions[key]:
                    behind[(topic, p)] = positions[key]
        return behind

    async def _rebuild_features_behind_models(self, raw_parts: list[int]) -> None:
        """A partition whose models learned less than its feature state reflects starts
        its features again from the start of the raw topic."""
        featurization = self.stage.featurization
        positions = self.stage.predictor.positions
        if not raw_parts:
            return
        starts, _ends = await self.store.offset_range(self.raw, raw_parts)
        for p in raw_parts:
            held, learned = featurization.held[p], positions[self.stage.raw_key(p)]
            if learned < held.offset:
                log.warning(
                    "the models of %s learned %s:%d up to %d, its feature state is at %d: "
                    "rebuilding the partition's features from offset %d",
                    featurization.spec.name,
                    self.raw,
                    p,
                    learned,
                    held.offset,
                    starts[p],
                )
                featurization.start(p, starts[p])
                self._saved.pop(p, None)

    # -- revocation, recovery --------------------------------------------------------

    def release(self, revoked: Iterable[Partition]) -> None:
        """Let go of revoked partitions; the models remember where they were."""
        positions = self.stage.predictor.positions
        for tp in self.mine(revoked):
            if tp[0] == self.raw:
                self.release_features(tp[1])
            key = _key(tp)
            if key in positions:
                self._released[key] = positions.pop(key)

    def release_features(self, partition: int) -> None:
        self.stage.featurization.release(partition)
        self._saved.pop(partition, None)

    def forget(self) -> None:
        """Drop everything held in memory, so the next :meth:`restore` reads every
        partition and the models back from their checkpoints (after a failed batch), and
        expects the consumer to be sought back to where they were."""
        featurization = self.stage.featurization
        for p in list(featurization.held):
            self.release_features(p)
        self._rewinding = self.stage.predictor.handed()
        # A serving worker's models are the learner's replicas: they stay.
        self.stage.predictor.reset(models=not self.serving)
        self._released.clear()
        self._models_restored = False

    # -- checkpoints -----------------------------------------------------------------

    def offsets(self) -> dict[Partition, int]:
        """The offsets of ``P.raw`` and ``P.labels`` both halves reflect now."""
        positions = self.stage.predictor.positions
        offsets: dict[Partition, int] = {}
        for p, held in self.stage.featurization.held.items():
            learned = positions.get(self.stage.raw_key(p), held.offset)
            offsets[(self.raw, p)] = min(held.offset, learned)
        for key, offset in positions.items():
            topic, _, partition = key.rpartition(":")
            if topic == self.labels:
                offsets[(topic, int(partition))] = offset
        return offsets

    def prepare(self, note: str) -> Prepared:
        """Both halves and the offsets they reflect, taken now (between two batches).

        Synchronous, so nothing learns while they are captured: models are pickled and
        feature arrays copied here; files, fsyncs and the broker are :meth:`write`.
        """
        predictor = self.stage.predictor
        positions = dict(predictor.positions)
        pending = []
        predict = None
        if not self.serving:  # a serving worker's models are the learner's, not saved here
            served = predictor.lifecycle.served
            pending = [(s, predictor.prepare(s, note, positions)) for s in served]
            versions = {p.manifest.name: p.manifest.version for _, p in pending}
            predict = Checkpoint(
                predictor.spec.name,
                0,
                0,
                predictor.spec.hash,
                PREDICT,
                predictor.state_bytes(versions),
                written_ms=now_ms(),
            )
        featurization = self.stage.featurization
        moved = [p for p, h in featurization.held.items() if self._saved.get(p) != h.offset]
        return Prepared(
            note,
            [(s.model, s.model.version, p) for s, p in pending],
            predict,
            [featurization.checkpoint_later(p) for p in moved],
            [self._announce(s, p.manifest) for s, p in pending],
            self.offsets(),
        )

    async def write(self, prepared: Prepared) -> list[Manifest]:
        """Models to the registry, then the predict and feature checkpoints: the caller
        sends ``prepared.announcements`` and commits ``prepared.offsets`` after.

        Only once its version is written does a model carry it, so no prediction names a
        version a crash could lose.
        """
        registry = self.stage.predictor.lifecycle.registry
        written = [p for _, _, p in prepared.versions]
        manifests: list[Manifest] = []
        if registry is not None and written:
            manifests = await asyncio.to_thread(lambda: [registry.write(p) for p in written])
        # The zip and deflate of each feature state, off the event loop (zlib lets go of
        # the GIL), then every record in one go.
        features = await asyncio.to_thread(lambda: [build() for build in prepared.features])
        predict = [prepared.predict] if prepared.predict is not None else []
        await self.store.save([*predict, *features])
        for cp in features:
            self._saved[cp.partition] = cp.offset
        for model, was, p in prepared.versions:
            if model.version == was:  # not given another version meanwhile (admin API)
                model.version = p.manifest.version
        if manifests:
            self._checkpointed = {m.name: m.version for m in manifests}
            await asyncio.to_thread(self._prune)
        log.info(
            "checkpoint of %s (%s): models %s, features %s",
            self.stage.predictor.spec.name,
            prepared.note,
            [m.label for m in manifests],
            ", ".join(f"{cp.partition}@{cp.offset}" for cp in features) or "unchanged",
        )
        return manifests

    def _prune(self) -> None:
        """Keep the newest ``registry_keep`` versions of each model, plus every version
        served, rolled back to, or named by the latest checkpoint."""
        lifecycle = self.stage.predictor.lifecycle
        registry = lifecycle.registry
        if registry is None:
            return
        for served in lifecycle.served:
            name = served.model.spec.name
            protect = {v for n, v in lifecycle.history if n == name}
            protect.add(served.model.version)
            if name in self._checkpointed:
                protect.add(self._checkpointed[name])
            removed = registry.prune(name, self.registry_keep, protect)
            if removed:
                log.info("registry: removed %s versions %s", name, removed)

    def _announce(self, served: Served, manifest: Manifest) -> OutMessage:
        """The ``model_record.avsc`` record of a new version, for ``riverline.models``."""
        predictor = self.stage.predictor
        estimator = served.model.estimator
        registry = predictor.lifecycle.registry
        status = "CHAMPION" if served is predictor.lifecycle.champion else "CANDIDATE"
        root = registry.root if registry is not None else None
        artifact = f"{root}/{manifest.pipeline}/{manifest.name}/v{manifest.version}/artifact.pkl"
        record = {
            "name": manifest.name,
            "version": manifest.version,
            "pipeline": manifest.pipeline,
            "spec": manifest.spec_hash,
            "features": str(predictor.spec.features.get("name", "")),
            "schema": predictor.spec.subject,
            "estimator": f"{type(estimator).__module__}.{type(estimator).__qualname__}",
            "params": {},
            "status": status,
            "parent_version": manifest.parent,
            "artifact": artifact,
            "artifact_sha256": manifest.sha256,
            "signature": None,
            "checkpoint_offsets": dict(manifest.offsets),
            "events_learned": manifest.samples_seen,
            "metrics": dict(manifest.metrics),
            "created_ts": int(manifest.created_ts * 1000),
            "updated_ts": now_ms(),
        }
        value = encode_single_object(self.catalog.record("model_record"), record)
        return OutMessage(self.models_topic, manifest.label.encode(), value, [])


def _key(tp: Partition) -> str:
    return f"{tp[0]}:{tp[1]}"
