"""The admin commands as an operator uses them: ``scheduler task-...`` processes against a running node.

One node (``node``) serves this module; the tests leave its tasks as they found
them or act on tasks of their own. Tests that need other settings (tokens, a
crash, purging) are in ``test_admin_cli_own_nodes.py``.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading

import pytest
import yaml

from tests.support.admin_cli import (
    ABSOLUTE_DATE, TASK_COLUMNS, admin, client_env, node_with_tasks, ok, scheduler, show_fields, table_rows,
    write_config,
)
from tests.support.daemon import ROOT, Daemon, free_port, scheduler_command
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CLEAR_SCREEN = "\x1b[H\x1b[2J"

TASKS = """\
apiVersion: scheduler/v1
kind: Task
name: disk-report
type: diskReport
description: Report disk usage
schedule: {every: 1h}
run:
  shell: |
    echo '{"step": "scanning", "details": {"files": 3}}' >> "$SCHEDULER_CONTROL_FILE"
    echo "report for $SCHEDULER_TASK_ID"
parameters: {mount: /var}
---
apiVersion: scheduler/v1
kind: Task
name: flaky-import
type: dataImport
schedule: {after: 0s}
run: {shell: "echo boom >&2; exit 3"}
retry: {maxRetries: 0}
---
apiVersion: scheduler/v1
kind: Task
name: cancel-me
schedule: {every: 1h}
run: {shell: "true"}
---
apiVersion: scheduler/v1
kind: Task
name: local-cache
type: localCache
schedule: {every: 1h}
run: {shell: "true"}
persistent: false
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Daemon:
    daemon = node_with_tasks(tmp_path_factory.mktemp("admin"), {"ops.yaml": TASKS})
    try:
        for name in ("disk-report", "cancel-me", "local-cache"):
            wait_until(lambda: (daemon.task(name) or {}).get("successCount") == 1, what=f"{name} ran")
        wait_until(lambda: (daemon.task("flaky-import") or {}).get("status") == "FAILED", what="flaky-import failed")
        yield daemon
    finally:
        daemon.kill()


# -- task-list ------------------------------------------------------------------------------


def test_task_list_draws_unomis_table(node):
    header, rows, footer = table_rows(ok(admin(node, "task-list")))
    assert header == TASK_COLUMNS
    assert sorted(rows) == ["cancel-me", "disk-report", "flaky-import", "local-cache"]
    _, task_type, status, next_run, last_run, failures, persistent = rows["flaky-import"]
    assert (task_type, status, next_run, failures, persistent) == ("dataImport", "FAILED", "-", "1", "Storage")
    assert re.fullmatch(ABSOLUTE_DATE, last_run)
    assert rows["disk-report"][1:3] == ["diskReport", "SCHEDULED"]
    assert re.fullmatch(ABSOLUTE_DATE, rows["disk-report"][3])
    assert rows["local-cache"][6] == "Memory"
    assert footer == ["Showing 4 task(s) (3 in storage, 1 in memory)"]


def test_task_list_filters_and_says_what_it_left_out(node):
    _, rows, footer = table_rows(ok(admin(node, "task-list", "-s", "failed")))
    assert list(rows) == ["flaky-import"] and footer == ["Showing 1 task(s) (1 in storage, 0 in memory)"]
    _, rows, _ = table_rows(ok(admin(node, "task-list", "-t", "localCache")))
    assert list(rows) == ["local-cache"]
    _, rows, footer = table_rows(ok(admin(node, "task-list", "--limit", "2")))
    assert list(rows) == ["cancel-me", "disk-report"]
    assert footer == [
        "Showing 2 task(s) (2 in storage, 0 in memory)",
        "2 more task(s) not shown: raise --limit or filter with -s, -t or -l",
    ]


def test_task_list_json_and_yaml_are_the_apis_answer(node):
    as_json = json.loads(ok(admin(node, "task-list", "-s", "FAILED", "-o", "json")))
    assert as_json == node.get("/cxs/tasks?status=FAILED")
    as_yaml = yaml.safe_load(ok(admin(node, "task-list", "-t", "dataImport", "-o", "yaml")))
    assert as_yaml == node.get("/cxs/tasks?type=dataImport")
    assert as_yaml["list"][0]["itemId"] == "flaky-import" and as_yaml["totalSize"] == 1


def test_task_list_fits_an_80_column_terminal(node):
    text = ok(admin(node, "task-list", env={"COLUMNS": "80"}))
    assert all(len(line) <= 80 for line in text.splitlines()), text
    header, rows, footer = table_rows(text)
    # Narrow: dates become relative and the Persistent column goes (the footer counts them); no ID is cut.
    assert header == TASK_COLUMNS[:-1]
    assert sorted(rows) == ["cancel-me", "disk-report", "flaky-import", "local-cache"]
    assert rows["flaky-import"][3] == "-" and rows["flaky-import"][4].endswith(" ago")
    assert rows["cancel-me"][3].startswith("in ")
    assert footer == ["Showing 4 task(s) (3 in storage, 1 in memory)"]


def test_task_list_watch_redraws_in_place_until_interrupted(node):
    command = scheduler_command("task-list", "--watch", "0.2", "--url", node.url, "--token", node.token)
    output: list[str] = []
    with subprocess.Popen(
        command, cwd=ROOT, env=client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        reader = threading.Thread(target=lambda: output.extend(iter(lambda: process.stdout.read(1), "")), daemon=True)
        reader.start()
        try:
            wait_until(lambda: "".join(output).count("Showing 4 task(s)") >= 2, timeout=20, what="two redraws")
        finally:
            process.send_signal(signal.SIGINT)  # Ctrl-C
            returncode = process.wait(timeout=30)
            reader.join(timeout=10)
        errors = process.stderr.read()
    screens = "".join(output).split(CLEAR_SCREEN)
    assert screens[0] == "" and len(screens) >= 3
    first = screens[1].splitlines()
    assert re.fullmatch(rf"Every 0.2s: {node.url}   {ABSOLUTE_DATE} UTC", first[0])
    assert table_rows("\n".join(first[2:]))[0] == TASK_COLUMNS
    assert returncode == 130 and errors == ""


# -- task-show ------------------------------------------------------------------------------


def test_task_show_gives_every_field_the_runs_and_the_output(node):
    text = ok(admin(node, "task-show", "flaky-import"))
    shown = show_fields(text)
    source = node.task("flaky-import")["source"]
    assert shown["ID"] == "flaky-import" and shown["Type"] == "dataImport" and shown["Status"] == "FAILED"
    assert shown["Source"] == f"{source['path']}:{source['line']}" and source["path"].endswith("ops.yaml")
    assert shown["Schedule"] == "once, 0s after registration"
    assert shown["Persistent"] == "Storage" and shown["Failures"] == "1" and shown["Max Retries"] == "0"
    assert shown["Runnable"] == "yes" and "Executor Type" not in shown  # a run: section: any executor node
    assert shown["Last Error"] == "exit code 3"
    runs = text.split("Recent runs (newest first):\n", 1)[1]
    header, rows, after = table_rows(runs)
    assert header == ["Started", "Attempt", "Node", "Outcome", "Duration", "Exit", "Error"]
    [run] = rows.values()
    assert run[1:4] == ["1", "node-1", "failure"] and run[5:] == ["3", "exit code 3"]
    assert after[-2].startswith("Output of the newest run (flaky-import:") and after[-1] == "  boom"

    text = ok(admin(node, "task-show", "disk-report"))
    shown = show_fields(text)
    assert shown["Description"] == "Report disk usage" and shown["Schedule"] == "every 1h (fixed rate)"
    assert shown["Current Step"] == "scanning"
    assert "Status Details:\n  files: 3" in text and "Parameters:\n  mount: /var" in text
    assert text.rstrip().endswith("  report for disk-report")


def test_task_show_json_is_the_task_its_runs_and_declarations(node):
    shown = json.loads(ok(admin(node, "task-show", "flaky-import", "-o", "json")))
    runs = shown.pop("runs")
    declarations = shown.pop("declarations")
    assert shown == node.get("/cxs/tasks/flaky-import")
    assert runs == node.get("/cxs/tasks/flaky-import/runs")["list"]
    assert declarations == node.get("/cxs/tasks/flaky-import/declarations")
    assert runs[0]["output"] == "boom\n" and runs[0]["exitCode"] == 3


# -- actions --------------------------------------------------------------------------------


def test_cancel_then_retry_with_a_fresh_budget(node):
    assert ok(admin(node, "task-cancel", "cancel-me")) == "Task cancel-me cancelled: status CANCELLED\n"
    assert node.task("cancel-me")["status"] == "CANCELLED"

    again = admin(node, "task-cancel", "cancel-me")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == "scheduler: Task cancel-me is already CANCELLED: a FAILED or CANCELLED task cannot be cancelled\n"

    retried = json.loads(ok(admin(node, "task-retry", "cancel-me", "--reset", "-o", "json")))
    assert (retried["itemId"], retried["status"], retried["failureCount"]) == ("cancel-me", "SCHEDULED", 0)
    wait_until(lambda: node.task("cancel-me")["successCount"] == 2, what="cancel-me to run again after the retry")


def test_task_config_sets_shows_and_clears_retry_overrides(node):
    as_declared = "Task disk-report: maxRetries 3, retryDelay 1m (as declared: no override)\n"
    assert ok(admin(node, "task-config", "disk-report")) == as_declared
    text = ok(admin(node, "task-config", "disk-report", "--max-retries", "5", "--retry-delay", "90s"))
    assert text == (
        "Task disk-report: maxRetries 5, retryDelay 1m30s "
        "(set by task-config: maxRetries, retryDelay; kept when its file is reloaded)\n"
    )
    task = node.task("disk-report")
    assert (task["maxRetries"], task["retryDelay"]) == (5, 90000)
    assert task["overrides"] == {"maxRetries": 5, "retryDelay": 90000}
    shown = show_fields(ok(admin(node, "task-show", "disk-report")))
    assert shown["Max Retries"] == "5 (set by task-config)" and shown["Retry Delay"] == "1m30s (set by task-config)"
    assert ok(admin(node, "task-config", "disk-report")) == text  # no flag: the settings in force, unchanged
    assert json.loads(ok(admin(node, "task-config", "disk-report", "-o", "json")))["overrides"] == task["overrides"]

    assert ok(admin(node, "task-config", "disk-report", "--clear")) == as_declared
    task = node.task("disk-report")
    assert (task["maxRetries"], task["retryDelay"], "overrides" in task) == (3, 60000, False)
    assert ok(admin(node, "reload")).startswith("Reloaded: ")  # the file's values stay: no override comes back
    assert "overrides" not in node.task("disk-report")


def test_task_run_makes_the_task_run_now(node):
    before = node.task("disk-report")["successCount"]
    text = ok(admin(node, "task-run", "disk-report"))
    assert text.startswith("Task disk-report will run now: status ")
    wait_until(lambda: node.task("disk-report")["successCount"] == before + 1, what="disk-report to run")


def test_node_list(node):
    header, rows, footer = table_rows(ok(admin(node, "node-list")))
    assert header == ["Node", "Executor", "Heartbeat", "Running", "Stuck", "Started", "Version", "Listen", "Task Types"]
    assert rows["node-1"][1] == "yes" and rows["node-1"][4] == "0" and rows["node-1"][7] == f"127.0.0.1:{node.port}"
    assert rows["node-1"][8] == "-"  # no executor registered for a type: it runs tasks with a run: section
    assert footer == ["1 node(s)"]
    nodes = yaml.safe_load(ok(admin(node, "node-list", "-o", "yaml")))
    assert nodes["totalSize"] == 1 and nodes["list"][0]["nodeId"] == "node-1" and nodes["list"][0]["executor"] is True


def test_reload_reports_bad_files_with_their_lines(node):
    bad = node.tasks_dir / "broken.yaml"
    bad.write_text("apiVersion: scheduler/v1\nkind: Task\nname: broken\nschedule: {every: 1h}\nrun: {shell: x}\nretyr: {}\n")
    try:
        result = admin(node, "reload")
        assert result.returncode == 1 and result.stderr == ""
        lines = result.stdout.splitlines()
        assert re.fullmatch(r"Reloaded: \d+ created, \d+ updated, \d+ removed, 1 file\(s\) rejected", lines[0])
        assert lines[1].startswith(f"{bad}:6:1: ") and "retyr" in lines[1]
        report = json.loads(admin(node, "reload", "-o", "json").stdout)
        assert report["ok"] is False and report["rejectedFiles"] == 1
    finally:
        bad.unlink()
    assert re.fullmatch(r"Reloaded: \d+ created, \d+ updated, \d+ removed, 0 file\(s\) rejected\n", ok(admin(node, "reload")))


# -- where the URL and the token come from ---------------------------------------------------


def test_url_and_token_from_the_environment(node):
    text = ok(scheduler("task-list", env={"SCHEDULER_URL": node.url, "SCHEDULER_TOKEN": node.token}))
    assert "Showing 4 task(s)" in text


def test_on_the_node_no_token_flag_is_needed(node, tmp_path):
    """The node's config names its state directory; the CLI reads the admin token file there."""
    config = write_config(tmp_path / "scheduler.yaml", f"stateDir: {node.state_dir}\n")
    text = ok(scheduler("task-list", "--url", node.url, env={"SCHEDULER_CONFIG": str(config)}))
    assert "Showing 4 task(s)" in text


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["task-show", "nope"], 1, "scheduler: Task not found: nope\n"),
        (["task-cancel", "nope"], 1, "scheduler: Task not found: nope\n"),
        (["task-show", "../nodes"], 1, "scheduler: Task not found: ../nodes\n"),  # an id, never a path
        (["task-resume", "local-cache"], 1,
         "scheduler: Task local-cache is SCHEDULED: only a CRASHED task can be resumed\n"),
        (["task-retry", "local-cache"], 1,
         "scheduler: Task local-cache is SCHEDULED: only a FAILED or CANCELLED task can be retried\n"),
        (["task-config", "disk-report", "--clear", "--max-retries", "1"], 2,
         "scheduler: task-config: --clear cannot be combined with --max-retries or --retry-delay\n"),
        (["task-config", "nope", "--clear"], 1, "scheduler: Task not found: nope\n"),
        (["task-config", "disk-report", "--retry-delay", "soon"], 2,
         "scheduler: --retry-delay: expected a duration such as 90s, 5m, 1h30m or 7d, got 'soon'\n"),
        (["task-list", "--watch", "1", "-o", "json"], 2,
         "scheduler: --watch redraws the table: it cannot be combined with -o json\n"),
        (["task-list", "--watch", "1", "-o", "name"], 2,
         "scheduler: --watch redraws the table: it cannot be combined with -o name\n"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_refusals_are_one_line_with_their_exit_code(node, args, code, message):
    result = admin(node, *args)
    assert (result.returncode, result.stderr, result.stdout) == (code, message, "")


@pytest.mark.parametrize(
    "args",
    [["task-show"], ["task-list", "--limit", "0"], ["task-list", "-s", "LATE"], ["task-purge", "--days", "-1"], ["task-nope"]],
    ids=" ".join,
)
def test_usage_errors_exit_2(args):
    result = scheduler(*args)
    assert result.returncode == 2 and "usage: scheduler" in result.stderr and result.stdout == ""


def test_a_bad_url_is_a_usage_error():
    result = scheduler("task-list", "--url", "localhost:8181")
    assert result.returncode == 2
    assert result.stderr == "scheduler: invalid URL 'localhost:8181': expected http://HOST:PORT, e.g. http://127.0.0.1:8181\n"


def test_no_node_at_the_url_exits_3():
    url = f"http://127.0.0.1:{free_port()}"
    result = scheduler("task-list", "--url", url, "--token", "x")
    assert result.returncode == 3
    assert result.stderr == f"scheduler: cannot connect to {url} (connection refused): is `scheduler run` up? set --url or SCHEDULER_URL\n"


def test_a_token_the_node_does_not_accept_exits_4(node):
    result = scheduler("task-list", "--url", node.url, "--token", "wrong")
    assert result.returncode == 4
    assert result.stderr == "scheduler: unauthorized: the node does not accept the token from --token\n"
    result = scheduler("task-list", env={"SCHEDULER_URL": node.url, "SCHEDULER_TOKEN": "wrong"})
    assert result.stderr == "scheduler: unauthorized: the node does not accept the token from SCHEDULER_TOKEN\n"


def test_no_token_at_all_says_where_it_looked(node, tmp_path):
    config = write_config(tmp_path / "scheduler.yaml", f"stateDir: {tmp_path / 'elsewhere'}\n")
    result = scheduler("task-list", "--url", node.url, env={"SCHEDULER_CONFIG": str(config)})
    assert result.returncode == 4
    assert result.stderr == (
        f"scheduler: unauthorized: no token (no readable admin token file at {tmp_path / 'elsewhere' / 'admin.token'}: "
        "No such file or directory); give --token or SCHEDULER_TOKEN\n"
    )
