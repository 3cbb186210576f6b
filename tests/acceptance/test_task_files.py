"""What operators put in and around tasks.d, through real ``scheduler run`` processes (issue #12).

Odd entries (FIFOs, link loops, dangling links, directories named like task files)
are problems of their own file and never stop the node; the configured path is
followed at every reload, through a release switch or a re-created directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, cli
from tests.support.taskfiles import task_yaml
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(wait_ready: bool = True, **options) -> Daemon:
        daemon = Daemon(**options)
        started.append(daemon)  # before it starts: a node that never gets ready is killed too
        return daemon.start(wait_ready=wait_ready)

    yield start
    for daemon in started:
        daemon.kill()


def file_states(node: Daemon) -> dict[str, dict]:
    return {os.path.basename(f["path"]): f for f in node.get("/cxs/config")["files"]}


def description(node: Daemon, item_id: str) -> str | None:
    return (node.task(item_id) or {}).get("description")


def test_a_fifo_named_like_a_task_file_blocks_nothing(tmp_path, daemons):
    """Finding 5: start, reloads, the reload endpoint and the stop go on beside FIFOs."""
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tasks / "a.yaml").write_text(task_yaml("a"))
    os.mkfifo(tasks / "x.yaml")

    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)  # ready: the first reload finished

    assert node.task("a") is not None
    fifo = file_states(node)["x.yaml"]
    assert fifo["status"] == "rejected" and fifo["tasks"] == []
    assert fifo["errors"][0]["message"] == "cannot read: not a regular file: a FIFO (named pipe)"

    os.mkfifo(tasks / "y.yaml")
    (tasks / "b.yaml").write_text(task_yaml("b"))
    status, report = node.request("POST", "/-/reload")  # answers (the client gives up after 10 s)
    assert status == 200 and report["rejectedFiles"] == 2
    assert node.task("b") is not None
    (tasks / "c.yaml").write_text(task_yaml("c"))
    wait_until(lambda: node.task("c"), what="a file added beside the FIFOs applied by the watcher")

    assert node.stop(signal.SIGTERM) == 0


def test_link_loops_dangling_links_and_odd_entries_are_problems_of_their_own(tmp_path, daemons):
    """Finding 6: one bad entry never hides the others."""
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tasks / "a.yaml").write_text(task_yaml("a"))
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)

    os.symlink("loop.yaml", tasks / "loop.yaml")
    os.symlink("missing.yaml", tasks / "dangling.yaml")
    (tasks / "dir.yaml").mkdir()
    with socket.socket(socket.AF_UNIX) as listening:
        listening.bind(str(tasks / "sock.yaml"))
        (tasks / "b.yaml").write_text(task_yaml("b"))
        wait_until(lambda: node.task("b"), what="a file added beside the odd entries applied")
        states = wait_until(lambda: (s := file_states(node)) and "sock.yaml" in s and s, what="every entry checked")

        (tasks / "a.yaml").write_text(task_yaml("a", description="edited"))
        wait_until(lambda: description(node, "a") == "edited", what="an edit beside the odd entries applied")

        messages = {name: [e["message"] for e in state["errors"]] for name, state in states.items()}
        assert messages == {
            "a.yaml": [],
            "b.yaml": [],
            "dangling.yaml": ["cannot read: dangling symbolic link to missing.yaml"],
            "dir.yaml": ["cannot read: not a regular file: a directory"],
            "loop.yaml": ["cannot read: symbolic link loop (too many levels of symbolic links)"],
            "sock.yaml": ["cannot read: not a regular file: a socket"],
        }
        validate = cli("validate", str(tasks))
    assert validate.returncode == 2, validate  # unreadable files: an I/O error, reported one by one
    assert f"{tasks / 'loop.yaml'}: cannot read: symbolic link loop" in validate.stderr
    assert "2 task(s)" in validate.stderr


def switch_link(link: Path, target: str) -> None:
    """A release switch as deploy tools do it: ``ln -sfn``."""
    subprocess.run(["ln", "-sfn", target, str(link)], check=True)


def test_a_release_switch_of_the_tasks_directory_link_is_followed(tmp_path, daemons):
    """Finding 7: the configured path, not what it led to at start."""
    releases = tmp_path / "releases"
    for release, text in (("r1", "one"), ("r2", "two")):
        (releases / release).mkdir(parents=True)
        (releases / release / "a.yaml").write_text(task_yaml("a", description=text))
    (releases / "r2" / "b.yaml").write_text(task_yaml("b"))
    current = tmp_path / "current"
    switch_link(current, "releases/r1")
    node = daemons(state_dir=tmp_path / "state", tasks_dir=current)
    assert description(node, "a") == "one"

    switch_link(current, "releases/r2")
    wait_until(lambda: description(node, "a") == "two" and node.task("b"), what="the switch applied by the watcher")
    assert node.get("/cxs/config")["tasksDir"] == str(current)
    report = node.request("POST", "/-/reload")[1]
    assert [f["path"] for f in report["files"]] == [str(current / "a.yaml"), str(current / "b.yaml")]

    (releases / "r3").mkdir()
    (releases / "r3" / "a.yaml").write_text(task_yaml("a", description="three"))
    switch_link(current, "releases/r3")  # the watch followed the link, not r2
    wait_until(lambda: description(node, "a") == "three" and node.task("b") is None, what="the next switch applied")

    (releases / "r3" / "c.yaml").write_text(task_yaml("c"))
    wait_until(lambda: node.task("c"), what="a change inside the release in force applied")

    switch_link(current, "releases/r1")  # a roll-back: older files, but new content for the node
    wait_until(lambda: description(node, "a") == "one" and node.task("c") is None, what="the roll-back applied")


def test_a_configmap_update_is_applied_without_a_reload(tmp_path, daemons):
    """A Kubernetes ConfigMap volume: each task file links through ``..data``, which an update switches."""
    tasks = tmp_path / "tasks.d"
    (tasks / "..2026_11_30_1").mkdir(parents=True)
    (tasks / "..2026_11_30_1" / "a.yaml").write_text(task_yaml("a", description="one"))
    os.symlink("..2026_11_30_1", tasks / "..data")
    os.symlink("..data/a.yaml", tasks / "a.yaml")
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)
    assert description(node, "a") == "one"

    (tasks / "..2026_11_30_2").mkdir()
    (tasks / "..2026_11_30_2" / "a.yaml").write_text(task_yaml("a", description="two"))
    os.symlink("..2026_11_30_2", tasks / "..data_tmp")
    os.replace(tasks / "..data_tmp", tasks / "..data")  # as the kubelet does it
    shutil.rmtree(tasks / "..2026_11_30_1")
    wait_until(lambda: description(node, "a") == "two", what="the ConfigMap's new version applied")


def test_a_tasks_directory_removed_and_created_again_is_watched_again(tmp_path, daemons):
    """Finding 7: no SIGHUP needed after the directory came back."""
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tasks / "a.yaml").write_text(task_yaml("a", description="one"))
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)

    shutil.rmtree(tasks)
    tasks.mkdir()
    (tasks / "a.yaml").write_text(task_yaml("a", description="two"))
    (tasks / "b.yaml").write_text(task_yaml("b"))
    wait_until(lambda: description(node, "a") == "two" and node.task("b"), what="the new directory's files applied")

    (tasks / "c.yaml").write_text(task_yaml("c"))
    wait_until(lambda: node.task("c"), what="a change in the new directory applied")
    assert node.stop() == 0


def test_a_name_belongs_to_the_file_that_holds_it_whatever_the_name_order(tmp_path, daemons):
    """Finding 3: a new file sorting first does not take a task over, not even across a restart."""
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tasks / "disk-usage.yaml").write_text(task_yaml("disk-usage", description="original"))
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)

    (tasks / "aaa-dup.yaml").write_text(task_yaml("disk-usage", description="intruder"))
    intruder = wait_until(lambda: file_states(node).get("aaa-dup.yaml"), what="the intruder checked")
    assert intruder["status"] == "rejected" and intruder["tasks"] == []
    assert intruder["errors"][0]["message"] == (
        f"task name 'disk-usage' is already defined in {tasks / 'disk-usage.yaml'}:1"
    )
    assert file_states(node)["disk-usage.yaml"]["status"] == "applied"
    assert description(node, "disk-usage") == "original"

    (tasks / "aaa-dup.yaml").unlink()  # the intruder goes: nothing changes
    wait_until(lambda: "aaa-dup.yaml" not in file_states(node), what="the intruder gone")
    assert description(node, "disk-usage") == "original"
    assert file_states(node)["disk-usage.yaml"]["status"] == "applied"

    (tasks / "aaa-dup.yaml").write_text(task_yaml("disk-usage", description="intruder"))
    wait_until(lambda: "aaa-dup.yaml" in file_states(node), what="the intruder back")
    assert node.stop() == 0
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)  # a restart knows the holder from the store
    assert file_states(node)["aaa-dup.yaml"]["status"] == "rejected"
    assert description(node, "disk-usage") == "original"

    (tasks / "disk-usage.yaml").unlink()  # the holder goes: the other declaration takes the name
    wait_until(lambda: description(node, "disk-usage") == "intruder", what="the name taken over")
    assert file_states(node)["aaa-dup.yaml"]["status"] == "applied"


def test_a_restored_copy_with_an_older_modification_time_is_applied(tmp_path, daemons):
    """Finding 4: cp -p of a backup is new content for the node, whatever its mtime; never silently ignored."""
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tasks / "a.yaml").write_text(task_yaml("a", description="current"))
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)

    backup = tmp_path / "backup.yaml"
    backup.write_text(task_yaml("a", description="restored"))
    os.utime(backup, (1_700_000_000, 1_700_000_000))
    subprocess.run(["cp", "-p", str(backup), str(tasks / "a.yaml")], check=True)

    wait_until(lambda: description(node, "a") == "restored", what="the restored file applied")
    state = file_states(node)["a.yaml"]
    assert (state["status"], state["superseded"]) == ("applied", [])


def test_a_restart_with_a_broken_or_unreadable_file_keeps_its_tasks(tmp_path, daemons):
    """Finding 2: counters, history and operator overrides survive a restart beside a bad file."""
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tasks / "a.yaml").write_text(task_yaml("a", description="good"))
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)
    wait_until(lambda: (node.task("a") or {}).get("successCount") == 1, what="a ran once")  # its first slot is now
    assert node.request("PUT", "/cxs/tasks/a/config?maxRetries=7")[0] == 200

    for breakage in ("invalid", "fifo"):
        assert node.stop() == 0
        (tasks / "a.yaml").unlink()
        if breakage == "invalid":
            (tasks / "a.yaml").write_text(task_yaml("a", schedul="typo"))
        else:
            os.mkfifo(tasks / "a.yaml")
        node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)
        task = node.task("a")
        assert task is not None, f"{breakage}: the task was deleted"
        assert (task["description"], task["successCount"], task["maxRetries"]) == ("good", 1, 7)
        state = file_states(node)["a.yaml"]
        assert (state["status"], state["tasks"]) == ("rejected", ["a"]), breakage

    (tasks / "a.yaml").unlink()
    (tasks / "a.yaml").write_text(task_yaml("a", description="fixed"))
    fixed = wait_until(lambda: description(node, "a") == "fixed" and node.task("a"), what="the fixed file applied")
    assert (fixed["successCount"], fixed["maxRetries"], len(fixed["history"])) == (1, 7, 1)


def test_an_operators_reload_brings_back_a_task_its_file_still_declares(tmp_path, daemons):
    """Finding 2: a task missing from the store is written again by POST /-/reload or SIGHUP."""
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tasks / "a.yaml").write_text(task_yaml("a"))
    node = daemons(state_dir=tmp_path / "state", tasks_dir=tasks)

    def purge() -> None:  # an operator's purge deletes a cancelled task, even one a file declares
        assert node.request("DELETE", "/cxs/tasks/a")[0] == 204  # cancel
        assert cli("task-purge", "--days", "0", "--force", "--url", node.url, "--token", node.token).returncode == 0
        assert node.task("a") is None

    purge()
    status, report = node.request("POST", "/-/reload")
    assert (status, report["created"]) == (200, 1) and node.task("a") is not None

    purge()
    node.process.send_signal(signal.SIGHUP)
    wait_until(lambda: node.task("a"), what="the task written again after SIGHUP")


# -- a cluster: nodes on one store, each with its own tasks.d ---------------------------------------------


def declaring(node: Daemon, item_id: str) -> set[str]:
    """The nodes declaring ``item_id``, as ``node`` sees them (none while the task does not exist)."""
    status, body = node.request("GET", f"/cxs/tasks/{item_id}/declarations")
    return {d["node"] for d in body["declarations"]} if status == 200 else set()


def cluster_config(tmp_path: Path, node_timeout: str) -> Path:
    config = tmp_path / f"scheduler-{node_timeout}.yaml"
    config.write_text(f"leaseDuration: 1s\npollInterval: 100ms\nnodeTimeout: {node_timeout}\nshutdownGrace: 1s\n")
    return config


def cluster_node(tmp_path: Path, daemons, node_id: str, node_timeout: str = "2s", **options) -> Daemon:
    """A node of a cluster on one SQLite file; a node silent for ``node_timeout`` stops counting."""
    tasks = tmp_path / f"tasks-{node_id}"
    tasks.mkdir(exist_ok=True)
    return daemons(state_dir=tmp_path / f"state-{node_id}", tasks_dir=tasks, node_id=node_id,
                   store=f"sqlite:///{tmp_path / 'cluster.db'}", config=cluster_config(tmp_path, node_timeout),
                   **options)


def test_a_node_with_an_empty_tasks_directory_removes_nothing_others_declare(tmp_path, daemons):
    """Finding 1: adding a node before its task files are deployed wipes nothing."""
    a = cluster_node(tmp_path, daemons, "a")
    for name in ("heartbeat", "backup"):
        (a.tasks_dir / f"{name}.yaml").write_text(task_yaml(name))
    wait_until(lambda: a.task("heartbeat") and a.task("backup"), what="a's tasks")

    b = cluster_node(tmp_path, daemons, "b")  # empty tasks.d
    assert b.task("heartbeat") is not None and b.task("backup") is not None
    assert "removed task" not in b.log()
    status, report = a.request("POST", "/-/reload")
    assert (status, report["created"], report["removed"]) == (200, 0, 0)

    (b.tasks_dir / "heartbeat.yaml").write_text(task_yaml("heartbeat"))  # b gets the files, then loses one
    wait_until(lambda: "b" in declaring(b, "heartbeat"), what="b declaring heartbeat")
    (b.tasks_dir / "heartbeat.yaml").unlink()
    wait_until(lambda: "no longer declared here" in b.log(), what="b withdrawing heartbeat")
    assert a.task("heartbeat") is not None  # a still declares it
    (a.tasks_dir / "backup.yaml").unlink()  # the only copy: the task goes at once
    wait_until(lambda: a.task("backup") is None, what="backup removed with its only file")


def test_a_node_restarting_with_a_broken_copy_keeps_the_task_others_declare(tmp_path, daemons):
    """Finding 2, in a cluster: b's broken copy deletes nothing, and a's good copy stays in force."""
    # b restarts within the node timeout, however loaded the machine: its declarations still count.
    a = cluster_node(tmp_path, daemons, "a", node_timeout="60s")
    b = cluster_node(tmp_path, daemons, "b", node_timeout="60s")
    for node in (a, b):
        (node.tasks_dir / "a.yaml").write_text(task_yaml("a", description="good"))
    wait_until(lambda: declaring(a, "a") == {"a", "b"}, what="both declaring a")
    wait_until(lambda: (a.task("a") or {}).get("successCount", 0) >= 1, what="a ran")
    before = a.task("a")

    assert b.stop() == 0
    (b.tasks_dir / "a.yaml").write_text("name: [")
    b = cluster_node(tmp_path, daemons, "b", node_timeout="60s")
    assert b.task("a")["successCount"] >= before["successCount"] and b.task("a")["description"] == "good"
    assert file_states(b)["a.yaml"]["status"] == "rejected" and file_states(b)["a.yaml"]["tasks"] == ["a"]
    assert declaring(b, "a") == {"a", "b"}  # b's last good declaration stays recorded


def runs_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_rollout_converges_on_the_new_version_and_the_divergence_shows_meanwhile(tmp_path, daemons):
    """Done when: a gets v2 while b still has v1, then b gets v2: v2 wins, and never runs v1 again."""
    runs = tmp_path / "runs"
    version = lambda v: task_yaml("rollout", every="1s", shell=f"echo {v} >> {runs}", description=v)  # noqa: E731
    a = cluster_node(tmp_path, daemons, "a")
    b = cluster_node(tmp_path, daemons, "b")
    for node in (a, b):
        (node.tasks_dir / "rollout.yaml").write_text(version("v1"))
    wait_until(lambda: "v1" in runs_of(runs), what="v1 running")

    (a.tasks_dir / "rollout.yaml").write_text(version("v2"))
    wait_until(lambda: description(b, "rollout") == "v2", what="v2 in force")
    config = b.get("/cxs/config")
    [state] = config["files"]
    assert state["status"] == "superseded" and state["superseded"][0]["nodes"] == ["a"]
    [diverged] = config["divergence"]
    held = {d["node"]: d["specHash"] for d in diverged["declarations"]}
    assert diverged["task"] == "rollout" and held["a"] == diverged["inForce"] != held["b"]
    assert a.get("/cxs/config")["divergence"] == [diverged]
    shown = cli("task-show", "rollout", "--url", b.url, "--token", b.token).stdout
    assert f"b: spec {held['b'][:12]} (NOT in force)" in shown and f"a: spec {held['a'][:12]} (in force)" in shown
    metrics = b.request("GET", "/metrics", auth=False)[1]
    assert "scheduler_tasks_diverged 1.0" in metrics
    assert f'scheduler_task_declaration{{in_force="0",node="b",spec="{held["b"][:12]}",task="rollout"}} 1.0' in metrics

    assert b.stop() == 0  # b restarts, still on v1: it does not take the task back
    b = cluster_node(tmp_path, daemons, "b")
    assert description(b, "rollout") == "v2" and file_states(b)["rollout.yaml"]["status"] == "superseded"

    (b.tasks_dir / "rollout.yaml").write_text(version("v2"))
    wait_until(lambda: b.get("/cxs/config")["divergence"] == [], what="b on v2: no divergence")
    assert file_states(b)["rollout.yaml"]["status"] == "applied" and file_states(a)["rollout.yaml"]["status"] == "applied"
    converged = len(runs_of(runs))
    wait_until(lambda: len(runs_of(runs)) >= converged + 3, what="more runs after the convergence")
    assert set(runs_of(runs)[converged:]) == {"v2"}
    assert description(a, "rollout") == "v2"


def test_a_task_only_a_node_that_left_the_cluster_declared_goes(tmp_path, daemons):
    """A node that missed its heartbeats for nodeTimeout stops counting."""
    a = cluster_node(tmp_path, daemons, "a")
    b = cluster_node(tmp_path, daemons, "b")
    (a.tasks_dir / "shared.yaml").write_text(task_yaml("shared"))
    (b.tasks_dir / "shared.yaml").write_text(task_yaml("shared"))
    (b.tasks_dir / "only-b.yaml").write_text(task_yaml("only-b"))
    wait_until(lambda: a.task("only-b") and declaring(a, "shared") == {"a", "b"}, what="b's declarations")

    b.kill()  # no goodbye: its heartbeat just stops
    wait_until(lambda: a.task("only-b") is None, timeout=30, what="only-b removed once b stopped counting")
    assert a.task("shared") is not None
    assert declaring(a, "shared") == {"a"}
