"""Task bodies that write down their own life, for benchmarks that put nodes under faults.

Every run appends JSON lines to the file its task's parameters name (``log``), one line per
event, each written with a single ``write`` to a file opened with ``O_APPEND``: the lines of
runs going on at once (commands of several nodes, threads of one node) never mix. Each line
names its run, so that a checker needs nothing but this file to tell who ran what, when:

    {"event": "start", "task": "t", "slot": "2026-11-30T18:00:01Z", "attempt": 1, "run": "t:1764525601000:1",
     "node": "node-1", "pid": 4242, "via": "command", "at": 1764525601.123}

Events: ``start``; a ``tick`` every ``tick`` seconds while it works (a run killed with SIGKILL
writes nothing more: its last tick is its end); then ``end`` when it is done, or ``term`` (a
command stopped by SIGTERM) or ``stop`` (a callable that saw ``ctx.cancelled``). The
checkpointing body writes ``resumedFrom`` on its start, then ``checkpoint`` (``done``) after
each step, just before handing the checkpoint to the node.

Parameters: ``log`` (the file), ``seconds`` (how long a run works), ``tick`` (default 0.1);
``checkpointed`` takes ``steps`` and ``stepSeconds`` instead of ``seconds``. The directory of
this module goes on the nodes' PYTHONPATH (``python: lifelog:ticker``); command tasks run it as
a script (``command: [python, .../lifelog.py]``) and find the same values in their
``SCHEDULER_*`` environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

_files: dict[str, int] = {}  # log path -> descriptor, kept open for the life of the process
_files_lock = threading.Lock()


def _append(path: str, entry: Mapping[str, Any]) -> None:
    with _files_lock:
        fd = _files.get(path)
        if fd is None:
            fd = _files[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (json.dumps(entry) + "\n").encode())


class Life:
    """The identity of one run and the log it writes to."""

    def __init__(self, log: str, via: str, *, task: str, slot: str, attempt: int, run: str, node: str) -> None:
        self.log = log
        self.identity = {"task": task, "slot": slot, "attempt": attempt, "run": run, "node": node,
                         "pid": os.getpid(), "via": via}

    @classmethod
    def of_context(cls, ctx: Any, via: str) -> Life:
        """The run of a Python callable: its identity from the run context."""
        slot = ctx.scheduled_for.isoformat().replace("+00:00", "Z")
        return cls(ctx.parameters["log"], via, task=ctx.task_id, slot=slot, attempt=ctx.attempt,
                   run=ctx.run_id, node=ctx.node_id)

    @classmethod
    def of_environment(cls, parameters: Mapping[str, Any]) -> Life:
        """The run of a command: its identity from the ``SCHEDULER_*`` variables its node exported."""
        env = os.environ
        return cls(parameters["log"], "command", task=env["SCHEDULER_TASK_ID"], slot=env["SCHEDULER_SCHEDULED_FOR"],
                   attempt=int(env["SCHEDULER_ATTEMPT"]), run=env["SCHEDULER_RUN_ID"], node=env["SCHEDULER_NODE_ID"])

    def write(self, event: str, **fields: Any) -> None:
        _append(self.log, {"event": event, **self.identity, "at": round(time.time(), 3), **fields})


# -- the task bodies ---------------------------------------------------------------------------


def command() -> None:
    """A command's body: work ``seconds``, ticking; SIGTERM is written down, then obeyed."""
    parameters = json.loads(os.environ["SCHEDULER_PARAMETERS"])
    life = Life.of_environment(parameters)

    def stopped(signum: int, frame: Any) -> None:
        life.write("term")
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stopped)
    life.write("start")
    tick, end = parameters.get("tick", 0.1), time.monotonic() + parameters["seconds"]
    while time.monotonic() < end:
        time.sleep(tick)
        life.write("tick")
    life.write("end")


def ticker(ctx: Any) -> None:
    """A plain function (run in a thread): works ``seconds``, ticking, and stops when told to."""
    life = Life.of_context(ctx, "thread")
    life.write("start")
    tick, end = ctx.parameters.get("tick", 0.1), time.monotonic() + ctx.parameters["seconds"]
    while time.monotonic() < end:
        if ctx.cancelled.wait(tick):
            life.write("stop")
            return
        life.write("tick")
    life.write("end")


async def async_ticker(ctx: Any) -> None:
    """A coroutine function: works ``seconds``, ticking; the node cancels it to stop it."""
    life = Life.of_context(ctx, "coroutine")
    life.write("start")
    tick, end = ctx.parameters.get("tick", 0.1), time.monotonic() + ctx.parameters["seconds"]
    try:
        while time.monotonic() < end:
            await asyncio.sleep(tick)
            life.write("tick")
    except asyncio.CancelledError:
        life.write("stop")
        raise
    life.write("end")


def checkpointed(ctx: Any) -> None:
    """``steps`` steps of ``stepSeconds`` each, a checkpoint after each: a resumed run goes on from
    the last checkpoint its node stored, and says where it resumed from."""
    life = Life.of_context(ctx, "thread")
    done = (ctx.checkpoint_data or {}).get("done", 0)
    life.write("start", resumedFrom=done)
    tick, step_seconds = ctx.parameters.get("tick", 0.1), ctx.parameters["stepSeconds"]
    for step in range(done + 1, ctx.parameters["steps"] + 1):
        end = time.monotonic() + step_seconds
        while time.monotonic() < end:
            if ctx.cancelled.wait(tick):
                life.write("stop")
                return
            life.write("tick")
        life.write("checkpoint", done=step)
        ctx.checkpoint({"done": step})
    life.write("end")


# -- reading the log ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """One line of the log."""

    event: str
    task: str
    slot: str
    attempt: int
    run: str
    node: str
    pid: int
    via: str
    at: float
    extra: Mapping[str, Any] = field(default_factory=dict)  # resumedFrom, done

    @classmethod
    def from_line(cls, line: str) -> Record:
        entry = json.loads(line)
        known = {name: entry.pop(name) for name in cls.__dataclass_fields__ if name != "extra"}
        return cls(**known, extra=entry)


def read(path: str | os.PathLike) -> list[Record]:
    """The records written so far; a line still being written is left for the next look."""
    try:
        with open(path) as file:
            lines = file.read().split("\n")[:-1]
    except FileNotFoundError:
        return []
    return [Record.from_line(line) for line in lines]


if __name__ == "__main__":
    command()
