"""``GET /readyz`` of a real ``scheduler run``: ready means the node can do its job now.

Each scenario breaks what a node needs while it runs (its store file, the
room on the store's disk, its reloads) and waits, bounded, for the node to say
so: 503 and a problem naming the cause in the answer, once in the log.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.taskfiles import task_yaml
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# A heartbeat every second; none for 2 s and the node is not ready. A reload is stuck after 10 s.
CONFIG = "leaseDuration: 3s\npollInterval: 200ms\n"


@pytest.fixture
def daemons(tmp_path):
    started: list[Daemon] = []
    config = tmp_path / "scheduler.yaml"
    config.write_text(CONFIG)

    def start(**options) -> Daemon:
        daemon = Daemon(state_dir=tmp_path / "state", config=config, **options).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def readiness(node: Daemon) -> tuple[int, list[str]]:
    status, body = node.request("GET", "/readyz", auth=False)
    return status, body.get("problems", [])


def problems(node: Daemon) -> list[str]:
    """The problems /readyz answers; empty while it answers 200."""
    status, found = readiness(node)
    assert (status == 503) == bool(found), (status, found)
    return found


def test_a_store_file_replaced_then_deleted_under_the_node_is_reported_once_each(tmp_path, daemons):
    path = tmp_path / "store" / "tasks.db"
    path.parent.mkdir()
    node = daemons(store=f"sqlite://{path}")

    # An operator restores a backup over the running node's file: the node still uses the old one.
    backup = tmp_path / "backup.db"
    shutil.copyfile(path, backup)
    os.replace(backup, path)
    [replaced] = wait_until(lambda: problems(node), timeout=30, what="the replaced file reported")
    assert replaced.startswith(f"SQLite store file {path} was replaced by another file: ")
    assert readiness(node) == (503, [replaced])  # asked again: the same state, not logged again

    path.unlink()
    deleted = wait_until(lambda: problems(node) != [replaced] and problems(node), timeout=30,
                         what="the deleted file reported")
    assert deleted == [f"SQLite store file {path} was deleted: this node still uses the deleted file, "
                       "which no other process can open; restart the node"]
    assert readiness(node) == (503, deleted)

    log = node.log()
    assert log.count(f"node-1 not ready: {replaced}") == 1, log
    assert log.count(f"node-1 not ready: {deleted[0]}") == 1, log


def _can_mount_in_a_namespace_of_its_own() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


def on_a_small_filesystem(mount_point: Path, size: str) -> tuple[str, ...]:
    """A command prefix: run the node in a mount namespace of its own, ``mount_point`` a tmpfs of ``size``.

    A real full disk (ENOSPC, "database or disk is full") without needing root: the
    mount lives and dies with the node, and this test reaches it through /proc/<pid>/root.
    """
    script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
    return ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", size, str(mount_point))


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its filesystem is full; the file, to delete to make room."""
    filler = directory / "filler"
    try:  # closing the file flushes what is left, which can be where the disk runs out
        with open(filler, "wb") as stream:
            while True:
                stream.write(bytes(64 * 1024))
                stream.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    return filler


@pytest.mark.skipif(not _can_mount_in_a_namespace_of_its_own(),
                    reason="needs unshare --user --mount to give the node a small filesystem")
def test_a_node_whose_store_disk_is_full_is_not_ready_until_there_is_room_again(tmp_path, daemons):
    small = tmp_path / "small"
    small.mkdir()
    node = daemons(store=f"sqlite://{small / 'tasks.db'}", command_prefix=on_a_small_filesystem(small, "4m"))
    seen_by_node = Path(f"/proc/{node.process.pid}/root") / small.relative_to("/")

    filler = fill(seen_by_node)
    [problem] = wait_until(lambda: problems(node), timeout=30, what="not ready while the disk is full")
    assert problem.startswith("no heartbeat written to the store for more than 2s (one is due every 1s): ")
    assert problem.endswith(f"SQLite store {small / 'tasks.db'}: database or disk is full")

    filler.unlink()
    wait_until(lambda: readiness(node)[0] == 200, timeout=30, what="ready again once there is room")
    # An INFO line of the event loop: written within logs.BATCH_DELAY, not necessarily before the answer.
    wait_until(lambda: "node-1 ready again" in node.log(), what="the node's line saying it is ready again")
    assert node.log().count("node-1 ready again") == 1


def refused(node: Daemon, path: Path) -> str | None:
    """"refused" once the last reload rejected ``path`` instead of waiting on it."""
    files = node.get("/cxs/config")["files"]
    return "refused" if any(f["path"] == str(path) and f["status"] == "rejected" for f in files) else None


def test_a_reload_that_does_not_finish_makes_the_node_not_ready_until_it_does(tmp_path, daemons):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tasks / "a.yaml").write_text(task_yaml("a"))
    node = daemons(tasks_dir=tasks)

    fifo = tasks / "x.yaml"
    os.mkfifo(fifo)  # the reload reading it waits in open() for a writer that never comes
    stuck = wait_until(lambda: problems(node) or refused(node, fifo), timeout=60, what="the stuck reload reported")
    if stuck == "refused":
        pytest.skip("the loader refuses a FIFO without blocking: no file left to hang a reload with "
                    "(tests/engine/test_reconcile.py blocks one in process)")
    [stuck] = stuck
    assert stuck.startswith(f"the reload of {tasks} started at ")
    assert "has not finished after 10s" in stuck

    # Let the reader go: a writer comes and leaves an empty file, gone before the next reload.
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO if the reload were not in open()
    fifo.unlink()
    os.close(writer)
    wait_until(lambda: readiness(node)[0] == 200, timeout=30, what="ready once the reload finished")
