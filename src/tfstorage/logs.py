"""Log output: human-readable text (default) or one JSON object per line (LOG_FORMAT=json).

`logging_config(settings)` is one `logging.config.dictConfig` for the service and for
uvicorn, handed to uvicorn so that each worker process applies it too. Uvicorn's own
access log stays off: the service writes its own line per request (api/middleware.py,
logger `tfstorage.access`), with the route template, body bytes, the token's name and
the request id.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from tfstorage.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else was passed as `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC), level, logger, message, and the fields
    given as `extra=` (the access log's `request` mapping is merged in flat)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name in _STANDARD or name.startswith("_") or name == "color_message":
                continue
            if name == "request" and isinstance(value, dict):
                out.update(value)
            else:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def logging_config(settings: Settings) -> dict[str, Any]:
    formatter: dict[str, Any] = (
        {"()": "tfstorage.logs.JsonFormatter"}
        if settings.log_format == "json"
        else {"format": TEXT_FORMAT}
    )
    level = settings.log_level
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "service",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            # Uvicorn's loggers carry their own handlers unless told otherwise.
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }


def configure_logging(settings: Settings) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(settings))
