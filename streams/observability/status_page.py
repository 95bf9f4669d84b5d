"""The worker's status page: server-rendered HTML (no front-end build) and its JSON twin.

The page is a pure function of the status document, so it is tested without a worker;
every value is HTML-escaped because dead-letter messages quote untrusted input.
"""

from __future__ import annotations

import html
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "Notice",
    "RecentNotices",
    "alert_notice",
    "dead_letter_notice",
    "render_status_html",
]


@dataclass(frozen=True)
class Notice:
    """A recent dead letter or alert, as shown on the status page."""

    ts: float
    pipeline: str
    kind: str
    reason: str
    message: str
    where: str = ""


class RecentNotices:
    """The last ``size`` notices, newest first."""

    def __init__(self, size: int = 20) -> None:
        self._items: deque[Notice] = deque(maxlen=size)

    def add(self, notice: Notice) -> None:
        self._items.appendleft(notice)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(n) for n in self._items]


def dead_letter_notice(
    headers: Mapping[str, str], ts: float, pipelines: Mapping[str, str]
) -> Notice | None:
    """The notice for a dead letter read back from the dlq, if one of ``pipelines`` wrote it.

    ``pipelines`` maps each topic a pipeline reads to the pipeline's name.
    """
    topic = headers.get("rl.error.topic", "")
    pipeline = pipelines.get(topic)
    if pipeline is None:
        return None
    return Notice(
        ts=ts,
        pipeline=pipeline,
        kind="dead_letter",
        reason=headers.get("rl.error.class", "?"),
        message=headers.get("rl.error.message", ""),
        where=f"{headers.get('rl.error.stage', '?')} {topic}:"
        f"{headers.get('rl.error.partition', '?')}:{headers.get('rl.error.offset', '?')}",
    )


def alert_notice(alert: Mapping[str, Any], ts: float, pipelines: Iterable[str]) -> Notice | None:
    """The notice for an alert record (``schemas/riverline/alert``), if about ``pipelines``."""
    pipeline = str(alert.get("pipeline", ""))
    if pipeline not in set(pipelines):
        return None
    return Notice(
        ts=ts,
        pipeline=pipeline,
        kind="alert",
        reason=str(alert.get("kind", "?")),
        message=str(alert.get("message", "")),
        where=str(alert.get("model") or ""),
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(headers: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _age(seconds: Any) -> str:
    return "none yet" if seconds is None else f"{float(seconds):.0f} s"


def _when(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#f7f9fb}
h1{font-size:1.4rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
.sub{color:#5b6b7c;margin-bottom:1rem}
table{border-collapse:collapse;background:#fff;margin-bottom:.6rem;min-width:40%}
th,td{border:1px solid #d5dde5;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#eef2f6}.ok{color:#1a7f37}.bad{color:#b42318}
.card{background:#fff;border:1px solid #d5dde5;border-radius:6px;padding:.6rem 1rem;
margin-bottom:1rem}
"""


def render_status_html(status: Mapping[str, Any]) -> str:
    """The status page for a status document (the same one ``/status.json`` serves)."""
    worker = status.get("worker", {})
    ready = bool(worker.get("ready"))
    state = "<span class=ok>ready</span>" if ready else "<span class=bad>not ready</span>"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<meta http-equiv='refresh' content='5'>",
        f"<title>Riverline worker</title><style>{_STYLE}</style></head><body>",
        "<h1>Riverline worker</h1>",
        f"<div class='sub'>{state}"
        f" · Kafka {_e(worker.get('bootstrap', '?'))}"
        f" · up {float(worker.get('uptime_s', 0)):.0f} s"
        f" · <a href='/status.json'>JSON</a> · <a href='/metrics'>metrics</a></div>",
    ]
    for name, p in status.get("pipelines", {}).items():
        parts.append(_pipeline_card(name, p))
    for title, key in (("Recent dead letters", "dead_letters"), ("Recent alerts", "alerts")):
        parts.append(_notices(title, status.get(key, [])))
    parts.append("</body></html>")
    return "".join(parts)


def _pipeline_card(name: str, p: Mapping[str, Any]) -> str:
    """One pipeline: its spec, counts, lag and checkpoint age; its models."""
    columns = [
        "spec",
        "feature set",
        "events ok",
        "dead letters",
        "consumer lag",
        "checkpoint age",
        "topics",
    ]
    row = [
        p.get("spec", ""),
        p.get("features", ""),
        p.get("events_ok", 0),
        p.get("dead_letters", 0),
        p.get("consumer_lag", "?"),
        _age(p.get("checkpoint_age_s")),
        ", ".join(p.get("topics", [])),
    ]
    models = []
    for m in p.get("models", []):
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in m.get("metrics", {}).items())
        models.append(
            [f"{m['name']}@{m['version']}", m.get("stage", ""), m.get("samples_seen", 0), metrics]
        )
    return (
        f"<div class='card'><h2>Pipeline {_e(name)}</h2>"
        + _table(columns, [row])
        + _table(["model", "stage", "samples seen", "prequential metrics"], models)
        + _serving_table(p.get("serving", []))
        + "</div>"
    )


def _serving_table(serving: list[Mapping[str, Any]]) -> str:
    """A decoupled pipeline's served versions: how far behind the learner they are."""
    if not serving:
        return ""
    rows = [
        [
            s["model"],
            s.get("stage", ""),
            "?" if s.get("staleness_samples") is None else s["staleness_samples"],
            _age(s.get("age_s")),
        ]
        for s in serving
    ]
    columns = ["served version", "stage", "samples learned since", "version age"]
    return "<h3>Served from the learner</h3>" + _table(columns, rows)


def _notices(title: str, items: list[Mapping[str, Any]]) -> str:
    """A heading and a table of recent notices (dead letters or alerts), or "none"."""
    if not items:
        return f"<h2>{title}</h2><p>none</p>"
    return f"<h2>{title}</h2>" + _table(
        ["time", "pipeline", "reason", "where", "message"],
        [
            [_when(n["ts"]), n["pipeline"], n["reason"], n.get("where", ""), n["message"]]
            for n in items
        ],
    )
