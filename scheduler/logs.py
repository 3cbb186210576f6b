"""Logging set-up, done once by the CLI: plain text for terminals, JSON lines for log shippers.

Both formats redact the URLs in a line (``scheduler.redact``): a run's error, an
exception's text or a traceback may quote a task's URL with its credentials.
What Python task code logs during a run is that run's output, not the node's log
(``scheduler.capture``).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from . import capture
from .redact import redact_text

# Keys modules pass in ``extra=`` so that a log line can be tied to a task, a run or a file.
CONTEXT_KEYS = ("task", "run", "file", "node")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the context keys present."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for key in CONTEXT_KEYS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def configure_logging(level: str = "warning", fmt: str = "text") -> None:
    # The real standard error, never the per-run proxy: the node's lines must not land in a run's output.
    handler = logging.StreamHandler(capture.real_stream(sys.stderr))
    handler.addFilter(capture.NodeLogFilter())  # what Python tasks log is their runs' output
    if fmt == "json":
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # Its INFO lines ("1 change detected") are the file watcher's own business: the reconciler logs what changed.
    logging.getLogger("watchfiles").setLevel(logging.WARNING)


def configured_format() -> str:
    """``json`` when ``configure_logging`` chose JSON lines, else ``text``: for helper processes to match."""
    json_lines = any(isinstance(handler.formatter, JsonFormatter) for handler in logging.getLogger().handlers)
    return "json" if json_lines else "text"
