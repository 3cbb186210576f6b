"""Every run's output, as an operator reads it: ``task-runs`` and ``task-logs`` against a real node.

Python callables write to their own run record (``print()``, ``sys.stderr``, log
records), as commands do, even while several of them run at once in one node.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.support.admin_cli import admin, ok, table_rows
from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

JOBS = '''\
import asyncio, logging, os, pathlib, sys, time

here = pathlib.Path(os.environ["JOBS_DIR"])
log = logging.getLogger("output_jobs")
ROUNDS = 20


def wait_for(path, ctx=None):
    deadline = time.monotonic() + 60  # bounded: never outlive a broken test
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


async def async_wait_for(path):
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def talker(ctx):
    print("talker says hello")
    print("talker complains", file=sys.stderr)
    sys.stdout.write("no newline; ")
    log.info("talker logged %s", ctx.task_id)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("talker caught")


def chatty():
    for line in range(20000):
        print(f"line {line:05d}")


def ping(ctx):  # a plain function: a worker thread
    for i in range(ROUNDS):
        print(f"ping {i}")
        log.info("ping logged %d", i)
        (here / f"ping-{i}").touch()
        wait_for(here / f"pong-{i}")


async def pong(ctx):  # a coroutine: on the node's event loop
    for i in range(ROUNDS):
        await async_wait_for(here / f"ping-{i}")
        print(f"pong {i}")
        log.info("pong logged %d", i)
        (here / f"pong-{i}").touch()


def twice(ctx):
    print(f"attempt {ctx.attempt}")
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails")


def waiter(ctx):
    print("waiting")
    (here / "waiter-started").touch()
    while not (here / "release-waiter").exists() and not ctx.cancelled.wait(0.01):
        pass
'''

BROKEN = """\
print("importing a broken module")
raise RuntimeError("cannot start")
"""


def task(name: str, python: str, schedule: str = "{after: 0s}", extra: str = "") -> str:
    return f"apiVersion: scheduler/v1\nkind: Task\nname: {name}\nschedule: {schedule}\nrun: {{python: {python}}}\n{extra}"


TASKS = "---\n".join([
    task("talker", "output_jobs:talker"),
    task("chatty", "output_jobs:chatty"),
    task("ping", "output_jobs:ping"),
    task("pong", "output_jobs:pong"),
    task("twice", "output_jobs:twice", extra="retry: {maxRetries: 1, retryDelay: 0s}\n"),
    task("broken", "broken_output_jobs:job", extra="retry: {maxRetries: 0}\n"),
    task("waiter", "output_jobs:waiter"),
    task("never", "output_jobs:talker", schedule="{at: '2099-01-01T00:00:00Z'}"),
])
LOG_LINE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|ERROR) output_jobs: "


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Daemon:
    root = tmp_path_factory.mktemp("output")
    (root / "output_jobs.py").write_text(JOBS)
    (root / "broken_output_jobs.py").write_text(BROKEN)
    (root / "tasks.d").mkdir()
    (root / "tasks.d" / "jobs.yaml").write_text(TASKS)
    daemon = Daemon(state_dir=root / "state", tasks_dir=root / "tasks.d",
                    env={"PYTHONPATH": str(root), "JOBS_DIR": str(root)})
    daemon.start()
    try:
        for name in ("talker", "chatty", "ping", "pong", "twice"):
            wait_until(lambda: (daemon.task(name) or {}).get("status") == "COMPLETED", timeout=60, what=f"{name} done")
        wait_until(lambda: (daemon.task("broken") or {}).get("status") == "FAILED", what="broken failed")
        wait_until(lambda: (root / "waiter-started").exists(), what="waiter running")
        yield daemon
    finally:
        (root / "release-waiter").touch()
        daemon.kill()


def newest_output(node: Daemon, name: str) -> str:
    return node.get(f"/cxs/tasks/{name}/runs")["list"][0]["output"]


# -- what a Python run writes ------------------------------------------------------------------


def test_prints_writes_and_log_records_of_a_function_are_its_runs_output(node):
    lines = newest_output(node, "talker").splitlines()
    assert lines[:2] == ["talker says hello", "talker complains"]
    assert re.fullmatch(rf"no newline; {LOG_LINE}talker logged talker", lines[2]), lines[2]
    assert re.fullmatch(rf"{LOG_LINE}talker caught", lines[3]), lines[3]
    assert lines[4] == "Traceback (most recent call last):" and lines[-1] == "ZeroDivisionError: division by zero"


def test_the_node_log_keeps_its_own_lines_and_not_the_runs_output(node):
    # INFO lines of the event loop are written within logs.BATCH_DELAY, not necessarily before the run's record.
    log = wait_until(lambda: re.search(r"INFO scheduler\.engine: run talker:\d+:1 success", node.log()) and node.log(),
                     what="the run's last line in the node's log")
    assert re.search(r"INFO scheduler\.engine: run talker:\d+:1 started", log)
    for written in ("talker says hello", "talker complains", "talker logged", "ping logged", "pong 3", "line 00042"):
        assert written not in log


def test_runs_at_the_same_time_keep_their_output_apart(node):
    """A thread and a coroutine write in turns, each waiting for the other's line before its next."""
    for name, other in (("ping", "pong"), ("pong", "ping")):
        lines = newest_output(node, name).splitlines()
        assert lines[0::2] == [f"{name} {i}" for i in range(20)]
        assert all(re.fullmatch(rf"{LOG_LINE}{name} logged {i}", line) for i, line in enumerate(lines[1::2])), lines
        assert not any(other in line for line in lines)


def test_the_output_kept_is_the_last_8_kib(node):
    output = newest_output(node, "chatty")
    assert len(output.encode()) <= 8 * 1024 and output.endswith("line 19998\nline 19999\n")
    assert len(output.encode()) > 8 * 1024 - len("line 00000\n")


def test_what_a_module_prints_when_it_is_imported_is_the_first_runs_output(node):
    [run] = node.get("/cxs/tasks/broken/runs")["list"]
    assert run["output"].startswith("importing a broken module\nTraceback (most recent call last):\n")
    assert run["output"].endswith("RuntimeError: cannot start\n")
    assert run["error"] == "cannot load python target 'broken_output_jobs:job': RuntimeError: cannot start"


# -- task-runs --------------------------------------------------------------------------------


def test_task_runs_lists_every_run_newest_first(node):
    header, rows, footer = table_rows(ok(admin(node, "task-runs", "twice")))
    assert header == ["#", "Slot", "Started", "Attempt", "Node", "Outcome", "Duration", "Exit", "Error"]
    assert [rows[n][3:6] + rows[n][7:] for n in ("1", "2")] == [
        ["2", "node-1", "success", "-", ""],
        ["1", "node-1", "failure", "-", "RuntimeError: the first attempt fails"],
    ]
    assert rows["1"][1] == rows["2"][1]  # one slot, two attempts
    assert footer == ["Showing runs #1-#2 of 2, newest first; scheduler task-logs twice N prints the output of run #N"]

    _, rows, footer = table_rows(ok(admin(node, "task-runs", "twice", "--offset", "1", "--limit", "1")))
    assert list(rows) == ["2"] and rows["2"][3] == "1"
    assert json.loads(ok(admin(node, "task-runs", "twice", "-o", "json"))) == node.get("/cxs/tasks/twice/runs?limit=20")
    assert ok(admin(node, "task-runs", "never")) == "No runs recorded for task never\n"


# -- task-logs --------------------------------------------------------------------------------


def test_task_logs_prints_the_newest_runs_output_by_default(node):
    assert ok(admin(node, "task-logs", "twice")) == "attempt 2\n"
    assert ok(admin(node, "task-logs", "twice", "1")) == "attempt 2\n"
    assert ok(admin(node, "task-logs", "twice", "2")).startswith("attempt 1\nTraceback (most recent call last):\n")


def test_task_logs_takes_a_run_id(node):
    runs = node.get("/cxs/tasks/twice/runs")["list"]
    for run in runs:
        assert ok(admin(node, "task-logs", "twice", run["runId"])) == run["output"]
        assert json.loads(ok(admin(node, "task-logs", "twice", run["runId"], "-o", "json"))) == run
    assert yaml.safe_load(ok(admin(node, "task-logs", "twice", "2", "-o", "yaml"))) == runs[1]


def test_task_logs_of_a_running_run_says_its_output_comes_when_it_ends(node):
    result = admin(node, "task-logs", "waiter")
    [run] = node.get("/cxs/tasks/waiter/runs")["list"]
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == f"scheduler: run {run['runId']} is still running: its output is recorded when it ends\n"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["task-logs", "nope"], 1, "scheduler: Task not found: nope\n"),
        (["task-runs", "nope"], 1, "scheduler: Task not found: nope\n"),
        (["task-logs", "never"], 1, "scheduler: Task never has no recorded run yet\n"),
        (["task-logs", "twice", "3"], 1, "scheduler: Task twice has 2 recorded run(s): there is no run #3\n"),
        (["task-logs", "twice", "twice:1:1"], 1, "scheduler: No run twice:1:1 is recorded for task twice\n"),
        (["task-logs", "nope", "nope:1:1"], 1, "scheduler: Task not found: nope\n"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_unknown_tasks_and_runs_are_refused_with_exit_code_1(node, args, code, message):
    result = admin(node, *args)
    assert (result.returncode, result.stderr, result.stdout) == (code, message, "")


@pytest.mark.parametrize(
    "args, message",
    [
        (["task-logs"], "the following arguments are required: ID"),
        (["task-logs", "twice", "0"], "argument RUN: a run number goes from 1 (the newest) to 1,000,001"),
        (["task-runs", "twice", "--limit", "0"], "argument --limit: must be at least 1"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_arguments_are_usage_errors(node, args, message):
    result = admin(node, *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith(f"usage: scheduler {args[0]} ") and result.stderr.endswith(f": error: {message}\n")


# -- code left running after its run was stopped ----------------------------------------------------

STUCK_JOBS = '''\
import os, pathlib, time

here = pathlib.Path(os.environ["JOBS_DIR"])


def wait_for(path):
    deadline = time.monotonic() + 60
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def stuck(ctx):
    print(f"attempt {ctx.attempt} starts")
    if ctx.attempt == 1:  # ignores its timeout: still running when the retry starts
        wait_for(here / "second-started")
        print("late line from attempt 1")
        (here / "late-written").touch()
    else:
        (here / "second-started").touch()
        wait_for(here / "late-written")
        print("attempt 2 ends")
'''


def test_code_left_running_never_writes_into_the_next_runs_output(tmp_path):
    (tmp_path / "stuck_jobs.py").write_text(STUCK_JOBS)
    (tmp_path / "tasks.d").mkdir()
    (tmp_path / "tasks.d" / "stuck.yaml").write_text(task(
        "stuck", "stuck_jobs:stuck", extra="retry: {maxRetries: 1, retryDelay: 0s}\n",
    ).replace("run: {python: stuck_jobs:stuck}", "run: {python: stuck_jobs:stuck, timeout: 1s}"))
    node = Daemon(state_dir=tmp_path / "state", tasks_dir=tmp_path / "tasks.d",
                  env={"PYTHONPATH": str(tmp_path), "JOBS_DIR": str(tmp_path)}).start()
    try:
        # Attempt 1 times out, gets its 10 s grace, and is left running while attempt 2 runs.
        wait_until(lambda: node.task("stuck")["status"] == "COMPLETED", timeout=60, what="the retry to complete")
        second, first = node.get("/cxs/tasks/stuck/runs")["list"]
        assert (first["outcome"], first["output"]) == ("timeout", "attempt 1 starts\n")
        assert (second["outcome"], second["output"]) == ("success", "attempt 2 starts\nattempt 2 ends\n")
        assert (tmp_path / "late-written").exists()  # the late line was written meanwhile
        assert ok(admin(node, "task-logs", "stuck")) == "attempt 2 starts\nattempt 2 ends\n"
    finally:
        node.kill()
