"""The log lines of ``scheduler run``, text and JSON: what an operator and a log shipper read."""

from __future__ import annotations

import io
import json
import logging

from scheduler.logs import configure_logging

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
