"""Admin commands that need a node of their own: roles, purging, a crashed task resumed by hand."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from tests.support.admin_cli import admin, ok, scheduler, show_fields, table_rows, write_config
from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# -- roles ----------------------------------------------------------------------------------


def test_a_viewer_may_look_but_not_act(tmp_path):
    (tmp_path / "tasks.d").mkdir()
    (tmp_path / "tasks.d" / "ops.yaml").write_text(
        "apiVersion: scheduler/v1\nkind: Task\nname: cancel-me\nschedule: {every: 1h}\nrun: {shell: 'true'}\n"
    )
    config = write_config(
        tmp_path / "scheduler.yaml",
        """\
        api:
          auth:
            tokens:
              - {name: grafana, token: viewer-token-for-dashboards-0001, roles: [VIEWER]}
              - {name: ops, token: admin-token-for-operators-000001, roles: [ADMINISTRATOR]}
        """,
    )
    secured = Daemon(state_dir=tmp_path / "state", tasks_dir=tmp_path / "tasks.d", config=config).start()
    try:
        wait_until(lambda: secured.request("GET", "/cxs/tasks/cancel-me", token="viewer-token-for-dashboards-0001")[0] == 200, what="task")
        viewer = {"SCHEDULER_URL": secured.url, "SCHEDULER_TOKEN": "viewer-token-for-dashboards-0001"}
        assert "cancel-me" in ok(scheduler("task-show", "cancel-me", env=viewer))
        refused = scheduler("task-cancel", "cancel-me", env=viewer)
        assert refused.returncode == 4
        assert refused.stderr.startswith("scheduler: forbidden: the token from SCHEDULER_TOKEN may not do that (")
        assert "\n" not in refused.stderr.rstrip("\n")
        assert secured.request("GET", "/cxs/tasks/cancel-me", token="admin-token-for-operators-000001")[1]["status"] != "CANCELLED"
        refused = scheduler("task-suspend", "cancel-me", env=viewer)
        assert refused.returncode == 4 and refused.stderr.startswith("scheduler: forbidden: ")
        assert secured.request("GET", "/cxs/tasks/cancel-me", token="viewer-token-for-dashboards-0001")[1]["suspended"] is False
        ok(scheduler("task-cancel", "cancel-me", "--url", secured.url, "--token", "admin-token-for-operators-000001"))
    finally:
        secured.kill()


# -- task-purge -----------------------------------------------------------------------------


def test_task_purge_asks_first_and_says_how_many_it_purged(tmp_path):
    (tmp_path / "tasks.d").mkdir()
    (tmp_path / "tasks.d" / "done.yaml").write_text(
        "".join(
            f"---\napiVersion: scheduler/v1\nkind: Task\nname: {name}\nschedule: {{{schedule}}}\nrun: {{shell: 'true'}}\n"
            for name, schedule in (("done-a", "after: 0s"), ("done-b", "after: 0s"), ("keeper", "every: 1h"))
        )
    )
    purging = Daemon(state_dir=tmp_path / "state", tasks_dir=tmp_path / "tasks.d").start()
    try:
        for name in ("done-a", "done-b", "keeper"):
            wait_until(lambda: (purging.task(name) or {}).get("successCount") == 1, what=f"{name} ran")
        question = (
            "Delete the tasks that ended (COMPLETED, FAILED, CANCELLED) before now, "
            "and the run records that ended before now? [y/N] "
        )
        not_confirmed = "scheduler: nothing purged (not confirmed; --force skips the question)\n"

        for answer in ("n\n", "", "maybe\n"):  # no, end of input (a script), anything but yes
            result = admin(purging, "task-purge", "--days", "0", input=answer)
            assert result.returncode == 1 and result.stdout == ""
            assert result.stderr == question + ("\n" if not answer else "") + not_confirmed
        assert purging.get("/cxs/tasks")["totalSize"] == 3

        kept = admin(purging, "task-purge", "--days", "1", input="y\n")  # they ended less than a day ago
        assert ok_after_question(kept) == "Purged 0 task(s) and 0 run record(s) that ended more than 1 day(s) ago\n"

        purged = admin(purging, "task-purge", "--days", "0", input="yes\n")
        assert ok_after_question(purged) == "Purged 2 task(s) and 3 run record(s) that ended before now\n"
        assert [t["itemId"] for t in purging.get("/cxs/tasks")["list"]] == ["keeper"]

        ok(admin(purging, "task-cancel", "keeper"))
        forced = admin(purging, "task-purge", "--days", "0", "--force", "-o", "json")
        assert json.loads(ok(forced)) == {"tasks": 1, "runs": 0, "runsBeyondKeepRuns": 0}
        assert purging.get("/cxs/tasks")["totalSize"] == 0
    finally:
        purging.kill()


def ok_after_question(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0 and result.stderr.endswith("[y/N] "), (result.returncode, result.stderr)
    return result.stdout


# -- a crashed task, resumed by hand ----------------------------------------------------------


def test_a_crashed_manual_task_is_listed_shown_and_resumed(tmp_path):
    """``onCrash: manual``: the node dies mid-run; after a restart the task waits for ``task-resume``."""
    (tmp_path / "tasks.d").mkdir()
    (tmp_path / "tasks.d" / "export.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: scheduler/v1
            kind: Task
            name: long-export
            schedule: {after: 0s}
            onCrash: manual
            run:
              shell: |
                echo '{"checkpoint": {"next": 3}}' >> "$SCHEDULER_CONTROL_FILE"
                if [ "$SCHEDULER_ATTEMPT" = 1 ]; then exec sleep 60; fi  # exec: the parent-death signal reaches the sleep
                echo "resumed at $SCHEDULER_CHECKPOINT"
            """
        )
    )
    config = write_config(tmp_path / "scheduler.yaml", "leaseDuration: 1s\npollInterval: 100ms\n")
    crashing = Daemon(state_dir=tmp_path / "state", tasks_dir=tmp_path / "tasks.d", config=config).start()
    try:
        wait_until(lambda: (crashing.task("long-export") or {}).get("checkpointData") == {"next": 3}, what="checkpoint")
        crashing.kill()  # SIGKILL mid-run: the lease runs out, nobody finishes the run
        crashing.start()
        wait_until(lambda: crashing.task("long-export")["status"] == "CRASHED", what="crash recorded")

        _, rows, _ = table_rows(ok(admin(crashing, "task-list", "-s", "CRASHED")))
        assert rows["long-export"][2] == "CRASHED"
        shown = ok(admin(crashing, "task-show", "long-export"))
        assert show_fields(shown)["Status"] == "CRASHED" and "Checkpoint:\n  next: 3" in shown

        text = ok(admin(crashing, "task-resume", "long-export"))
        assert text.startswith("Task long-export resumed from its checkpoint: status ")
        done = wait_until(
            lambda: crashing.task("long-export")["status"] == "COMPLETED" and crashing.task("long-export"),
            what="the resumed run to complete",
        )
        assert done["attempt"] == 2
        runs = json.loads(ok(admin(crashing, "task-show", "long-export", "-o", "json")))["runs"]
        assert runs[0]["output"] == 'resumed at {"next": 3}\n'
    finally:
        crashing.kill()
