"""What a task runs and when it will run next, as ``task-show`` and ``scheduler next ID`` show them.

``task-show`` shows the program, script, URL or python target, never what holds
credentials (request headers and body, env values, a URL's password and query
values); ``next`` lists fire times in the task's zone and in UTC across a
daylight-saving change, and the task's real next run (a retry) first.
"""

from __future__ import annotations

import json

import pytest

from tests.support.admin_cli import admin, ok, scheduler, show_fields, table_rows
from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRETS = ("s3cr3t", "env-secret-value", "hook-password", "query-secret", "header-secret", "body-secret", "sig-value")

TASKS = """\
apiVersion: scheduler/v1
kind: Task
name: backup
labels: {team: ops}
schedule: {cron: "30 2 * 3 0", timezone: Europe/Paris, missedRuns: skip}
run:
  command: [/usr/local/bin/backup, --to, "https://backup:s3cr3t@store.example.com/bucket?sig=sig-value"]
  env: {AWS_SECRET_ACCESS_KEY: env-secret-value}
  timeout: 1h30m
concurrency: replace
onCrash: manual
---
apiVersion: scheduler/v1
kind: Task
name: hook
schedule: {every: 1h, initialDelay: 1h}
run:
  http:
    url: "https://bot:hook-password@hooks.example.com/notify?token=query-secret"
    method: POST
    headers: {Authorization: "Bearer header-secret"}
    body: {password: body-secret}
---
apiVersion: scheduler/v1
kind: Task
name: script
schedule: {every: 1d, initialDelay: 1d}
run:
  shell: |
    echo one
    echo two
---
apiVersion: scheduler/v1
kind: Task
name: job
schedule: {at: "2099-01-01T00:00:00Z"}
run: {python: "some_package.jobs:nightly"}
---
apiVersion: scheduler/v1
kind: Task
name: failing
schedule: {every: 1d}
run: {shell: "exit 1"}
retry: {maxRetries: 2, retryDelay: 1h}
---
apiVersion: scheduler/v1
kind: Task
name: once
schedule: {after: 0s}
run: {shell: "true"}
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Daemon:
    root = tmp_path_factory.mktemp("details")
    (root / "tasks.d").mkdir()
    (root / "tasks.d" / "ops.yaml").write_text(TASKS)
    daemon = Daemon(state_dir=root / "state", tasks_dir=root / "tasks.d").start()
    try:
        wait_until(lambda: (daemon.task("failing") or {}).get("failureCount") == 1, what="failing to fail once")
        wait_until(lambda: (daemon.task("once") or {}).get("status") == "COMPLETED", what="once to complete")
        yield daemon
    finally:
        daemon.kill()


# -- task-show: what the task runs ----------------------------------------------------------------


def test_task_show_says_what_a_command_runs_and_how(node):
    text = ok(admin(node, "task-show", "backup"))
    shown = show_fields(text)
    assert shown["Run"] == "command: /usr/local/bin/backup --to 'https://backup:***@store.example.com/bucket?sig=***'"
    assert (shown["Timeout"], shown["Concurrency"], shown["On Crash"], shown["Missed Runs"]) == (
        "1h30m", "replace", "manual", "skip",
    )
    assert "Labels:\n  team: ops" in text
    task = node.task("backup")
    assert task["run"] == {
        "command": ["/usr/local/bin/backup", "--to", "https://backup:***@store.example.com/bucket?sig=***"],
        "timeout": 5_400_000,
    }
    assert (task["concurrency"], task["onCrash"], task["schedule"]["missedRuns"]) == ("replace", "manual", "skip")


def test_task_show_gives_an_http_calls_method_and_url_without_its_credentials(node):
    shown = show_fields(ok(admin(node, "task-show", "hook")))
    assert shown["Run"] == "http: POST https://bot:***@hooks.example.com/notify?token=***"
    assert (shown["Timeout"], shown["Concurrency"], shown["On Crash"], shown["Missed Runs"]) == (
        "none", "forbid", "resume", "runOnce",
    )
    assert node.task("hook")["run"] == {
        "http": {"method": "POST", "url": "https://bot:***@hooks.example.com/notify?token=***"}, "timeout": None,
    }


def test_task_show_gives_a_script_and_a_python_target(node):
    assert "Run:\n  shell:\n    echo one\n    echo two\n" in ok(admin(node, "task-show", "script"))
    assert show_fields(ok(admin(node, "task-show", "job")))["Run"] == "python: some_package.jobs:nightly"
    assert node.task("script")["run"] == {"shell": "echo one\necho two\n", "timeout": None}


def test_no_secret_of_a_run_section_is_ever_shown(node):
    for name, host in (("backup", "store.example.com"), ("hook", "hooks.example.com")):
        for output in ("table", "json", "yaml"):
            text = ok(admin(node, "task-show", name, "-o", output))
            assert host in text and not [secret for secret in SECRETS if secret in text], (name, output)
    listing = json.dumps(node.get("/cxs/tasks")) + json.dumps(node.get("/cxs/tasks/backup"))
    assert not [secret for secret in SECRETS if secret in listing]


# -- next ID: the fire times of a task in force ----------------------------------------------------------


def test_next_lists_a_cron_across_the_change_to_summer_time(node):
    """``30 2 * 3 0``: Sundays of March at 02:30, Paris time; on the last one 02:30 does not exist."""
    text = ok(admin(node, "next", "backup", "-n", "5", "--from", "2027-03-01T00:00:00Z"))
    title, table = text.split("\n", 1)
    assert title == "backup: cron 30 2 * 3 0 (Europe/Paris)"
    header, rows, _ = table_rows(table)
    assert header == ["#", "Europe/Paris", "UTC", "Note"]
    assert [rows[str(n)][1:] for n in range(1, 6)] == [
        ["2027-03-07 02:30:00 CET", "2027-03-07 01:30:00", ""],
        ["2027-03-14 02:30:00 CET", "2027-03-14 01:30:00", ""],
        ["2027-03-21 02:30:00 CET", "2027-03-21 01:30:00", ""],
        ["2027-03-28 03:00:00 CEST", "2027-03-28 01:00:00", "02:30 does not exist that day (clocks go forward): runs at 03:00"],
        ["2028-03-05 02:30:00 CET", "2028-03-05 01:30:00", ""],
    ]


def test_next_json_is_the_apis_answer(node):
    shown = json.loads(ok(admin(node, "next", "backup", "-n", "3", "--from", "2027-03-20T00:00:00Z", "-o", "json")))
    assert shown == node.get("/cxs/tasks/backup/next?count=3&from=2027-03-20T00:00:00Z")
    assert [(run["local"], run["fireTime"]) for run in shown["list"]] == [
        ("2027-03-21T02:30:00+01:00", "2027-03-21T01:30:00Z"),
        ("2027-03-28T03:00:00+02:00", "2027-03-28T01:00:00Z"),
        ("2028-03-05T02:30:00+01:00", "2028-03-05T01:30:00Z"),
    ]


def test_next_starts_with_the_tasks_real_next_run(node):
    task = node.task("failing")
    shown = node.get("/cxs/tasks/failing/next?count=2")
    retry, following = shown["list"]
    assert (retry["fireTime"], retry["note"]) == (task["nextScheduledExecution"], "attempt 2 (a retry)")
    assert retry["slot"] < retry["fireTime"] < following["slot"]
    _, rows, _ = table_rows(ok(admin(node, "next", "failing", "-n", "2")).split("\n", 1)[1])
    assert rows["1"][2] == "attempt 2 (a retry)"


def test_next_of_a_finished_task_says_why_there_is_none(node):
    assert ok(admin(node, "next", "once")) == "once: once, 0s after registration\nNo next run: the task is COMPLETED\n"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["next", "nope"], 1, "scheduler: Task not found: nope\n"),
        (["next", "nope", "--name", "x"], 2, "scheduler: --name picks a task of a file, and there is no file nope\n"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_next_refusals(node, args, code, message):
    result = admin(node, *args)
    assert (result.returncode, result.stderr, result.stdout) == (code, message, "")


@pytest.mark.parametrize(
    "args", [["next"], ["next", "backup", "-n", "0"], ["next", "backup", "-n", "1001"], ["next", "backup", "--from", "2027-03-01"]],
    ids=" ".join,
)
def test_next_usage_errors_exit_2(args):
    result = scheduler(*args)
    assert result.returncode == 2 and "usage: scheduler next" in result.stderr and result.stdout == ""
