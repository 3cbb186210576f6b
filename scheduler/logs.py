"""Logging set-up, done once by the CLI: plain text for terminals, JSON lines for log shippers.

Both formats redact the URLs in a line (``scheduler.redact``): a run's error, an
exception's text or a traceback may quote a task's URL with its credentials.
What Python task code logs during a run is that run's output, not the node's log
(``scheduler.capture``).

A busy node logs a line as each run starts and ends. Written one by one, each
line is a ``write()`` to standard error that lets go of the GIL while the
store's thread waits for it: measured through ``scheduler run`` at 700 runs a
second, a fifth of the node's CPU went to those hand-overs. So while a node
serves (``batch_lines``), what its event loop logs below WARNING is written
in batches, at most ``BATCH_DELAY`` after it was logged; each line keeps the
time it was logged at. Warnings and errors, and whatever another thread logs,
are written at once, after the batch before them: the order of lines is kept,
and a loop that blocks holds back at most its own INFO lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from . import capture
from .redact import redact_text

# Keys modules pass in ``extra=`` so that a log line can be tied to a task, a run or a file.
CONTEXT_KEYS = ("task", "run", "file", "node")


class _Formatter(logging.Formatter):
    """``logging.Formatter`` that formats each second's time stamp once: a busy node logs thousands of
    lines a second, and ``time.strftime`` was a sixth of a line's cost."""

    _stamp: tuple[int, str | None, str] = (-1, None, "")  # (second, datefmt, its text)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached_second, cached_format, text = self._stamp
        if second != cached_second or datefmt != cached_format:
            text = time.strftime(datefmt or self.default_time_format, self.converter(second))
            self._stamp = (second, datefmt, text)  # one assignment: threads format without a lock
        return text if datefmt else self.default_msec_format % (text, record.msecs)


class JsonFormatter(_Formatter):
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


class TextFormatter(_Formatter):
    """``time LEVEL logger: message``, then the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


# How late a batched line may be written. A node SIGKILLed loses at most this much of its INFO lines.
BATCH_DELAY = 0.05


class BatchingHandler(logging.StreamHandler):
    """A ``StreamHandler`` that, once bound to a running event loop, batches that loop's lines below WARNING."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._batch: list[str] = []

    def bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Batch the lines ``loop`` logs from now on (its thread is the caller's); None: write each at once."""
        with self.lock:
            self._flush_held()
            self._loop = loop
            self._loop_thread = None if loop is None else threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._batch.append(self.format(record) + self.terminator)
            if self._loop is None or record.levelno >= logging.WARNING or threading.get_ident() != self._loop_thread:
                self.flush()  # with the lines held before it: the order of lines is kept
            elif len(self._batch) == 1:
                self._loop.call_later(BATCH_DELAY, self._flush_held)
        except RecursionError:  # as StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        with self.lock:  # re-entrant: emit() calls it holding the lock
            batch, self._batch = "".join(self._batch), []
            if batch:
                self.stream.write(batch)
            super().flush()

    def _flush_held(self) -> None:
        """``flush()`` for callers that must not raise: the loop's timer, and ``bind``."""
        try:
            self.flush()
        except Exception:  # reported as a line that cannot be written is, never raised into the loop
            self.handleError(logging.makeLogRecord({"msg": "log lines could not be written"}))


@contextmanager
def batch_lines(loop: asyncio.AbstractEventLoop, logger: logging.Logger | None = None) -> Iterator[None]:
    """While in it, the handlers ``configure_logging`` put on ``logger`` (the root logger) batch
    ``loop``'s INFO and DEBUG lines (see the module's text)."""
    handlers = [handler for handler in (logger or logging.getLogger()).handlers if isinstance(handler, BatchingHandler)]
    for handler in handlers:
        handler.bind(loop)
    try:
        yield
    finally:
        for handler in handlers:
            handler.bind(None)


def configure_logging(level: str = "warning", fmt: str = "text") -> None:
    # The real standard error, never the per-run proxy: the node's lines must not land in a run's output.
    handler = BatchingHandler(capture.real_stream(sys.stderr))
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
