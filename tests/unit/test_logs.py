"""The log lines of ``scheduler run``, text and JSON: what an operator and a log shipper read."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading

from scheduler.logs import batch_lines, configure_logging
from tests.support.wait import wait_for

URL = "https://bot:pa55word@api.example.com/v1/items?token=T0KEN"
SHOWN = "https://bot:***@api.example.com/v1/items?token=***"


def cli_logger(fmt: str) -> tuple[logging.Logger, io.StringIO]:
    """A logger writing through the handler ``configure_logging`` installs, into a string.

    The root logger is left as it was: pytest's own handlers stay in place.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("info", fmt)
        [handler] = root.handlers
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    stream = io.StringIO()
    handler.setStream(stream)
    log = logging.Logger("scheduler.engine")  # not in the logger tree: nothing propagates to the root
    log.addHandler(handler)
    return log, stream


def log_a_failed_run(log: logging.Logger) -> None:
    """A run's error and an executor's traceback, both quoting a URL with its secrets."""
    log.warning("run %s failure: %s (next: %s)", "crm-export:1:1", f"HTTPError: 401 for url: {URL}", "FAILED",
                extra={"task": "crm-export"})
    try:
        raise ConnectionError(f"cannot reach {URL}")
    except ConnectionError:
        log.exception("executor of %s raised", "crm-export")


def test_text_lines_redact_urls_in_messages_and_tracebacks():
    log, stream = cli_logger("text")
    log_a_failed_run(log)
    text = stream.getvalue()
    assert f"WARNING scheduler.engine: run crm-export:1:1 failure: HTTPError: 401 for url: {SHOWN} (next: FAILED)" in text
    assert f"ConnectionError: cannot reach {SHOWN}" in text
    assert "pa55word" not in text and "T0KEN" not in text


def test_json_lines_redact_urls_in_messages_and_tracebacks():
    log, stream = cli_logger("json")
    log_a_failed_run(log)
    failure, raised = (json.loads(line) for line in stream.getvalue().splitlines())
    assert failure["message"] == f"run crm-export:1:1 failure: HTTPError: 401 for url: {SHOWN} (next: FAILED)"
    assert failure["task"] == "crm-export"
    assert raised["message"] == "executor of crm-export raised"
    assert raised["exception"].endswith(f"ConnectionError: cannot reach {SHOWN}")
    assert "pa55word" not in json.dumps([failure, raised]) and "T0KEN" not in json.dumps([failure, raised])


# -- a serving node batches its event loop's INFO lines ----------------------------------------


def test_a_serving_nodes_info_lines_are_written_together_soon_and_in_order():
    log, stream = cli_logger("text")

    async def written() -> str:
        return stream.getvalue()

    async def serve() -> None:
        with batch_lines(asyncio.get_running_loop(), log):
            log.info("run a:1:1 started")
            log.info("run a:1:1 success")
            assert stream.getvalue() == ""  # held for one write
            log.warning("run b:1:1 failure")  # at once, after the lines logged before it
            assert messages(stream) == ["run a:1:1 started", "run a:1:1 success", "run b:1:1 failure"]
            log.info("run c:1:1 started")
            assert "run c:1:1" not in stream.getvalue()
            await wait_for(written, lambda text: "run c:1:1" in text)  # within BATCH_DELAY, by the loop's timer
            log.info("run d:1:1 started")
        # Leaving serve writes what is held, and lines are written one by one again.
        assert messages(stream)[-2:] == ["run c:1:1 started", "run d:1:1 started"]
        log.info("run e:1:1 started")
        assert messages(stream)[-1] == "run e:1:1 started"

    asyncio.run(serve())


def test_lines_of_other_threads_are_written_at_once_after_the_held_ones():
    log, stream = cli_logger("json")

    async def serve() -> None:
        with batch_lines(asyncio.get_running_loop(), log):
            log.info("run a:1:1 started")
            thread = threading.Thread(target=log.info, args=("purged 3 run(s)",))
            thread.start()
            thread.join()
            # A loop blocked from here on would not hold back the thread's line, nor the ones before it.
            assert messages(stream) == ["run a:1:1 started", "purged 3 run(s)"]

    asyncio.run(serve())


def messages(stream: io.StringIO) -> list[str]:
    text = stream.getvalue()
    if text.startswith("{"):
        return [json.loads(line)["message"] for line in text.splitlines()]
    return [line.partition(": ")[2] for line in text.splitlines()]


# -- time stamps ---------------------------------------------------------------------------------


def test_each_line_has_its_own_time_in_both_formats():
    """Lines logged within one second and across seconds each carry their own time, to the millisecond."""
    times = (1_764_590_400.25, 1_764_590_400.75, 1_764_590_401.125, 1_764_590_400.5)  # exact in binary
    for fmt, stamp in (("text", lambda line: line[:23]), ("json", lambda line: json.loads(line)["time"])):
        log, stream = cli_logger(fmt)
        for created in times:
            record = log.makeRecord(log.name, logging.INFO, __file__, 1, "run %s started", ("r",), None)
            record.created, record.msecs = created, (created % 1) * 1000
            log.handle(record)
        stamps = [stamp(line) for line in stream.getvalue().splitlines()]
        if fmt == "json":  # UTC
            assert stamps == ["2025-12-01T12:00:00.250Z", "2025-12-01T12:00:00.750Z", "2025-12-01T12:00:01.125Z",
                              "2025-12-01T12:00:00.500Z"]
        else:  # local time, as logging.Formatter gives it
            expected = [logging.Formatter().formatTime(logging.makeLogRecord({"created": c, "msecs": (c % 1) * 1000}))
                        for c in times]
            assert stamps == expected
            assert [s[-4:] for s in stamps] == [",250", ",750", ",125", ",500"]
