"""Logging set-up: one JSON object per line in production, readable lines in `dev`.

A record's `extra={...}` fields become keys of the JSON object. The root logger is never put
at DEBUG by Faust's spinner, and the chatty client libraries stay at WARNING unless the worker
itself runs at DEBUG. Identifiers of customers are never passed to INFO logs by our code.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from schemas.codec import dumps

__all__ = ["ConsoleFormatter", "JsonFormatter", "configure_logging", "error_summary"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}
_QUIET = ("aiokafka", "kafka", "faust", "mode", "aiohttp.access", "asyncio")


def error_summary(exc: BaseException) -> str:
    """An exception as its type and where it was raised (`KeyError at processor.py:312`),
    without its message: a message may quote the data it failed on, e.g. a customer key."""
    frame = None
    tb = exc.__traceback__
    while tb is not None:
        frame, tb = tb, tb.tb_next
    if frame is None:
        return type(exc).__name__
    name = frame.tb_frame.f_code.co_filename.rsplit("/", 1)[-1]
    return f"{type(exc).__name__} at {name}:{frame.tb_lineno}"


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "event": message, **extra}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _context(record).items():
            body[key] = value if isinstance(value, (str, int, float, bool, type(None))) \
                else str(value)
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return dumps(body).decode()


class ConsoleFormatter(logging.Formatter):
    """`HH:MM:SS level  message  key=value ...` for people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{stamp} {record.levelname.lower():<7} {record.getMessage()}"
        if extra:
            line += f"  {extra}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Install one stderr handler on the root logger with the chosen format."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _QUIET:
        logging.getLogger(name).setLevel(numeric if numeric <= logging.DEBUG
                                         else max(numeric, logging.WARNING))
