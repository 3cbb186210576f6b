"""Held tasks as an operator sees them: ``task-suspend``, ``task-unsuspend``, ``enabled: false``, run now,
missed slots after a hold, and ``keepRuns`` through ``task-purge``; ``scheduler`` processes against a node."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.support.admin_cli import ABSOLUTE_DATE, admin, ok, show_fields, table_rows
from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def task_doc(name: str, schedule: str, run: str = "true", extra: str = "") -> str:
    return f"---\napiVersion: scheduler/v1\nkind: Task\nname: {name}\nschedule: {{{schedule}}}\nrun: {{shell: '{run}'}}\n{extra}"


def _hourly_files(go: Path) -> str:
    return "".join([
        task_doc("hourly", "every: 1h"),
        task_doc("off", "every: 1h", extra="enabled: false\n"),
        # Runs until the test creates the file ``go``: a run in progress when suspended.
        task_doc("long", "every: 1h", f"while [ ! -e {go} ]; do sleep 0.05; done"),
    ])


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Daemon:
    root = tmp_path_factory.mktemp("hold")
    (root / "tasks.d").mkdir()
    (root / "tasks.d" / "ops.yaml").write_text(_hourly_files(root / "go"))
    daemon = Daemon(state_dir=root / "state", tasks_dir=root / "tasks.d").start()
    try:
        wait_until(lambda: (daemon.task("hourly") or {}).get("successCount") == 1, what="hourly ran")
        wait_until(lambda: (daemon.task("long") or {}).get("status") == "RUNNING", what="long running")
        yield daemon
    finally:
        daemon.kill()


def test_a_disabled_task_is_shown_as_such_and_run_now_is_refused(node):
    _, rows, _ = table_rows(ok(admin(node, "task-list")))
    assert rows["off"][2:4] == ["SCHEDULED", "disabled"]  # its status, and no next run: what holds it
    assert re.fullmatch(ABSOLUTE_DATE, rows["hourly"][3])
    shown = show_fields(ok(admin(node, "task-show", "off")))
    assert shown["Enabled"] == "no: enabled: false in its spec, nothing runs it"
    assert shown["Next Run"] == "disabled" and "Suspended" not in shown

    before = node.task("off")
    refused = admin(node, "task-run", "off")
    source = before["source"]
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        f"scheduler: Task off is disabled (enabled: false in {source['path']}:{source['line']}): it runs nothing "
        "until its spec enables it\n"
    )
    after = node.task("off")
    assert (after["status"], after["lastModified"], after["lastExecutionDate"]) == (
        before["status"], before["lastModified"], None
    )


def test_suspend_holds_a_task_until_unsuspend(node):
    text = ok(admin(node, "task-suspend", "hourly"))
    assert text == "Task hourly suspended: nothing runs it until `scheduler task-unsuspend hourly` (status SCHEDULED)\n"
    task = node.task("hourly")
    assert (task["suspended"], task["nextScheduledExecution"]) == (True, None)
    _, rows, _ = table_rows(ok(admin(node, "task-list")))
    assert rows["hourly"][2:4] == ["SCHEDULED", "suspended"]
    shown = show_fields(ok(admin(node, "task-show", "hourly")))
    assert re.fullmatch(rf"since {ABSOLUTE_DATE}: nothing runs it until `scheduler task-unsuspend hourly`",
                        shown["Suspended"])
    assert shown["Next Run"] == "suspended" and shown["Enabled"] == "yes"

    again = admin(node, "task-suspend", "hourly")
    assert (again.returncode, again.stdout) == (1, "")
    assert re.fullmatch(r"scheduler: Task hourly is already suspended \(since \d{4}-\d\d-\d\dT[\d:.]+Z\)\n", again.stderr)
    refused = admin(node, "task-run", "hourly")
    assert refused.returncode == 1 and refused.stderr.startswith("scheduler: Task hourly is suspended (since ")
    assert node.task("hourly")["successCount"] == 1

    text = ok(admin(node, "task-unsuspend", "hourly"))
    assert re.fullmatch(rf"Task hourly unsuspended: next run {ABSOLUTE_DATE}\n", text)  # its slot is an hour ahead
    task = node.task("hourly")
    assert (task["suspended"], task["suspendedAt"]) == (False, None) and task["nextScheduledExecution"] is not None
    again = admin(node, "task-unsuspend", "hourly")
    assert (again.returncode, again.stderr) == (1, "scheduler: Task hourly is not suspended\n")


def test_a_run_in_progress_when_suspended_finishes_normally(node):
    assert node.task("long")["status"] == "RUNNING"
    text = ok(admin(node, "task-suspend", "long"))
    assert text == (
        "Task long suspended: nothing runs it until `scheduler task-unsuspend long` "
        "(status RUNNING; its current run finishes normally)\n"
    )
    (node.state_dir.parent / "go").touch()
    task = wait_until(lambda: (t := node.task("long"))["status"] != "RUNNING" and t, what="long finished")
    assert (task["status"], task["successCount"], task["suspended"]) == ("SCHEDULED", 1, True)
    [run] = node.get("/cxs/tasks/long/runs")["list"]
    assert run["outcome"] == "success"


def test_the_suspension_survives_a_reload_of_the_tasks_file(node):
    ok(admin(node, "task-suspend", "off"))
    ops = node.tasks_dir / "ops.yaml"
    original = ops.read_text()
    try:
        ops.write_text(original.replace("name: off\n", "name: off\ndescription: still held\n"))
        ok(admin(node, "reload"))
        task = node.task("off")
        assert (task["description"], task["suspended"]) == ("still held", True)
    finally:
        ops.write_text(original)
        ok(admin(node, "reload"))
    text = ok(admin(node, "task-unsuspend", "off"))
    assert text == (
        "Task off unsuspended: it is still disabled (enabled: false in its spec): nothing runs it until its spec "
        "enables it\n"
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["task-suspend", "nope"], "scheduler: Task not found: nope\n"),
        (["task-unsuspend", "nope"], "scheduler: Task not found: nope\n"),
    ],
    ids=["task-suspend", "task-unsuspend"],
)
def test_unknown_tasks_are_refused(node, args, message):
    result = admin(node, *args)
    assert (result.returncode, result.stderr, result.stdout) == (1, message, "")


# -- slots missed while suspended, keepRuns: a node of their own ------------------------------------


def _suspend_and_count_runs(node: Daemon, name: str) -> int:
    """Suspend ``name`` once it has run; its run records once a run claimed before the suspension has ended."""
    wait_until(lambda: (node.task(name) or {}).get("successCount", 0) >= 1, what=f"{name} ran")
    ok(admin(node, "task-suspend", name))
    wait_until(lambda: node.task(name)["status"] != "RUNNING", what=f"{name}'s last run ended")
    return node.get(f"/cxs/tasks/{name}/runs")["totalSize"]


def _slot_passed_by(node: Daemon, name: str, late: timedelta) -> bool:
    """The slot the suspended task keeps is more than ``late`` in the past (by this host's clock, the node's).

    With ``every: 1s`` that slot is the second after its last run's, or a little later when that run ended
    late: ``late`` leaves a margin of a few seconds."""
    newest = node.get(f"/cxs/tasks/{name}/runs")["list"][0]["scheduledFor"]
    return datetime.now(timezone.utc) > datetime.fromisoformat(newest.replace("Z", "+00:00")) + late


def test_unsuspend_handles_missed_slots_by_missed_runs(tmp_path):
    (tmp_path / "tasks.d").mkdir()
    (tmp_path / "tasks.d" / "ticks.yaml").write_text(
        task_doc("catch-up", "every: 1s")
        + task_doc("skipper", "every: 1s, missedRuns: skip, missedRunGrace: 1s")
    )
    node = Daemon(state_dir=tmp_path / "state", tasks_dir=tmp_path / "tasks.d").start()
    try:
        runs = {name: _suspend_and_count_runs(node, name) for name in ("catch-up", "skipper")}
        # The kept slots pass, and the skipper's by more than its grace (1s, jitter 0).
        wait_until(lambda: _slot_passed_by(node, "skipper", timedelta(seconds=5)), timeout=15, what="slots passed")

        text = ok(admin(node, "task-unsuspend", "catch-up"))
        assert re.fullmatch(
            rf"Task catch-up unsuspended: the slot of {ABSOLUTE_DATE} runs now, once for all the slots missed "
            r"\(missedRuns: runOnce\)\n", text)
        text = ok(admin(node, "task-unsuspend", "skipper"))
        assert re.fullmatch(
            rf"Task skipper unsuspended: the slot of {ABSOLUTE_DATE} is skipped, too late \(missedRuns: skip\); "
            r"then it keeps to its schedule\n", text)

        def after_hold(name: str) -> dict:
            page = node.get(f"/cxs/tasks/{name}/runs?limit=1000")
            return page["list"][page["totalSize"] - runs[name] - 1] if page["totalSize"] > runs[name] else None

        assert wait_until(lambda: after_hold("catch-up"), what="catch-up ran again")["outcome"] == "success"
        assert wait_until(lambda: after_hold("skipper"), what="skipper moved on")["outcome"] == "skipped"
    finally:
        node.kill()


def test_task_purge_trims_runs_beyond_keep_runs(tmp_path):
    (tmp_path / "tasks.d").mkdir()
    (tmp_path / "tasks.d" / "ticks.yaml").write_text(
        task_doc("ticker", "every: 1s", extra="keepRuns: {successful: 2}\n")
    )
    node = Daemon(state_dir=tmp_path / "state", tasks_dir=tmp_path / "tasks.d").start()
    try:
        wait_until(lambda: (node.task("ticker") or {}).get("successCount", 0) >= 4, timeout=20, what="four runs")
        _suspend_and_count_runs(node, "ticker")  # its runs stop growing
        before = node.get("/cxs/tasks/ticker/runs?limit=1000")
        newest = [run["runId"] for run in before["list"] if run["outcome"] == "success"][:2]

        counts = json.loads(ok(admin(node, "task-purge", "--days", "1000", "--force", "-o", "json")))
        assert counts == {"tasks": 0, "runs": 0, "runsBeyondKeepRuns": before["totalSize"] - 2}
        after = node.get("/cxs/tasks/ticker/runs")
        assert [run["runId"] for run in after["list"]] == newest
        text = ok(admin(node, "task-purge", "--days", "1000", "--force"))
        assert text == "Purged 0 task(s) and 0 run record(s) that ended more than 1000 day(s) ago\n"
    finally:
        node.kill()
