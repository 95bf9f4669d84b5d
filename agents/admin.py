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


def add_admin_views(worker: Worker) -> None:
    """Mount ``/models`` and its actions on the worker's web server."""
    app, metrics = worker.app, worker.metrics
    policy = AccessPolicy.parse(worker.settings.admin_tokens)
    predictors = {name: p.stage.predictor for name, p in worker.pipelines.items()}

    def denied(view: View, request: Request, role: str) -> tuple[str, Response | None]:
        decision = policy.check(request.headers.get("Authorization"), role)
        if decision.allowed:
            return decision.principal, None
        body = {"error": decision.reason, "status": decision.status}
        headers = {"WWW-Authenticate": "Bearer"} if decision.status == 401 else None
        return "", view.json(body, status=decision.status, headers=headers)

    def listing(only: str | None = None) -> dict[str, Any]:
        return {
            "pipelines": {
                name: {
                    "champion": p.lifecycle.champion.label,
                    "models": p.lifecycle.describe(),
                    "history": [f"{n}@{v}" for n, v in p.lifecycle.history],
                    "labels": {"joined": p.join.joined, "expired": p.join.expired},
                }
                for name, p in predictors.items()
                if only in (None, name)
            }
        }

    async def act(view: View, request: Request, action: str) -> Response:
        who, refusal = denied(view, request, "operator")
        if refusal is not None:
            return refusal
        try:
            body = await request.json()
        except (ValueError, json.JSONDecodeError):
            return view.json({"error": "the body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return view.json({"error": "the body must be a JSON object"}, status=400)
        name = str(body.get("pipeline") or (next(iter(predictors)) if len(predictors) == 1 else ""))
        if name not in predictors:
            known = ", ".join(predictors)
            return view.json(
                {"error": f"unknown pipeline {name!r}; the worker runs: {known}"}, status=404
            )
        predictor = predictors[name]
        if action == "promote" and not body.get("model"):
            return view.json({"error": "promote needs a model"}, status=400)
        if predictor.serving:
            # A decoupled pipeline's learner makes the change, in the learning log's order.
            control = {
                "action": action,
                "model": str(body.get("model") or ""),
                "why": str(body.get("why") or ""),
            }
            entry_id = uuid.uuid4().hex
            record = LearningRecord("CONTROL", entry_id, 0, who, control=control)
            await send_all(app, [predictor.records.learning(record, [])], worker.signer)
            return view.json(
                {"queued": {"id": entry_id, **control, "actor": who}, **listing(name)}, status=202
            )
        try:
            async with worker.pipelines[name].coordinator.lock:
                entry = await asyncio.to_thread(_action, predictor, action, body, who)
        except RiverlineError as exc:
            return view.json({"error": str(exc)}, status=409)
        await send_all(app, [predictor.audit_message(entry, actor=who)], worker.signer)
        metrics.registry_actions.labels(name, entry.model, action).inc()
        return view.json({"audit": entry.as_dict(), **listing(name)})

    @app.page("/models")
    class Models(View):
        async def get(self, request: Request) -> Response:
            _, refusal = denied(self, request, "viewer")
            if refusal is not None:
                return refusal
            only = request.query.get("pipeline")
            return self.json(listing(only))

    @app.page("/models/promote")
    class Promote(View):
        async def post(self, request: Request) -> Response:
            return await act(self, request, "promote")

    @app.page("/models/rollback")
    class Rollback(View):
        async def post(self, request: Request) -> Response:
            return await act(self, request, "rollback")

    @app.page("/models/reset")
    class Reset(View):
        async def post(self, request: Request) -> Response:
            return await act(self, request, "reset")
