"""The run lifecycle under faults, through real ``scheduler run`` processes: SIGKILL, SIGTERM, SIGINT, cancel.

Each test states what an operator must be able to count on; the tasks write
down what they did themselves, and the store file is read directly after the
nodes stopped.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(wait_ready: bool = True, **options) -> Daemon:
        daemon = Daemon(**options).start(wait_ready=wait_ready)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def task_file(name: str, schedule: str, run: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: scheduler/v1
        kind: Task
        name: {name}
        schedule: {schedule}
        run: {run}
        """
    ) + extra


def status_of(node: Daemon, item_id: str) -> str | None:
    try:
        return (node.task(item_id) or {}).get("status")
    except OSError:  # not listening yet, or gone
        return None


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def store_rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(query).fetchall()


def test_a_task_that_kills_its_node_runs_no_more_than_its_retry_budget(tmp_path, daemons):
    tasks, attempts = tmp_path / "tasks.d", tmp_path / "attempts"
    tasks.mkdir()
    (tasks / "suicide.yaml").write_text(task_file(
        "suicide", "{after: 0s}", f'{{shell: "echo $SCHEDULER_ATTEMPT >> {attempts}; kill -9 $PPID; sleep 30"}}',
        "retry: {maxRetries: 1}\n",
    ))
    config = tmp_path / "scheduler.yaml"
    config.write_text("leaseDuration: 1s\npollInterval: 100ms\n")
    options = dict(state_dir=tmp_path / "state", tasks_dir=tasks, config=config)

    outcomes = []
    for _ in range(5):  # restart the node as systemd would, until it survives
        node = daemons(wait_ready=False, **options)
        outcome = wait_until(
            lambda: ("killed" if node.process.poll() is not None
                     else "failed" if status_of(node, "suicide") == "FAILED" else None),
            timeout=60, what="the node to be killed by its task, or the task to fail",
        )
        outcomes.append(outcome)
        if outcome == "failed":
            break

    assert attempts.read_text().split() == ["1", "2"], outcomes
    assert outcomes == ["killed", "killed", "failed"]
    task = node.task("suicide")
    assert "retry budget is spent" in task["lastError"] and task["failureCount"] == 2
    assert [entry["outcome"] for entry in task["history"]] == ["crashed", "crashed"]


JOBS = '''
import json, os, time


def record(event, ctx):
    with open(os.environ["LIFECYCLE_LOG"], "a") as log:
        log.write(json.dumps({"event": event, "attempt": ctx.attempt, "at": time.time()}) + "\\n")


def stubborn(ctx):
    """Ignores its cancel, and takes a while to notice it is over."""
    record("start", ctx)
    deadline = time.monotonic() + ctx.parameters.get("seconds", 0)
    while time.monotonic() < deadline:
        time.sleep(0.05)
    record("end", ctx)


def noop(ctx):
    pass
'''


def events(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_retry_after_a_cancel_never_runs_beside_the_stopping_run(tmp_path, daemons):
    tasks, log = tmp_path / "tasks.d", tmp_path / "events"
    tasks.mkdir()
    (tmp_path / "lifecycle_jobs.py").write_text(JOBS)
    # The first run ignores its cancel for 5 s: more than the lease (2 s), less than the grace a
    # stopped function gets (10 s). The retry is asked for at once.
    (tasks / "stubborn.yaml").write_text(task_file(
        "stubborn", "{after: 0s}", "{python: lifecycle_jobs:stubborn}", "parameters: {seconds: 5}\n",
    ))
    config = tmp_path / "scheduler.yaml"
    config.write_text("leaseDuration: 2s\npollInterval: 100ms\n")
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks, config=config,
                   env={"PYTHONPATH": str(tmp_path), "LIFECYCLE_LOG": str(log)})

    wait_until(lambda: events(log), what="the first run to start")
    assert node.request("DELETE", "/cxs/tasks/stubborn")[0] == 204
    status, retried = node.request("POST", "/cxs/tasks/stubborn/retry")
    assert status == 200 and retried["status"] == "SCHEDULED"
    assert retried["lease"] is not None  # the cancelled run still holds it while it stops

    done = wait_until(lambda: status_of(node, "stubborn") == "COMPLETED" and node.task("stubborn"),
                      timeout=60, what="the retry to complete")
    first_start, first_end, second_start, second_end = events(log)
    assert [e["event"] for e in events(log)] == ["start", "end", "start", "end"]
    assert first_start["attempt"] == first_end["attempt"] == 1 and second_start["attempt"] == 2
    assert second_start["at"] >= first_end["at"], "the retry started while the cancelled run was still running"
    assert done["lease"] is None and done["successCount"] == 1
    assert [entry["outcome"] for entry in done["history"]] == ["success", "cancelled"]
    assert "KeyError" not in node.log() and "lost the lease" in node.log()


def test_a_retry_after_cancelling_a_command_does_not_wait_for_the_old_lease(tmp_path, daemons):
    tasks, starts = tmp_path / "tasks.d", tmp_path / "starts"
    tasks.mkdir()
    (tasks / "long.yaml").write_text(task_file(
        "long", "{after: 0s}", f'{{shell: "echo $SCHEDULER_ATTEMPT >> {starts}; exec sleep 600"}}',
    ))
    config = tmp_path / "scheduler.yaml"
    config.write_text("leaseDuration: 60s\npollInterval: 100ms\n")  # renewed every 20 s
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks, config=config)

    wait_until(lambda: starts.exists() and starts.read_text(), what="the command to start")
    first_lease = node.task("long")["lease"]
    assert node.request("DELETE", "/cxs/tasks/long")[0] == 204
    assert node.request("POST", "/cxs/tasks/long/retry")[0] == 200
    # The command is stopped, its lease released: the retry starts long before that lease would expire.
    wait_until(lambda: starts.read_text().split() == ["1", "2"], timeout=45, what="the retry to start")
    runs = node.get("/cxs/tasks/long/runs")["list"]
    assert [(run["attempt"], run["outcome"]) for run in runs] == [(2, None), (1, "cancelled")]
    assert instant(runs[0]["startedAt"]) < instant(first_lease["until"]), "the retry waited for the old lease"
    assert node.task("long")["lease"]["fence"] == first_lease["fence"] + 1


def test_a_clean_stop_leaves_no_task_running(tmp_path, daemons):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tmp_path / "lifecycle_jobs.py").write_text(JOBS)
    for part in range(4):  # 1,000 tasks every second, in four files
        (tasks / f"noop-{part}.yaml").write_text("---\n".join(
            task_file(f"noop-{part}-{i}", "{every: 1s}", "{python: lifecycle_jobs:noop}") for i in range(250)
        ))
    db = tmp_path / "tasks.db"
    options = dict(state_dir=tmp_path / "state", tasks_dir=tasks, store=f"sqlite:///{db}",
                   env={"PYTHONPATH": str(tmp_path)})

    for round_ in range(3):
        node = daemons(**options)
        finished = store_rows(db, "SELECT COUNT(*) FROM runs WHERE finished_at IS NOT NULL")[0][0]
        wait_until(lambda: store_rows(db, "SELECT COUNT(*) FROM runs WHERE finished_at IS NOT NULL")[0][0]
                   >= finished + 2_000, timeout=90, what=f"round {round_}: 2,000 more runs")
        assert node.stop(signal.SIGTERM, timeout=60) == 0

        assert store_rows(db, "SELECT item_id FROM tasks WHERE status = 'RUNNING' OR lease_owner IS NOT NULL") == []
        assert store_rows(db, "SELECT run_id FROM runs WHERE finished_at IS NULL") == []
        assert store_rows(db, "SELECT item_id, status FROM tasks WHERE status != 'SCHEDULED'") == []
        assert store_rows(db, "SELECT run_id, error FROM runs WHERE outcome != 'success'") == []


def test_a_long_one_shot_survives_rolling_restarts_without_retries(tmp_path, daemons):
    """Each restart stops the run after shutdownGrace and hands it back; none of that uses the one attempt."""
    tasks, starts = tmp_path / "tasks.d", tmp_path / "starts"
    tasks.mkdir()
    (tasks / "backup.yaml").write_text(task_file(
        "backup", "{after: 0s}",  # the fourth run is quick: the backup finishes
        f'{{shell: "echo $SCHEDULER_ATTEMPT >> {starts}; [ $SCHEDULER_ATTEMPT -ge 4 ] || exec sleep 600"}}',
        "retry: {maxRetries: 0}\n",
    ))
    config = tmp_path / "scheduler.yaml"
    config.write_text("shutdownGrace: 100ms\npollInterval: 100ms\n")
    options = dict(state_dir=tmp_path / "state", tasks_dir=tasks, config=config)
    for restart in (1, 2, 3):
        node = daemons(**options)
        wait_until(lambda: len(starts.read_text().split()) == restart if starts.exists() else False,
                   what=f"run {restart} to start")
        assert node.stop(signal.SIGTERM, timeout=30) == 0
    node = daemons(**options)
    wait_until(lambda: status_of(node, "backup") == "COMPLETED", what="the backup to complete")
    assert starts.read_text().split() == ["1", "2", "3", "4"]
    runs = node.get("/cxs/tasks/backup/runs")["list"]
    assert [(run["attempt"], run["outcome"]) for run in runs] == [
        (4, "success"), (3, "interrupted"), (2, "interrupted"), (1, "interrupted")]
    assert {run["error"] for run in runs[1:]} == {"Interrupted by scheduler shutdown"}
    assert node.task("backup")["failureCount"] == 0


def test_a_second_interrupt_hands_running_runs_back_at_once(tmp_path, daemons):
    tasks, pid_file = tmp_path / "tasks.d", tmp_path / "pid"
    tasks.mkdir()
    (tasks / "long.yaml").write_text(task_file(
        "long", "{after: 0s}", f'{{shell: "echo $$ > {pid_file}; exec sleep 600"}}',
    ))
    config = tmp_path / "scheduler.yaml"
    config.write_text("shutdownGrace: 10m\npollInterval: 100ms\n")
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks, config=config)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().endswith("\n"), what="the command to start")
    command_pid = int(pid_file.read_text())

    node.process.send_signal(signal.SIGINT)
    wait_until(lambda: "stopping on SIGINT: 1 running run(s) get up to 600s" in node.log(),
               what="the node to say it is stopping")
    assert node.process.poll() is None and status_of(node, "long") == "RUNNING"  # the grace is running

    node.process.send_signal(signal.SIGINT)
    assert node.process.wait(timeout=30) == 0  # long before the ten minutes of grace
    assert "SIGINT again, handing running runs back now" in node.log()
    wait_until(lambda: not alive(command_pid), what="the command to be stopped")

    db = tmp_path / "state" / "scheduler.db"
    [(status, error, owner)] = store_rows(db, "SELECT status, last_error, lease_owner FROM tasks WHERE item_id = 'long'")
    assert (status, error, owner) == ("CRASHED", "Interrupted by scheduler shutdown", None)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
