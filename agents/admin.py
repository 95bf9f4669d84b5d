"""Admin API of the worker: list models, promote, roll back and reset, without a restart.

``GET /models`` needs a ``viewer`` token; ``POST /models/promote`` ``{pipeline, model,
why}``, ``/models/rollback`` and ``/models/reset`` ``{pipeline, why}`` need an
``operator`` (bearer tokens, :mod:`streams.access`). No token: 401; wrong role: 403.
Every accepted action is written to ``riverline.audit`` (actor = the token's name) and
counted in ``riverline_registry_actions_total``. Actions run between micro-batches: the
predict stage is synchronous, so a batch never sees a half-done promotion.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import faust
from faust.web import Request, Response, View

from agents.io import send_all
from streams.access import AccessPolicy
from streams.errors import RiverlineError
from streams.integrity import RecordSigner
from streams.lifecycle import AuditEntry
from streams.metrics import WorkerMetrics
from streams.prediction import Predictor
from streams.settings import Settings

__all__ = ["add_admin_views"]


def add_admin_views(
    app: faust.App,
    settings: Settings,
    metrics: WorkerMetrics,
    predictors: Mapping[str, Predictor],
    signer: RecordSigner,
) -> None:
    """Mount ``/models`` and its actions on the worker's web server."""
    policy = AccessPolicy.parse(settings.admin_tokens)

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
        why = str(body.get("why") or "")
        try:
            entry: AuditEntry
            if action == "promote":
                if not body.get("model"):
                    return view.json({"error": "promote needs a model"}, status=400)
                entry = predictor.promote(str(body["model"]), who, why)
            elif action == "rollback":
                entry = predictor.lifecycle.rollback(who, why)
            else:
                entry = predictor.lifecycle.reset(who, why)
        except RiverlineError as exc:
            return view.json({"error": str(exc)}, status=409)
        await send_all(app, [predictor.audit_message(entry, actor=who)], signer)
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
