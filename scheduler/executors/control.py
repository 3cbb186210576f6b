"""The control file of a command run: JSON lines the process appends to report progress.

The contract (DESIGN.md, "Python builder"): the process finds the file's path in
``SCHEDULER_CONTROL_FILE`` and appends one JSON object per line:

    {"checkpoint": {...}}                    save a checkpoint
    {"step": "...", "details": {...}}        report the current step (details optional)

A line may carry both. A malformed line is logged with its line number and
skipped: a typo in a progress report never fails the run. A last line without
its newline is kept until the rest arrives; when the run has ended it is read
as it is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import RunContext

logger = logging.getLogger(__name__)

KNOWN_KEYS = frozenset({"checkpoint", "step", "details"})


class ControlReader:
    """Follows a control file from the last offset read and applies its lines to a run context."""

    def __init__(self, path: Path, ctx: RunContext) -> None:
        self._path = path
        self._ctx = ctx
        self._offset = 0
        self._partial = b""
        self._line_number = 0

    def read_new(self, final: bool = False) -> None:
        """Apply the complete lines appended since the last call (and a partial last one if ``final``)."""
        try:
            with self._path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            # The process may delete its control file; nothing more will come.
            logger.warning("run %s: control file %s was removed by the process", self._ctx.run_id, self._path)
            data = b""
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if final and self._partial.strip():
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            self._line_number += 1
            if line.strip():
                self._apply(line)

    def _apply(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            checkpoint, step, details = _parse(message)
        except (ValueError, TypeError) as exc:
            logger.warning(
                "run %s: %s line %d ignored: %s", self._ctx.run_id, self._path.name, self._line_number, _reason(exc)
            )
            return
        if checkpoint is not None:
            self._ctx.checkpoint(checkpoint)
        if step is not None:
            self._ctx.update_step(step, details)


def _parse(message: Any) -> tuple[Mapping | None, str | None, Mapping | None]:
    if not isinstance(message, dict):
        raise TypeError(f"expected a JSON object, got {type(message).__name__}")
    unknown = set(message) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (expected checkpoint, step, details)")
    checkpoint, step, details = message.get("checkpoint"), message.get("step"), message.get("details")
    if "checkpoint" in message and not isinstance(checkpoint, dict):
        raise TypeError("checkpoint must be a JSON object")
    if "step" in message and not isinstance(step, str):
        raise TypeError("step must be a string")
    if "details" in message:
        if step is None:
            raise ValueError("details need a step")
        if not isinstance(details, dict):
            raise TypeError("details must be a JSON object")
    if checkpoint is None and step is None:
        raise ValueError("expected a checkpoint or a step")
    return checkpoint, step, details


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON ({exc.msg} at column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start + 1})"
    return str(exc)
