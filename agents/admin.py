"""Admin API of the worker: list models, promote, roll back and reset, without a restart.

``GET /models`` needs a ``viewer`` token; ``POST /models/promote`` ``{pipeline, model,
why}``, ``/models/rollback`` and ``/models/reset`` ``{pipeline, why}`` need an
``operator`` (bearer tokens, :mod:`streams.trust.access`). No token: 401; wrong role: 403.
Every accepted action is written to ``riverline.audit`` (actor = the token's name) and
counted in ``riverline_registry_actions_total``. Actions hold the pipeline's coordinator
lock, so a batch never sees a half-done promotion, and run in a thread: the registry's
reads, writes and fsyncs stay off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from agents.internals import send_all
from streams.errors import RiverlineError
from streams.models.lifecycle import AuditEntry
from streams.models.records import LearningRecord
from streams.models.stage import Predictor
from streams.trust.access import AccessPolicy

if TYPE_CHECKING:
    from agents.app import Worker

__all__ = ["add_admin_views"]


def _action(predictor: Predictor, action: str, body: dict[str, Any], who: str) -> AuditEntry:
    """Run one admin action and write the versions it made (in a thread)."""
    why = str(body.get("why", ""))
    lifecycle = predictor.lifecycle
    run: Callable[[], AuditEntry]
    if action == "promote":
        model = str(body["model"])
        run = lambda: predictor.promote(model, who, why)  # noqa: E731
    elif action == "rollback":
        run = lambda: lifecycle.rollback(who, why)  # noqa: E731
    else:
        run = lambda: lifecycle.reset(who, why)  # noqa: E731
    entry = run()
    lifecycle.write_pending()
    return entry


class _Refused(Exception):
    """A request the admin API refuses; ``response`` says why."""

    def __init__(self, response: Response) -> None:
        super().__init__()
        self.response = response


class _Admin:
    """What the admin views do: check tokens, list the models, run the actions."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.policy = AccessPolicy.parse(worker.settings.admin_tokens)
        self.predictors = {name: p.stage.predictor for name, p in worker.pipelines.items()}

    def principal(self, view: View, request: Request, role: str) -> str:
        """The name of the token the request carries, if it has ``role``; else _Refused."""
        decision = self.policy.check(request.headers.get("Authorization"), role)
        if decision.allowed:
            return decision.principal
        body = {"error": decision.reason, "status": decision.status}
        headers = {"WWW-Authenticate": "Bearer"} if decision.status == 401 else None
        raise _Refused(view.json(body, status=decision.status, headers=headers))

    def listing(self, only: str | None = None) -> dict[str, Any]:
        return {
            "pipelines": {
                name: {
                    "champion": p.lifecycle.champion.label,
                    "models": p.lifecycle.describe(),
                    "history": [f"{n}@{v}" for n, v in p.lifecycle.history],
                    "labels": {"joined": p.join.joined, "expired": p.join.expired},
                }
                for name, p in self.predictors.items()
                if only in (None, name)
            }
        }

    async def act(self, view: View, request: Request, action: str) -> Response:
        """Run an action under the pipeline's coordinator lock, then audit and count it."""
        try:
            who = self.principal(view, request, "operator")
            body, name = await self._parse(view, request, action)
        except _Refused as refused:
            return refused.response
        predictor = self.predictors[name]
        if predictor.serving:
            return await self._queue(view, predictor, action, body, who, name)
        try:
            async with self.worker.pipelines[name].coordinator.lock:
                entry = await asyncio.to_thread(_action, predictor, action, body, who)
        except RiverlineError as exc:
            return view.json({"error": str(exc)}, status=409)
        await send_all(
            self.worker.app, [predictor.audit_message(entry, actor=who)], self.worker.signer
        )
        self.worker.metrics.registry_actions.labels(name, entry.model, action).inc()
        return view.json({"audit": entry.as_dict(), **self.listing(name)})

    async def _queue(
        self,
        view: View,
        predictor: Predictor,
        action: str,
        body: dict[str, Any],
        who: str,
        name: str,
    ) -> Response:
        """A decoupled pipeline's learner makes the change, in the learning log's order:
        the action goes there as a CONTROL record (202: accepted, not yet applied)."""
        control = {
            "action": action,
            "model": str(body.get("model") or ""),
            "why": str(body.get("why") or ""),
        }
        entry_id = uuid.uuid4().hex
        record = LearningRecord("CONTROL", entry_id, 0, who, control=control)
        await send_all(
            self.worker.app, [predictor.records.learning(record, [])], self.worker.signer
        )
        body = {"queued": {"id": entry_id, **control, "actor": who}, **self.listing(name)}
        return view.json(body, status=202)

    async def _parse(self, view: View, request: Request, action: str) -> tuple[dict[str, Any], str]:
        """The body of an action request and the pipeline it names; else _Refused."""
        try:
            body = await request.json()
        except (ValueError, json.JSONDecodeError):
            raise _Refused(
                view.json({"error": "the body must be a JSON object"}, status=400)
            ) from None
        if not isinstance(body, dict):
            raise _Refused(view.json({"error": "the body must be a JSON object"}, status=400))
        predictors = self.predictors
        name = str(body.get("pipeline") or (next(iter(predictors)) if len(predictors) == 1 else ""))
        if name not in predictors:
            known = ", ".join(predictors)
            raise _Refused(
                view.json(
                    {"error": f"unknown pipeline {name!r}; the worker runs: {known}"}, status=404
                )
            )
        if action == "promote" and not body.get("model"):
            raise _Refused(view.json({"error": "promote needs a model"}, status=400))
        return body, name


def add_admin_views(worker: Worker) -> None:
    """Mount ``/models`` and its actions on the worker's web server."""
    admin = _Admin(worker)
    app = worker.app

    @app.page("/models")
    class Models(View):
        async def get(self, request: Request) -> Response:
            try:
                admin.principal(self, request, "viewer")
            except _Refused as refused:
                return refused.response
            return self.json(admin.listing(request.query.get("pipeline")))

    @app.page("/models/promote")
    class Promote(View):
        async def post(self, request: Request) -> Response:
            return await admin.act(self, request, "promote")

    @app.page("/models/rollback")
    class Rollback(View):
        async def post(self, request: Request) -> Response:
            return await admin.act(self, request, "rollback")

    @app.page("/models/reset")
    class Reset(View):
        async def post(self, request: Request) -> Response:
            return await admin.act(self, request, "reset")
