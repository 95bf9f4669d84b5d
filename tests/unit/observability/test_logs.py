from __future__ import annotations

import json
import logging
import logging.config
import sys

import pytest

from streams.observability.logs import JsonFormatter, logging_config
from streams.settings import Settings


def test_json_lines_carry_the_lifecycle_fields(capsys) -> None:
    logging.config.dictConfig(logging_config(Settings(log_json=True, log_level="info")))
    logging.getLogger("riverline.worker").info(
        "checkpoint written", extra={"pipeline": "phishing", "offset": 42}
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    doc = json.loads(line)
    assert doc["message"] == "checkpoint written"
    assert doc["level"] == "info"
    assert doc["logger"] == "riverline.worker"
    assert doc["pipeline"] == "phishing"
    assert doc["offset"] == 42


@pytest.mark.parametrize(("level", "faust_level"), [("info", "WARNING"), ("debug", "DEBUG")])
def test_libraries_are_quiet_unless_debugging(level: str, faust_level: str) -> None:
    config = logging_config(Settings(log_level=level))
    assert config["loggers"]["faust"]["level"] == faust_level
    assert config["loggers"]["riverline"]["level"] == level.upper()


def test_exceptions_are_included() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("riverline", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]
