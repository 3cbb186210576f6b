"""A ``scheduler run`` node and an embedded program on one SQLite file: each claims only what it can run.

The program's builder tasks have a type only the program has an executor for.
The node must leave them alone, even while they are due and the program is
down (it shows them as runnable by no live node), and the program runs every
one of them when it is back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.support.admin_cli import admin, ok, show_fields
from tests.support.daemon import ROOT, Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# The embedded program. ``schedule``: store the builder tasks without running
# anything (the program is then down while they are due). ``run``: start the
# scheduler, declare the same tasks again plus ten new ones (as a program does
# at each start), wait until all of them completed and print their run records.
APP = textwrap.dedent(
    """\
    import asyncio, json, sys, time
    from scheduler import Scheduler

    url, mode = sys.argv[1], sys.argv[2]

    def app_job():
        pass

    async def declare(scheduler, names):
        for name in names:
            await scheduler.new_task("appJob", name).as_one_shot().with_simple_executor(app_job).schedule()

    async def main():
        scheduler = Scheduler(url, node_id="app")
        if mode == "schedule":
            await scheduler.open()
            await declare(scheduler, [f"app-job-{i}" for i in range(10)])
            await scheduler.stop()
            return
        names = [f"app-job-{i}" for i in range(20)]
        async with scheduler:
            await declare(scheduler, names)
            deadline = time.monotonic() + 60
            while True:
                tasks = [await scheduler.get_task(name) for name in names]
                if all(task.status.value == "COMPLETED" for task in tasks):
                    break
                if time.monotonic() > deadline:
                    sys.exit("not all done: " + ", ".join(f"{t.item_id} {t.status.value}" for t in tasks))
                await asyncio.sleep(0.05)
            runs = {name: [run.node_id for run in (await scheduler.store.list_runs(name)).items] for name in names}
        print(json.dumps(runs))

    asyncio.run(main())
    """
)


def run_app(tmp_path, url: str, mode: str) -> subprocess.CompletedProcess:
    script = tmp_path / "app.py"
    script.write_text(APP)
    return subprocess.run(
        [sys.executable, str(script), url, mode], cwd=ROOT, capture_output=True, text=True, timeout=90
    )


def test_a_node_never_claims_the_tasks_of_an_embedded_programs_type(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    node = Daemon(state_dir=tmp_path / "state", tasks_dir=tasks, store=url).start()
    try:
        stored = run_app(tmp_path, url, "schedule")
        assert stored.returncode == 0, stored.stderr

        # A task of the node's own, due after the program's tasks: once it ran, the
        # node has been through a claim of everything due before it (earliest first).
        (tasks / "marker.yaml").write_text(textwrap.dedent(
            """\
            apiVersion: scheduler/v1
            kind: Task
            name: marker
            schedule: {after: 0s}
            run: {shell: "true"}
            """
        ))
        wait_until(lambda: (node.task("marker") or {}).get("status") == "COMPLETED", what="marker run by the node")
        for index in range(10):
            runs = node.get(f"/cxs/tasks/app-job-{index}/runs")["list"]
            assert runs == [], f"app-job-{index} was claimed while its program was down: {runs}"
            task = node.task(f"app-job-{index}")
            assert task["status"] == "SCHEDULED" and task["failureCount"] == 0, task
            assert task["executorType"] == "appJob" and task["runnable"] is False, task
        metrics = node.request("GET", "/metrics", auth=False)[1]
        assert "\nscheduler_tasks_unrunnable 10.0\n" in metrics, metrics
        shown = show_fields(ok(admin(node, "task-show", "app-job-0")))
        assert shown["Status"] == "SCHEDULED" and shown["Executor Type"] == "appJob"
        assert shown["Runnable"] == "no: no live node has an executor for type appJob (the task waits for one)"

        # The program comes back: it runs its ten waiting tasks and ten new ones, beside the node.
        ran = run_app(tmp_path, url, "run")
        assert ran.returncode == 0, ran.stderr
        runs = json.loads(ran.stdout)
        assert len(runs) == 20
        assert {name: nodes for name, nodes in runs.items() if nodes != ["app"]} == {}
        assert node.get("/cxs/tasks?status=FAILED")["totalSize"] == 0
        assert "no executor" not in node.log()
        # The program's node said which types it runs, and the node which it does (none but run: sections).
        nodes = {entry["nodeId"]: entry for entry in node.get("/cxs/nodes")["list"]}
        assert (nodes["app"]["taskTypes"], nodes["node-1"]["taskTypes"]) == (["appJob"], [])
        assert "\nscheduler_tasks_unrunnable 0.0\n" in node.request("GET", "/metrics", auth=False)[1]
        assert node.stop() == 0
    finally:
        node.kill()
