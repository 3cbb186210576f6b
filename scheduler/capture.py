"""What Python task code writes, captured per run: ``print()``, ``sys.stderr``, log records.

A command's output goes to its run record through a pipe of its own. Python
callables run inside the node's process (in worker threads, or as coroutines on
the loop), where standard output, standard error and the logging tree are shared
by every run at once and by the node itself. So capture is per run, not per
process: the run's ``RunOutput`` is the value of the context variable
``CURRENT`` in the context the run's code executes in (the executor copies a
context for each run, sets ``CURRENT`` there, and runs the thread or the
coroutine in it), and

- ``sys.stdout`` and ``sys.stderr`` are replaced, once, by proxies that write to
  the current run's output, and to the real stream outside runs;
- a log record made inside a run is written to the run's output as it is
  created (a record factory: it needs no handler on the root logger, so
  ``logging.basicConfig`` and Python's last-resort handler behave as before);
  the node's own log handler (``NodeLogFilter``) leaves those records out, as it
  never shows a command's output. Records of the scheduler's own loggers
  (``scheduler.*``) are the node's, even when made from a run's thread.

Not captured: what a run's code writes to file descriptors 1 and 2 directly (C
extensions, child processes), and what threads it starts itself write (a new
thread starts with an empty context; ``asyncio.to_thread`` copies it, and so is
captured).

This module imports nothing from the rest of the package: ``logs`` uses it when
any ``scheduler`` command starts.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import Any, Callable, TextIO

CURRENT: contextvars.ContextVar[RunOutput | None] = contextvars.ContextVar("scheduler_run_output", default=None)

# How a log record reads in a run's output; the time tells apart lines written at different moments.
RECORD_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NODE_LOGGER = "scheduler"

_install_lock = threading.Lock()
_formatter = logging.Formatter(RECORD_FORMAT)


class RunOutput:
    """The tail of one run's output: written from any thread, at most about ``2 * limit`` bytes held.

    ``data()`` may be longer than ``limit``: the executor cuts the tail it keeps
    (``executors.base.text_tail``) once it has joined other text to it.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if len(text) > self._limit:  # a character is at least one byte: the last `limit` ones are enough
            text = text[-self._limit:]
        data = text.encode("utf-8", "replace")  # lone surrogates from odd input must not fail a print()
        with self._lock:
            self._data += data
            if len(self._data) > 2 * self._limit:
                del self._data[: len(self._data) - self._limit]
                while self._data and 0x80 <= self._data[0] <= 0xBF:  # never start inside a UTF-8 character
                    del self._data[0]

    def data(self) -> bytes:
        with self._lock:
            return bytes(self._data)


def run_context(output: RunOutput) -> contextvars.Context:
    """A copy of the current context in which ``output`` receives what the code run in it writes."""
    context = contextvars.copy_context()
    context.run(CURRENT.set, output)
    return context


class _RunStream:
    """``sys.stdout`` or ``sys.stderr``: the current run's output inside a run, the real stream outside."""

    def __init__(self, real: TextIO) -> None:
        self.real = real

    def write(self, text: str) -> int:
        output = CURRENT.get()
        if output is None:
            return self.real.write(text)
        output.write(text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if CURRENT.get() is None:
            self.real.flush()

    def isatty(self) -> bool:
        return CURRENT.get() is None and self.real.isatty()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno(), buffer...: the real stream's
        return getattr(self.real, name)


def real_stream(stream: Any) -> Any:
    """The stream behind a proxy (or ``stream`` itself): what the node's log handler writes to."""
    return stream.real if isinstance(stream, _RunStream) else stream


def is_node_record(record: logging.LogRecord) -> bool:
    return record.name == NODE_LOGGER or record.name.startswith(NODE_LOGGER + ".")


class NodeLogFilter(logging.Filter):
    """For the node's log handler: a record made inside a run is the run's output, unless it is the node's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return CURRENT.get() is None or is_node_record(record)


class _CapturingFactory:
    """A log record factory that also writes each record made inside a run to the run's output."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        output = CURRENT.get()
        if output is not None and not is_node_record(record):
            try:
                text = _formatter.format(record)
            except Exception as exc:  # a bad format string must not fail the task's logging call
                text = f"{record.levelname} {record.name}: unformattable log record {record.msg!r}: {exc}"
            output.write(text + "\n")
        return record


def install() -> None:
    """Put the proxies and the record factory in place; again if something replaced them since.

    Called at the start of every Python run: cheap when all is in place, and it
    follows a program (or a test harness) that swapped ``sys.stdout`` meanwhile.
    """
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _RunStream):
                setattr(sys, name, _RunStream(stream))
        factory = logging.getLogRecordFactory()
        if not isinstance(factory, _CapturingFactory):
            logging.setLogRecordFactory(_CapturingFactory(factory))
