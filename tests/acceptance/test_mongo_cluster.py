"""A cluster over the wire: three ``scheduler run`` processes on one MongoDB database and one
``tasks.d``, and the node running a checkpointing command killed with SIGKILL.

Runs against the server given by ``SCHEDULER_TEST_MONGO_URI`` (``scripts/with-mongo``
starts a stand-in). The command writes down what it did itself; the store is read
through a surviving node's API, as an operator would.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.mongodb, pytest.mark.slow, pytest.mark.timeout(240)]

STEPS = 6
HOLD_AT = 3  # the first run stops after this step's checkpoint and waits to be killed

# One step per line of the control file: a checkpoint the node stores, fenced by its lease.
JOB = f'''
import json, os, sys, time

STEPS, HOLD_AT = {STEPS}, {HOLD_AT}


def record(event, **fields):
    entry = {{"event": event, "node": os.environ["SCHEDULER_NODE_ID"], "pid": os.getpid(),
             "slot": os.environ["SCHEDULER_SCHEDULED_FOR"], "attempt": int(os.environ["SCHEDULER_ATTEMPT"]),
             "at": time.time(), **fields}}
    with open(os.environ["CLUSTER_EVENTS"], "a") as log:
        log.write(json.dumps(entry) + "\\n")


done = json.loads(os.environ["SCHEDULER_CHECKPOINT"]).get("done", 0)
record("start", resumed_from=done)
for step in range(done + 1, STEPS + 1):
    record("step", step=step)
    with open(os.environ["SCHEDULER_CONTROL_FILE"], "a") as control:
        control.write(json.dumps({{"checkpoint": {{"done": step}}}}) + "\\n")
    if step == HOLD_AT and done == 0:
        time.sleep(120)  # killed long before: the test kills this run's node
record("end")
'''


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for daemon in started:
        daemon.kill()
        print(f"--- log of {daemon.node_id} ---\n{daemon.log()}")  # shown when the test failed


def events(path: Path) -> list[dict]:
    """The events written so far (a line still being written is left for the next look)."""
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return [json.loads(line) for line in lines]


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for an init that does not reap counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_survivor_resumes_the_run_of_a_killed_node_from_its_checkpoint(tmp_path, mongo_url, daemons):
    tasks, log = tmp_path / "tasks.d", tmp_path / "events"
    tasks.mkdir()
    (tmp_path / "job.py").write_text(JOB)
    (tasks / "steps.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: scheduler/v1
        kind: Task
        name: steps
        schedule: {{after: 0s}}
        run: {{command: [{json.dumps(sys.executable)}, {json.dumps(str(tmp_path / "job.py"))}]}}
        """))
    config = tmp_path / "scheduler.yaml"
    # A short lease so that the takeover comes within seconds; renewed every second.
    config.write_text("leaseDuration: 3s\npollInterval: 250ms\n")
    for index in range(3):
        daemons.append(Daemon(state_dir=tmp_path / f"state-{index}", tasks_dir=tasks, node_id=f"node-{index}",
                              store=mongo_url, config=config, env={"CLUSTER_EVENTS": str(log)}))
    for node in daemons:
        node.start(wait_ready=False)
    for node in daemons:
        wait_until(node._ready, timeout=60, what=f"{node.node_id} ready (log: {node.log_path})")

    # Some node runs the first attempt up to its third checkpoint, which the store holds.
    [first_start, *_] = wait_until(lambda: events(log), timeout=60, what="the first run to start")
    victim = next(node for node in daemons if node.node_id == first_start["node"])
    survivors = [node for node in daemons if node is not victim]
    wait_until(lambda: (survivors[0].task("steps") or {}).get("checkpointData") == {"done": HOLD_AT},
               timeout=30, what="the third checkpoint to be stored")

    victim.process.kill()  # SIGKILL: no hand-back, the lease stays until it expires
    victim.process.wait(timeout=10)
    # Its command dies with it (parent-death signal): nothing runs beside the run that resumes.
    wait_until(lambda: gone(first_start["pid"]), timeout=10, what="the killed node's command to exit")

    def completed() -> tuple[dict, list[dict]] | None:
        # On MongoDB a run's result and the close of its run record are two writes: wait for both.
        task = survivors[0].task("steps") or {}
        runs = survivors[0].get("/cxs/tasks/steps/runs")["list"] if task else []
        return (task, runs) if task.get("status") == "COMPLETED" and all(run["outcome"] for run in runs) else None

    done, runs = wait_until(completed, timeout=90, what="a survivor to complete the run")
    record = events(log)
    print("events:", *record, sep="\n")  # shown when the test failed
    starts = [event for event in record if event["event"] == "start"]
    assert [(event["attempt"], event["resumed_from"]) for event in starts] == [(1, 0), (2, HOLD_AT)]
    survivor = starts[1]["node"]
    assert survivor in {node.node_id for node in survivors}
    # Every step ran once, each from where the last checkpoint said; no (slot, attempt) started twice.
    assert [event["step"] for event in record if event["event"] == "step"] == list(range(1, STEPS + 1))
    assert len({(event["slot"], event["attempt"]) for event in starts}) == len(starts)
    assert all(gone(event["pid"]) for event in starts)

    assert done["status"] == "COMPLETED" and done["statusDetails"]["crashedNode"] == victim.node_id
    assert [entry["outcome"] for entry in done["history"]] == ["success", "crashed"]
    assert [(run["attempt"], run["node"], run["outcome"]) for run in runs] == [
        (2, survivor, "success"), (1, victim.node_id, "crashed")]
    for node in survivors:
        assert node.process.poll() is None, f"{node.node_id} exited:\n{node.log()}"
