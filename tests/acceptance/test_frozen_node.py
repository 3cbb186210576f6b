"""A frozen node's command must not outlive its lease (finding 8 of issue #11), nor a frozen machine's.

Two ``scheduler run`` nodes share one SQLite store. The node running a long command is
stopped with SIGSTOP: it renews nothing, its lease runs out and the peer starts attempt 2.
Only the node's watchdog, a process of its own that the freeze does not reach, can stop
attempt 1 meanwhile. When everything is stopped at once (a paused virtual machine), the
watchdog is frozen too: the peers' recovery grace gives it the time to act at the resume.

A run being stopped keeps its lease whatever happens to its task meanwhile (cancelled then
retried, deleted then declared again): nothing starts the task beside it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, cli
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


# The command records its own life: start, a tick every 100 ms (proof it still runs), and the
# SIGTERM that stopped it and its exit argv[3] seconds later (it cleans up), or its end; each line
# with its attempt, pid, node and time. The first run runs for argv[2] seconds, later ones for 1 s.
RECORDER = textwrap.dedent(
    """\
    import os, signal, sys, time

    out = sys.argv[1]
    attempt = int(os.environ["SCHEDULER_ATTEMPT"])
    first = not os.path.exists(out)

    def record(event):
        with open(out, "a") as file:
            file.write(f"{event} {attempt} {os.getpid()} {os.environ['SCHEDULER_NODE_ID']} {time.time():.3f}\\n")

    def stopped(signum, frame):
        record("term")
        time.sleep(float(sys.argv[3]))
        record("exit")
        sys.exit(143)

    signal.signal(signal.SIGTERM, stopped)
    record("start")
    end = time.monotonic() + (float(sys.argv[2]) if first else 1)
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


def start_two_nodes(tmp_path: Path) -> list[Daemon]:
    """Two nodes on one SQLite store and one tasks.d, with a 3 s lease."""
    (tmp_path / "tasks.d").mkdir()
    config = tmp_path / "scheduler.yaml"
    config.write_text("leaseDuration: 3s\npollInterval: 100ms\n")
    store = f"sqlite:///{tmp_path / 'cluster.db'}"
    nodes = [
        Daemon(state_dir=tmp_path / node_id, tasks_dir=tmp_path / "tasks.d", node_id=node_id, store=store,
               config=config)
        for node_id in ("node-a", "node-b")
    ]
    for node in nodes:
        node.start()
    return nodes


def declare_recorder(tmp_path: Path, out: Path, seconds: float, exit_after: float = 0.5) -> None:
    """The one-shot task ``long``: the recorder writing to ``out``, its first run running ``seconds``,
    each run exiting ``exit_after`` seconds after its SIGTERM."""
    (tmp_path / "recorder.py").write_text(RECORDER)
    (tmp_path / "tasks.d" / "long.yaml").write_text(
        "apiVersion: scheduler/v1\nkind: Task\nname: long\nschedule: {after: 0s}\n"
        f'run: {{command: ["{sys.executable}", "{tmp_path / "recorder.py"}", "{out}", "{seconds}", "{exit_after}"]}}\n'
    )


def assert_one_run_at_a_time(out: Path) -> None:
    """No run of the command (one pid each) started before the one before it had ended."""

    def spans() -> dict[int, list]:
        """Each run's first and last record, and its last event."""
        found: dict[int, list] = {}
        for event, _, pid, _, at in life(out):
            found.setdefault(pid, [at, at, event])[1:] = [at, event]
        return found

    wait_until(lambda: all(span[2] in ("exit", "end") for span in spans().values()), timeout=30,
               what="every run to end")
    runs = sorted(span[:2] for span in spans().values())
    tail = "\n".join(out.read_text().splitlines()[-20:])
    for before, after in zip(runs, runs[1:]):
        assert before[1] <= after[0], f"a run started {before[1] - after[0]:.3f}s before the one before ended:\n{tail}"


def wait_completed(node: Daemon) -> dict:
    return wait_until(lambda: (node.task("long") or {}).get("status") == "COMPLETED" and node.task("long"),
                      timeout=60, what="the task to complete")


def test_a_frozen_nodes_command_is_stopped_when_its_lease_runs_out(tmp_path):
    nodes = start_two_nodes(tmp_path)
    out = tmp_path / "life.log"
    frozen: Daemon | None = None
    try:
        declare_recorder(tmp_path, out, seconds=120)  # attempt 1 would outlive any freeze
        first = wait_until(lambda: next((r for r in life(out) if r[0] == "start"), None), timeout=30,
                           what="attempt 1 to start")
        frozen = next(node for node in nodes if node.node_id == first[3])
        frozen.process.send_signal(signal.SIGSTOP)

        start_2 = wait_until(lambda: next((r[4] for r in life(out) if r[0] == "start" and r[1] == 2), None),
                             timeout=60, what="the peer to start attempt 2")

        def attempt_1_over() -> bool:
            """Stopped, or still alive a kill grace after attempt 2 started: either way, the verdict is in."""
            records = [r for r in life(out) if r[1] == 1]
            return records[-1][0] in ("exit", "end") or records[-1][4] > start_2 + 10  # its kill grace

        wait_until(attempt_1_over, timeout=60, what="attempt 1 to stop or to outlive attempt 2's start")
        frozen.process.send_signal(signal.SIGCONT)
        frozen = None

        attempt_1 = [r for r in life(out) if r[1] == 1]
        tail = "\n".join(out.read_text().splitlines()[-15:])
        # The watchdog stops it when the lease runs out; the peer starts attempt 2 a recovery grace later,
        # when attempt 1 has had the time to exit.
        assert attempt_1[-1][4] <= start_2, (
            f"attempt 1 ran on {attempt_1[-1][4] - start_2:.3f}s after attempt 2 started:\n{tail}"
        )
        assert attempt_1[-1][0] == "exit", tail

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


def process_tree(roots: list[int]) -> list[int]:
    """The processes ``roots`` and every descendant of theirs alive now."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited meanwhile
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def pause_machine(nodes: list[Daemon], seconds: float = 6, *, last: Daemon | None = None) -> None:
    """Stop every process of the nodes' trees (nodes, watchdogs, commands) for ``seconds``, by
    default twice the lease, as a paused virtual machine stops them; then resume them all,
    the tree of ``last`` half a second after the others (the order a resumed machine runs them in
    is anyone's)."""
    trees = {node.node_id: process_tree([node.process.pid]) for node in nodes}
    for tree in trees.values():
        for pid in tree:
            os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)  # the pause itself, not a wait for something to happen
    finally:
        for node_id, tree in sorted(trees.items(), key=lambda item: last is not None and item[0] == last.node_id):
            if last is not None and node_id == last.node_id:
                time.sleep(0.5)
            for pid in tree:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass


def test_a_paused_machine_resumes_without_two_attempts_at_once(tmp_path):
    """Both nodes, their watchdogs and the command are stopped together past the lease, then resumed.

    At the resume every process finds the lease long expired at the same instant. Without the
    recovery grace the peer took the task over before the owner's watchdog had stopped attempt 1.
    """
    nodes = start_two_nodes(tmp_path)
    out = tmp_path / "life.log"
    try:
        declare_recorder(tmp_path, out, seconds=20)
        wait_until(lambda: any(r[0] == "tick" for r in life(out)), timeout=30, what="attempt 1 to run")
        pause_machine(nodes)

        done = wait_completed(nodes[0])
        rows = life(out)
        tail = "\n".join(out.read_text().splitlines()[-15:])
        later_starts = [r[4] for r in rows if r[0] == "start" and r[1] > 1]
        if later_starts:  # taken over: attempt 1 must have stopped first
            assert max(r[4] for r in rows if r[1] == 1) <= min(later_starts), tail
            assert done["attempt"] >= 2
        else:  # the owner renewed its lease at the resume and kept it
            assert rows[-1][0] == "end" and done["attempt"] == 1, tail
    finally:
        for node in nodes:
            node.kill()


def test_a_cancel_retried_then_paused_with_the_machine_waits_for_the_old_command(tmp_path):
    """The retry is due at once, but the cancelled command is still stopping when the machine pauses.

    At the resume its lease has long expired. A claim took that as free, and started attempt 2
    beside attempt 1; now the lease must be released by its run's end (or recovered after the grace).
    """
    nodes = start_two_nodes(tmp_path)
    out = tmp_path / "life.log"
    try:
        declare_recorder(tmp_path, out, seconds=60, exit_after=1)
        first = wait_until(lambda: next((r for r in life(out) if r[0] == "tick"), None), timeout=30,
                           what="attempt 1 to run")
        assert nodes[0].request("DELETE", "/cxs/tasks/long")[0] == 204
        assert nodes[0].request("POST", "/cxs/tasks/long/retry")[0] == 200
        pause_machine(nodes, last=next(node for node in nodes if node.node_id == first[3]))  # the owner

        done = wait_completed(nodes[0])
        assert_one_run_at_a_time(out)
        assert done["attempt"] == 2 and [r[0] for r in life(out) if r[1] == 1][-1] == "exit"
    finally:
        for node in nodes:
            node.kill()


def test_a_task_deleted_and_declared_again_while_it_runs_waits_for_the_old_command(tmp_path):
    """An operator moves a task's file away and back while its command runs.

    The task is deleted, then created again: a new task that is due at once. It used to be
    claimed while the old command was still stopping, and with a fence the old run had held.
    """
    nodes = start_two_nodes(tmp_path)
    out = tmp_path / "life.log"
    declared, away = tmp_path / "tasks.d" / "long.yaml", tmp_path / "long.yaml.away"
    try:
        declare_recorder(tmp_path, out, seconds=60, exit_after=2)
        wait_until(lambda: any(r[0] == "tick" for r in life(out)), timeout=30, what="the command to run")
        declared.rename(away)
        wait_until(lambda: all(node.task("long") is None for node in nodes), timeout=30, what="the task to go")
        away.rename(declared)

        wait_completed(nodes[0])
        assert_one_run_at_a_time(out)
        starts = [r for r in life(out) if r[0] == "start"]
        assert len(starts) == 2 and life(out)[-1][0] == "end", out.read_text()
    finally:
        for node in nodes:
            node.kill()


def test_a_cancelled_task_purged_while_its_command_stops_is_kept_until_it_has(tmp_path):
    """An operator cancels a task, purges it with the CLI and reloads while its command still stops.

    The purge used to delete the task, lease and all; the reload then declared it again from its
    file, and the new task started beside the old command.
    """
    nodes = start_two_nodes(tmp_path)
    out = tmp_path / "life.log"
    node = nodes[0]

    def purge_and_reload() -> int:
        purged = cli("task-purge", "--days", "0", "--force", "-o", "json", "--url", node.url, "--token", node.token)
        assert purged.returncode == 0, purged.stderr
        assert node.request("POST", "/-/reload")[0] == 200
        return json.loads(purged.stdout)["tasks"]

    try:
        declare_recorder(tmp_path, out, seconds=60, exit_after=2)
        wait_until(lambda: any(r[0] == "tick" for r in life(out)), timeout=30, what="the command to run")
        assert node.request("DELETE", "/cxs/tasks/long")[0] == 204
        assert purge_and_reload() == 0  # its command is still stopping: the task and its lease stay
        assert node.task("long")["status"] == "CANCELLED"

        wait_until(lambda: life(out)[-1][0] == "exit", timeout=30, what="the cancelled command to exit")
        wait_until(lambda: (node.task("long") or {}).get("lease") is None, timeout=30, what="the lease's release")
        assert purge_and_reload() == 1  # now it goes, and its file declares it again
        wait_completed(node)
        assert_one_run_at_a_time(out)
        assert [r[0] for r in life(out)].count("start") == 2
    finally:
        for daemon in nodes:
            daemon.kill()
