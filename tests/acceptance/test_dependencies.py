"""A pipeline of task files on a three-node cluster: export -> transform -> report, in order, on any node."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support.admin_cli import admin, ok
from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# Each command logs its start and end with the node that ran it; export waits for the test's go.
STEP = 'echo "$SCHEDULER_TASK_ID start $SCHEDULER_NODE_ID" >> {log}; {wait}echo "$SCHEDULER_TASK_ID end" >> {log}'
WAIT_FOR_GO = "while [ ! -e {go} ]; do sleep 0.05; done; "


def task(name: str, schedule: str, shell: str, node: str, depends_on: str = "") -> str:
    return textwrap.dedent(f"""\
        apiVersion: scheduler/v1
        kind: Task
        name: {name}
        schedule: {schedule}
        run: {{shell: '{shell}'}}
        nodes: [{node}]
        """) + (f"dependsOn: [{depends_on}]\n" if depends_on else "")


@pytest.fixture
def cluster(tmp_path):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    log, go = tmp_path / "steps.log", tmp_path / "go"
    (tasks / "pipeline.yaml").write_text("---\n".join([
        # Each step on a node of its own: the pipeline crosses the cluster.
        task("export", '{cron: "0 3 * * *"}', STEP.format(log=log, wait=WAIT_FOR_GO.format(go=go)), "node-0"),
        task("transform", "{every: 1h}", STEP.format(log=log, wait=""), "node-1", "export"),
        task("report", "{every: 1h}", STEP.format(log=log, wait=""), "node-2", "transform"),
    ]))
    config = tmp_path / "scheduler.yaml"
    config.write_text("leaseDuration: 3s\npollInterval: 200ms\n")
    nodes = [
        Daemon(state_dir=tmp_path / f"state-{i}", tasks_dir=tasks, node_id=f"node-{i}", config=config,
               store=f"sqlite:///{tmp_path / 'cluster.db'}")
        for i in range(3)
    ]
    for node in nodes:
        node.start()
    yield nodes, log, go
    go.touch()
    for node in nodes:
        node.kill()


def steps(log: Path) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def test_a_pipeline_runs_in_order_across_three_nodes(cluster):
    nodes, log, go = cluster
    first = nodes[0]
    for name, waits_on in (("transform", "export"), ("report", "transform")):
        wait_until(lambda: first.task(name)["status"] == "WAITING", what=f"{name} to wait")
        assert first.task(name)["waitingOnTasks"] == [waits_on]

    assert first.request("POST", "/cxs/tasks/export/run")[0] == 200  # the operator starts the pipeline
    wait_until(lambda: steps(log) and steps(log)[0][:2] == ["export", "start"], what="export to start")
    shown = dict(line.split(":", 1) for line in ok(admin(nodes[1], "task-show", "transform")).splitlines()[:20]
                 if ":" in line)
    assert (shown["Status"].strip(), shown["Depends On"].strip(), shown["Waiting On"].strip()) == (
        "WAITING", "export", "export"
    )
    assert first.task("transform")["status"] == "WAITING"

    go.touch()
    wait_until(lambda: first.task("report")["successCount"] == 1, timeout=60, what="report to run")
    lines = steps(log)
    assert [line[:2] for line in lines] == [
        ["export", "start"], ["export", "end"], ["transform", "start"], ["transform", "end"],
        ["report", "start"], ["report", "end"],
    ]
    assert {line[0]: line[2] for line in lines if line[1] == "start"} == {
        "export": "node-0", "transform": "node-1", "report": "node-2"
    }
    for name in ("export", "transform", "report"):
        done = first.task(name)
        assert (done["status"], done["waitingOnTasks"], done["successCount"]) == ("SCHEDULED", [], 1)
