"""A frozen node's command must not outlive its lease (finding 8 of issue #11).

Two ``scheduler run`` nodes share one SQLite store. The node running a long command is
stopped with SIGSTOP: it renews nothing, its lease runs out and the peer starts attempt 2.
Only the node's watchdog, a process of its own that the freeze does not reach, can stop
attempt 1 meanwhile.
"""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

KILL_GRACE = 10.0  # the command executor's grace between SIGTERM and SIGKILL

# The command records its own life: start, a tick every 100 ms (proof it still runs), and the
# SIGTERM that stopped it or its end; each line with its attempt, pid, node and time.
RECORDER = textwrap.dedent(
    """\
    import os, signal, sys, time

    out = sys.argv[1]
    attempt = int(os.environ["SCHEDULER_ATTEMPT"])

    def record(event):
        with open(out, "a") as file:
            file.write(f"{event} {attempt} {os.getpid()} {os.environ['SCHEDULER_NODE_ID']} {time.time():.3f}\\n")

    def stopped(signum, frame):
        record("term")
        sys.exit(143)

    signal.signal(signal.SIGTERM, stopped)
    record("start")
    end = time.monotonic() + (120 if attempt == 1 else 1)  # attempt 1 would outlive any freeze
    while time.monotonic() < end:
        time.sleep(0.1)
        record("tick")
    record("end")
    """
)


def life(path: Path) -> list[tuple[str, int, int, str, float]]:
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        event, attempt, pid, node, at = line.split()
        rows.append((event, int(attempt), int(pid), node, float(at)))
    return rows


def test_a_frozen_nodes_command_is_stopped_when_its_lease_runs_out(tmp_path):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tmp_path / "recorder.py").write_text(RECORDER)
    out = tmp_path / "life.log"
    config = tmp_path / "scheduler.yaml"
    config.write_text("leaseDuration: 3s\npollInterval: 100ms\n")
    store = f"sqlite:///{tmp_path / 'cluster.db'}"
    nodes = [
        Daemon(state_dir=tmp_path / node_id, tasks_dir=tasks, node_id=node_id, store=store, config=config)
        for node_id in ("node-a", "node-b")
    ]
    for node in nodes:
        node.start()
    frozen: Daemon | None = None
    try:
        (tasks / "long.yaml").write_text(
            "apiVersion: scheduler/v1\nkind: Task\nname: long\nschedule: {after: 0s}\n"
            f'run: {{command: ["{sys.executable}", "{tmp_path / "recorder.py"}", "{out}"]}}\n'
        )
        first = wait_until(lambda: next((r for r in life(out) if r[0] == "start"), None), timeout=30,
                           what="attempt 1 to start")
        frozen = next(node for node in nodes if node.node_id == first[3])
        frozen.process.send_signal(signal.SIGSTOP)

        start_2 = wait_until(lambda: next((r[4] for r in life(out) if r[0] == "start" and r[1] == 2), None),
                             timeout=60, what="the peer to start attempt 2")

        def attempt_1_over() -> bool:
            """Stopped, or still alive a kill grace after attempt 2 started: either way, the verdict is in."""
            records = [r for r in life(out) if r[1] == 1]
            return records[-1][0] in ("term", "end") or records[-1][4] > start_2 + KILL_GRACE

        wait_until(attempt_1_over, timeout=60, what="attempt 1 to stop or to outlive attempt 2's start")
        frozen.process.send_signal(signal.SIGCONT)
        frozen = None

        attempt_1 = [r for r in life(out) if r[1] == 1]
        tail = "\n".join(out.read_text().splitlines()[-15:])
        assert attempt_1[-1][4] <= start_2 + KILL_GRACE, (
            f"attempt 1 ran on {attempt_1[-1][4] - start_2:.1f}s after attempt 2 started:\n{tail}"
        )
        assert attempt_1[-1][0] == "term", tail

        peer = next(node for node in nodes if node.node_id != first[3])
        done = wait_until(lambda: (peer.task("long") or {}).get("status") == "COMPLETED" and peer.task("long"),
                          timeout=30, what="attempt 2 to complete")
        assert done["attempt"] == 2
        assert any(entry["outcome"] == "crashed" for entry in done["history"])
        frozen_log = next(node for node in nodes if node.node_id == first[3]).log()
        assert "lease" in frozen_log and f"process group {first[2]}" in frozen_log, frozen_log
    finally:
        if frozen is not None:
            frozen.process.send_signal(signal.SIGCONT)
        for node in nodes:
            node.kill()
