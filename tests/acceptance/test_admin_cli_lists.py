"""kubectl habits of the admin commands: label selectors, ``-o wide|name``, ``--no-headers``, whole IDs, copies.

One node serves this module, with labelled tasks and a ``runOn: all`` task whose
copy ``<name>@node-1`` has an ID too long for an 80-column table. The tests only
read: they leave the node as they found it.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from tests.support.admin_cli import admin, node_with_tasks, ok, table_rows
from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROBE = "livez-check-of-the-public-endpoints-behind-the-load-balancer"  # 60 characters, 67 with "@node-1"
LATER = "schedule: {every: 1h, initialDelay: 1h}\nrun: {shell: \"true\"}\n"
TASKS = f"""\
apiVersion: scheduler/v1
kind: Task
name: warehouse-export-to-cold-storage
type: warehouseExport
labels: {{team: data, tier: batch}}
{LATER}---
apiVersion: scheduler/v1
kind: Task
name: stream-ingest
type: streamIngest
labels: {{team: data, tier: stream}}
{LATER}---
apiVersion: scheduler/v1
kind: Task
name: daily-report
type: report
labels: {{team: data}}
schedule: {{after: 0s}}
run: {{shell: "true"}}
---
apiVersion: scheduler/v1
kind: Task
name: cache-warmer
type: cacheWarmer
labels: {{team: web}}
{LATER}---
apiVersion: scheduler/v1
kind: Task
name: {PROBE}
type: httpCheck
labels: {{team: web, tier: probe}}
runOn: all
{LATER}"""
ALL = sorted(["cache-warmer", "daily-report", f"{PROBE}@node-1", "stream-ingest", "warehouse-export-to-cold-storage"])
SYNTAX = "(expected key=value, key!=value, key or !key, separated by commas)"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Daemon:
    daemon = node_with_tasks(tmp_path_factory.mktemp("lists"), {"team.yaml": TASKS})
    try:
        wait_until(lambda: (daemon.task("daily-report") or {}).get("status") == "COMPLETED", what="daily-report ran")
        yield daemon
    finally:
        daemon.kill()


def names(text: str) -> list[str]:
    return text.splitlines()


# -- label selectors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        (["team=data,tier!=batch"], ["daily-report", "stream-ingest"]),
        (["team==data", "tier!=batch"], ["daily-report", "stream-ingest"]),  # -l repeated: every term holds
        (["tier"], [f"{PROBE}@node-1", "stream-ingest", "warehouse-export-to-cold-storage"]),
        (["team=data,!tier"], ["daily-report"]),
        (["team=ops"], []),
    ],
    ids=["not-equal", "repeated", "exists", "absent", "none"],
)
def test_task_list_selects_by_labels(node, selector, expected):
    args = [arg for term in selector for arg in ("-l", term)]
    assert names(ok(admin(node, "task-list", *args, "-o", "name"))) == expected
    _, rows, footer = table_rows(ok(admin(node, "task-list", *args)))
    assert sorted(rows) == expected and footer == [f"Showing {len(expected)} task(s) ({len(expected)} in storage, 0 in memory)"]


def test_the_api_pages_selected_tasks_with_their_total(node):
    page = node.get("/cxs/tasks?labelSelector=team%3Ddata&limit=2&offset=1")
    assert [t["itemId"] for t in page["list"]] == ["stream-ingest", "warehouse-export-to-cold-storage"]
    assert page["totalSize"] == 3
    as_json = json.loads(ok(admin(node, "task-list", "-l", "team=data", "--limit", "2", "-o", "json")))
    assert as_json == node.get("/cxs/tasks?labelSelector=team%3Ddata&limit=2")


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("team=data,", f"term 2 is empty {SYNTAX}"),
        ("tier in (a,b)", f"term 1 'tier in (a': set-based selectors (in, notin) are not supported {SYNTAX}"),
        ("team=a=b", f"term 1 'team=a=b': the label value 'a=b' contains = {SYNTAX}"),
    ],
)
def test_a_bad_selector_is_a_usage_error_and_a_400(node, selector, message):
    result = admin(node, "task-list", "-l", selector)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"scheduler: -l/--selector: {message}\n")
    status, body = node.request("GET", "/cxs/tasks?" + urlencode({"labelSelector": selector}))
    assert (status, body["message"]) == (400, f"Invalid labelSelector: {message}")


# -- output for scripts ------------------------------------------------------------------------


def test_o_name_prints_one_id_a_line_and_warns_when_the_limit_cut(node):
    assert names(ok(admin(node, "task-list", "-o", "name"))) == ALL
    result = admin(node, "task-list", "-o", "name", "--limit", "2")
    assert (result.returncode, names(result.stdout)) == (0, ALL[:2])
    assert result.stderr == "scheduler: 3 more task(s) not shown: raise --limit or filter with -s, -t or -l\n"
    assert ok(admin(node, "task-list", "-o", "name", "-l", "team=ops")) == ""
    assert names(ok(admin(node, "node-list", "-o", "name"))) == ["node-1"]


def test_no_headers_prints_the_rows_only(node):
    lines = names(ok(admin(node, "task-list", "--no-headers", "-l", "team=web")))
    assert [line.split(" │ ")[0].strip() for line in lines] == ["cache-warmer", f"{PROBE}@node-1"]
    assert "SCHEDULED" in lines[0] and "Showing" not in "".join(lines) and "─" not in "".join(lines)
    [node_line] = names(ok(admin(node, "node-list", "--no-headers")))
    assert [cell.strip() for cell in node_line.split("│")][:2] == ["node-1", "yes"]
    assert ok(admin(node, "task-list", "--no-headers", "-l", "team=ops")) == ""


def test_o_wide_adds_successes_outcome_node_and_labels(node):
    header, rows, footer = table_rows(ok(admin(node, "task-list", "-o", "wide")))
    assert header == [
        "ID", "Type", "Status", "Next Run", "Last Run", "Failures", "Persistent",
        "Successes", "Last Outcome", "Node", "Labels",
    ]
    assert rows["daily-report"][2] == "COMPLETED" and rows["daily-report"][7:] == ["1", "success", "-", "team=data"]
    assert rows[f"{PROBE}@node-1"][7:] == ["0", "-", "node-1", "team=web,tier=probe"]
    assert footer == ["Showing 5 task(s) (5 in storage, 0 in memory)"]


def test_node_list_has_no_wide_output(node):
    result = admin(node, "node-list", "-o", "wide")
    assert result.returncode == 2 and "invalid choice: 'wide'" in result.stderr and result.stdout == ""


# -- IDs stay whole -----------------------------------------------------------------------------


@pytest.mark.parametrize(("output", "columns", "shown"), [
    ("table", 200, ["ID", "Type", "Status", "Next Run", "Last Run", "Failures", "Persistent"]),
    ("wide", 200, ["ID", "Type", "Status", "Next Run", "Last Run", "Failures", "Persistent", "Successes", "Last Outcome",
                   "Node", "Labels"]),
    ("table", 80, ["ID", "Status"]),  # the other columns go before the 67 characters of an ID are cut
    ("wide", 80, ["ID", "Status"]),
])
def test_every_id_is_whole_at_any_width(node, output, columns, shown):
    text = ok(admin(node, "task-list", "-o", output, env={"COLUMNS": str(columns)}))
    assert all(len(line) <= columns for line in text.splitlines()), text
    header, rows, _ = table_rows(text)
    assert header == shown
    assert sorted(rows) == ALL  # each ID whole (Labels may be cut)


# -- task-show of a runOn: all task's name ----------------------------------------------------


def test_task_show_of_a_name_lists_its_copies_per_node(node):
    result = admin(node, "task-show", PROBE)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"scheduler: Task not found: {PROBE} (it runs as one copy per node: {PROBE}@node-1)\n"
    assert ok(admin(node, "task-show", f"{PROBE}@node-1")).startswith("ID:")  # the copy itself
