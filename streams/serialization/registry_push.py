"""``riverline schemas push``: the catalog registered in a Schema Registry, topic by topic.

Subjects follow Confluent's default naming (``TopicNameStrategy``): ``<topic>-value``.
For each pipeline, the versions of its event subject go under ``P.raw-value`` and
``P.events-value``, Riverline's ``feature_vector`` under ``P.features-value``,
``prediction`` under ``P.predictions-value`` and ``label`` under ``P.labels-value``;
``alert`` and ``audit`` go under ``riverline.alerts-value`` and ``riverline.audit-value``.
Each registry subject first gets the compatibility mode of its catalog subject
(``compat.toml``, as ``riverline schemas check``), then its versions oldest first. A
version already registered there keeps its id; a new one is checked by the registry
(``verbose=true``) and registered, or reported with the registry's reasons (from the
check, or from the refused registration where the check gives none).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streams.serialization.catalog import RIVERLINE_DIR, SchemaCatalog, SchemaVersion
from streams.serialization.compat import DEFAULT_MODE, DEFAULT_RECORD_MODE, load_modes
from streams.serialization.registry_client import SchemaRegistryClient, SchemaRegistryError
from streams.spec import PipelineSpec

__all__ = ["PushReport", "Refusal", "RegistrySubject", "push_catalog", "push_plan"]


@dataclass(frozen=True)
class RegistrySubject:
    """One registry subject, the catalog subject whose versions it takes, and its mode."""

    name: str
    catalog_subject: str
    mode: str


@dataclass(frozen=True)
class Refusal:
    """A version the registry would not take under a subject, with its reasons."""

    subject: str
    version: str
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.subject}: {self.version} refused: " + "; ".join(self.reasons)


@dataclass
class PushReport:
    """What ``push_catalog`` did: ids per (registry subject, version label), refusals."""

    ids: dict[tuple[str, str], int] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)


def push_plan(
    catalog: SchemaCatalog, specs: Sequence[PipelineSpec], namespace: str = ""
) -> list[RegistrySubject]:
    """The registry subjects of ``specs``' topics (and the shared ones), without repeats."""
    modes = load_modes(catalog.root) if catalog.root is not None else {}

    def subject(topic: str, catalog_subject: str) -> RegistrySubject:
        record = catalog_subject.startswith(f"{RIVERLINE_DIR}.")
        mode = modes.get(catalog_subject, DEFAULT_RECORD_MODE if record else DEFAULT_MODE)
        return RegistrySubject(f"{topic}-value", catalog_subject, mode)

    plan: dict[str, RegistrySubject] = {}
    for spec in specs:
        topics = spec.topics(namespace)
        for entry in (
            subject(topics.raw, spec.subject),
            subject(topics.events, spec.subject),
            subject(topics.features, f"{RIVERLINE_DIR}.feature_vector"),
            subject(topics.predictions, f"{RIVERLINE_DIR}.prediction"),
            subject(topics.labels, f"{RIVERLINE_DIR}.label"),
        ):
            plan[entry.name] = entry
    for shared, record in (("riverline.alerts", "alert"), ("riverline.audit", "audit")):
        entry = subject(f"{namespace}{shared}", f"{RIVERLINE_DIR}.{record}")
        plan[entry.name] = entry
    return list(plan.values())


def push_catalog(
    client: SchemaRegistryClient,
    catalog: SchemaCatalog,
    plan: Sequence[RegistrySubject],
    say: Callable[[str], None] = print,
) -> PushReport:
    """Set each subject's mode and register its versions; refusals are reported, not raised.

    Raises
    ------
    SchemaRegistryUnavailable
        If the registry cannot be reached (nothing after that is attempted).
    """
    report = PushReport()
    for entry in plan:
        client.set_compatibility(entry.name, entry.mode)
        for sv in catalog.versions(entry.catalog_subject):
            refusal = _push_version(client, entry.name, sv, report)
            if refusal is None:
                say(f"{entry.name}: {sv.label} is id {report.ids[(entry.name, sv.label)]}")
            else:
                report.refused.append(refusal)
                say(str(refusal))
    return report


def _push_version(
    client: SchemaRegistryClient, subject: str, sv: SchemaVersion, report: PushReport
) -> Refusal | None:
    schema = json.dumps(sv.schema)
    try:
        schema_id = client.lookup(subject, schema)
        if schema_id is None:
            verdict = client.check_compatibility(subject, schema)
            if not verdict.compatible and verdict.messages:
                return Refusal(subject, sv.label, verdict.messages)
            # A registry whose verdict is bare (Apicurio) says why when it refuses to
            # register; the registration is what counts in any case.
            schema_id = client.register(subject, schema)
    except SchemaRegistryError as exc:
        if exc.status in (0, 401, 403) or exc.status >= 500:
            raise
        return Refusal(subject, sv.label, (str(exc),))
    report.ids[(subject, sv.label)] = schema_id
    return None
