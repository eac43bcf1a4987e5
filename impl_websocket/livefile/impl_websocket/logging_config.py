"""The server's logging: uvicorn's format, livefile's own loggers, and no token in any line.

Tokens travel in ``?token=`` where a client cannot set headers, and uvicorn logs every request
line and WebSocket path with its query: a filter on every handler blanks them out.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

TOKEN_IN_QUERY = re.compile(r"(?i)(\btoken=)[^&\s\"']+")
REDACTED = r"\1[redacted]"


def redact(text: str) -> str:
    return TOKEN_IN_QUERY.sub(REDACTED, text)


class RedactTokens(logging.Filter):
    """Replaces the value of every ``token=`` in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                key: redact(value) if isinstance(value, str) else value
                for key, value in record.args.items()
            }
        return True


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration, with livefile's loggers and the token filter added."""
    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_tokens": {"()": f"{__name__}.RedactTokens"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_tokens"]
    config["loggers"]["livefile"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
