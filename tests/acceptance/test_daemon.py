"""``scheduler run`` as operators meet it: a process, a tasks.d that changes, an API over HTTP."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest

from tests.support.daemon import ROOT, Daemon, cli, free_port
from tests.support.taskfiles import task_yaml
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(**options) -> Daemon:
        daemon = Daemon(**options).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def write_atomically(path: Path, text: str) -> None:
    """What editors and Ansible do: write a temporary file, rename it over the target."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def test_a_task_file_lifecycle(tmp_path, daemons):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)

    # Add a file: the task appears and runs.
    (tasks / "hello.yaml").write_text(task_yaml("hello", shell=f"echo run >> {out}/hello"))
    task = wait_until(lambda: node.task("hello"), what="task hello visible")
    assert task["taskType"] == "hello" and task["status"] in ("SCHEDULED", "RUNNING", "COMPLETED")
    wait_until(lambda: (node.task("hello") or {}).get("successCount") == 1, what="first run")
    assert (out / "hello").read_text() == "run\n"

    # Change it (editor-style save): the spec changes, the counters stay.
    write_atomically(tasks / "hello.yaml", task_yaml("hello", shell=f"echo run >> {out}/hello",
                                                     extra="description: changed\n"))
    changed = wait_until(lambda: (node.task("hello") or {}).get("description") == "changed" and node.task("hello"),
                         what="changed spec")
    assert changed["successCount"] == 1

    # Break it: the old version stays in force, the error is reported with file and line.
    (tasks / "hello.yaml").write_text(task_yaml("hello", extra="schedul: typo\n"))
    config = wait_until(
        lambda: next((f for f in node.get("/cxs/config")["files"] if f["status"] == "rejected"), None),
        what="rejected file reported",
    )
    assert config["path"].endswith("hello.yaml")
    assert config["errors"][0]["location"].startswith(f"{tasks / 'hello.yaml'}:8:")
    assert "schedul" in config["errors"][0]["message"]
    assert node.task("hello")["description"] == "changed"

    # Delete it: the task goes away.
    (tasks / "hello.yaml").unlink()
    wait_until(lambda: node.task("hello") is None, what="task removed")

    assert node.stop() == 0


def test_the_example_tasks_run_under_the_daemon(tmp_path, daemons):
    """The README's first command: the examples, a Python callable among them, run as shipped."""
    node = daemons(state_dir=tmp_path / "state", tasks_dir=ROOT / "examples" / "tasks.d", env={"TMPDIR": str(tmp_path)})
    tasks = node.get("/cxs/tasks?limit=100")
    assert tasks["totalSize"] >= 8
    assert node.request("POST", "/cxs/tasks/prime-count/run")[0] == 200
    done = wait_until(lambda: (node.task("prime-count") or {}).get("successCount", 0) >= 1 and node.task("prime-count"),
                      timeout=60, what="prime-count to succeed")
    assert done["lastError"] is None and done["failureCount"] == 0
    assert node.stop() == 0


def test_the_quick_start_keeps_its_state_private_in_SCHEDULER_STATE_DIR(tmp_path, daemons):
    """The README's first command: state where SCHEDULER_STATE_DIR says, never 0644, found by the CLI alone."""
    state = tmp_path / "checkout" / ".state"
    node = daemons(state_dir=state, state_dir_from_env=True, tasks_dir=ROOT / "examples" / "tasks.d",
                   env={"TMPDIR": str(tmp_path)})
    assert node.request("POST", "/cxs/tasks/prime-count/run")[0] == 200  # a write: the -wal file exists
    modes = {path.name: path.stat().st_mode & 0o777 for path in [state, *state.iterdir()]}
    assert {"scheduler.db", "scheduler.db-wal", "scheduler.db-shm", "admin.token"} <= set(modes)
    assert {name: oct(mode) for name, mode in modes.items() if mode & 0o077} == {}

    listing = cli("task-list", env={"SCHEDULER_STATE_DIR": str(state), "SCHEDULER_URL": node.url})
    assert listing.returncode == 0, listing.stderr
    assert "prime-count" in listing.stdout


def test_bad_config_bad_store_and_busy_port_fail_clearly(tmp_path):
    bad_config = tmp_path / "scheduler.yaml"
    bad_config.write_text("leaseDuration: soon\nunknownKey: 1\n")
    result = cli("run", "--config", str(bad_config), "--state-dir", str(tmp_path / "s1"))
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr and "unknownKey" in result.stderr

    result = cli("run", "--store", "postgres://db/x", "--state-dir", str(tmp_path / "s2"), "--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode == 3
    assert "postgres://db/x" in result.stderr and "sqlite://" in result.stderr

    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("run", "--state-dir", str(tmp_path / "s3"), "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 4
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr

    result = cli("run", "--tasks-dir", str(tmp_path / "missing"), "--state-dir", str(tmp_path / "s4"))
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_sighup_rescans_and_sigterm_stops_cleanly(tmp_path, daemons):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)
    (tasks / "a.yaml").write_text(task_yaml("a"))
    node.process.send_signal(signal.SIGHUP)
    # The watcher may apply the file first: the log line is what only the SIGHUP rescan writes.
    wait_until(lambda: "reload on SIGHUP:" in node.log(), what="the SIGHUP rescan")
    wait_until(lambda: node.task("a"), what="task a after SIGHUP")
    assert node.stop(signal.SIGTERM) == 0
    assert "stopped" in node.log()


def test_cluster_resumes_a_killed_nodes_run_from_its_checkpoint(tmp_path, daemons):
    """Three nodes on one SQLite file; SIGKILL the node running a checkpointing command.

    ``count`` counts from its checkpoint to 6, appending each step to a side-effect
    file and checkpointing after it. ``tick`` runs every second on whichever node
    claims it and appends its slot. Checks: the survivor resumes ``count`` from its
    last stored checkpoint (not from 0), every step is done, at most the one step
    in flight at the kill is repeated; no (slot, attempt) of ``tick`` ever runs twice.
    """
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    effects, ticks = tmp_path / "effects", tmp_path / "ticks"
    script = textwrap.dedent(
        f"""\
        start=$(printf '%s' "$SCHEDULER_CHECKPOINT" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("next", 0))')
        i=$start
        while [ $i -lt 6 ]; do
          echo "$i $SCHEDULER_NODE_ID $SCHEDULER_ATTEMPT" >> {effects}
          i=$((i+1))
          echo "{{\\"checkpoint\\": {{\\"next\\": $i}}}}" >> "$SCHEDULER_CONTROL_FILE"
          sleep 0.4
        done
        """
    )
    (tmp_path / "count.sh").write_text(script)
    (tasks / "tick.yaml").write_text(
        task_yaml("tick", every="1s", shell=f"echo $SCHEDULER_SCHEDULED_FOR $SCHEDULER_ATTEMPT $SCHEDULER_NODE_ID >> {ticks}")
    )
    config = tmp_path / "scheduler.yaml"
    config.write_text("leaseDuration: 1s\npollInterval: 100ms\nshutdownGrace: 1s\n")
    store = f"sqlite:///{tmp_path / 'cluster.db'}"
    nodes = [
        daemons(state_dir=tmp_path / f"state-{i}", tasks_dir=tasks, node_id=f"node-{i}", store=store, config=config)
        for i in range(3)
    ]

    # Declared once every node is up: the run must still be going when its node is killed.
    (tasks / "count.yaml").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: scheduler/v1
            kind: Task
            name: count
            schedule:
              after: 0s
            run:
              command: ["/bin/sh", "{tmp_path / 'count.sh'}"]
            """
        )
    )

    def lines(path: Path) -> list[list[str]]:
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    wait_until(lambda: len(lines(effects)) >= 3, what="count to make progress")
    victim_id = lines(effects)[0][1]
    victim = next(n for n in nodes if n.node_id == victim_id)
    victim.kill()  # SIGKILL: no shutdown, no hand-over; the lease must run out
    survivor = next(n for n in nodes if n is not victim)

    done = wait_until(
        lambda: (survivor.task("count") or {}).get("status") == "COMPLETED" and survivor.task("count"),
        timeout=60, what="count to complete on a survivor",
    )
    steps = lines(effects)
    resumed = [s for s in steps if s[1] != victim_id]
    assert resumed and all(s[2] == "2" for s in resumed), steps
    assert int(resumed[0][0]) >= 2, f"resumed from scratch, not from the checkpoint: {steps}"
    assert [int(s[0]) for s in steps if s[1] == victim_id] == list(range(len(steps) - len(resumed)))
    assert [int(s[0]) for s in resumed] == list(range(int(resumed[0][0]), 6))
    assert len(steps) - 6 <= 1, f"more than the in-flight step was repeated: {steps}"
    assert any(h["outcome"] == "crashed" for h in done["history"])

    wait_until(lambda: len(lines(ticks)) >= 3, what="tick to keep running")
    slot_attempts = [(slot, attempt) for slot, attempt, _ in lines(ticks)]
    assert len(slot_attempts) == len(set(slot_attempts)), lines(ticks)
