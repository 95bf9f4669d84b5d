"""Logging: one line per lifecycle event, plain or JSON, never one line per event.

Riverline logs under ``riverline.*`` at the configured level. Faust, mode and aiokafka
are noisy at INFO (every service start and stop), so they log at WARNING unless the level
is DEBUG.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from streams.settings import Settings

__all__ = ["JsonFormatter", "logging_config"]

_PLAIN = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def logging_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document for the worker and the CLI."""
    level = settings.log_level.upper()
    library_level = "DEBUG" if level == "DEBUG" else "WARNING"
    formatter = {"()": f"{__name__}.JsonFormatter"} if settings.log_json else {"format": _PLAIN}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"riverline": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "riverline",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": library_level, "handlers": ["console"]},
        "loggers": {
            "riverline": {"level": level, "handlers": ["console"], "propagate": False},
            **{
                name: {"level": library_level}
                for name in ("faust", "mode", "aiokafka", "kafka", "aiohttp", "numba")
            },
        },
    }
