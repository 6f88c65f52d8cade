"""Log lines for log pipelines: one JSON object per line, with the request and account.

``configure_json_logging()`` puts :class:`JsonFormatter` on the root logger's handler (and
uvicorn's): every record becomes ``{"time", "level", "logger", "message", "request_id",
"account_id", ...}`` on one line. ``request_id`` and ``account_id`` come from context
variables the HTTP API sets per request (:func:`log_context`); outside a request they are
``null``. Messages are redacted before they are written: ``api_key=...`` in a query string
and anything that looks like a key (``dst_...``), so an access log or an exception text
cannot carry a credential. Tracebacks are kept (as ``exc_type`` and a redacted
``exc_text``): they hold code locations, and library messages are redacted like the rest.

On a Celery worker (``destinations worker --log-format json``) there is no request: the
lines of a task carry ``task_id``, ``result_set_id``, ``destination_id`` and ``account_id``
instead (set by the worker around each task with :func:`log_context`; these three keys
appear only where they are known). Celery attaches a ``data`` dict to its own task lines
(the task's arguments among it, which hold file references): it is never written, only its
task ``id`` is kept as ``task_id``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "JsonFormatter",
    "account_id_var",
    "configure_json_logging",
    "destination_id_var",
    "log_context",
    "redact",
    "request_id_var",
    "result_set_id_var",
    "task_id_var",
]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "destinations_request_id", default=None
)
account_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "destinations_account_id", default=None
)
task_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "destinations_task_id", default=None
)
result_set_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "destinations_result_set_id", default=None
)
destination_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "destinations_destination_id", default=None
)
#: Written only when set (worker lines), in this order after ``account_id``.
_OPTIONAL: Final = (
    ("task_id", task_id_var),
    ("result_set_id", result_set_id_var),
    ("destination_id", destination_id_var),
)

_SECRETS: Final = (
    (re.compile(r"(api_key=)[^&\s\"']*", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\bdst_[A-Za-z0-9_-]{16,}"), "dst_[redacted]"),
)
#: LogRecord attributes that are not "extra" fields.
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` without API keys (in a query string or on their own)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def log_context(
    *,
    request_id: str | None = None,
    account_id: int | None = None,
    task_id: str | None = None,
    result_set_id: str | None = None,
    destination_id: str | None = None,
) -> Iterator[None]:
    """Set the request id, account id (API) or task, result set and destination ids
    (workers) for log lines inside the block; None leaves a field as it is."""
    tokens: list[tuple[contextvars.ContextVar[Any], contextvars.Token[Any]]] = []
    values: tuple[tuple[contextvars.ContextVar[Any], object], ...] = (
        (request_id_var, request_id),
        (account_id_var, account_id),
        (task_id_var, task_id),
        (result_set_id_var, result_set_id),
        (destination_id_var, destination_id),
    )
    for var, value in values:
        if value is not None:
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": request_id_var.get(),
            "account_id": account_id_var.get(),
        }
        for name, var in _OPTIONAL:
            if (value := var.get()) is not None:
                entry[name] = value
        celery_data = getattr(record, "data", None)
        if (
            record.name.startswith("celery")
            and isinstance(celery_data, dict)
            and "task_id" not in entry
            and isinstance(celery_data.get("id"), str)
        ):
            entry["task_id"] = celery_data["id"]
        for key, value in vars(record).items():
            if key == "data" and record.name.startswith("celery"):
                continue  # the task's arguments (file references); the message says the rest
            if key not in _STANDARD and not key.startswith("_") and key not in entry:
                entry[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc_text"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_json_logging(level: int | str = logging.INFO) -> None:
    """Every log line of this process as JSON on stderr (root, ``destinations``, uvicorn's
    and Celery's loggers, and Python warnings)."""
    logging.captureWarnings(True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("destinations", "uvicorn", "uvicorn.error", "uvicorn.access", "celery"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


def uvicorn_json_log_config() -> dict[str, Any]:
    """A uvicorn ``log_config`` that writes every line through :class:`JsonFormatter`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {
            name: {"handlers": [], "level": "INFO", "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "destinations")
        },
    }
