"""The reconciler against real SQLite stores and real files: reload rules and rollout convergence."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from datetime import timedelta

import pytest

from scheduler import reconcile
from scheduler.errors import StoreError, TaskNotFound
from scheduler.model import Status, TaskQuery
from scheduler.reconcile import Reconciler
from scheduler.store import open_store
from tests.support.taskfiles import counting_reads, task_yaml
from tests.support.wait import wait_for

from .conftest import StoreWrapper


@pytest.fixture
async def stores(tmp_path, clock):
    shared = open_store(f"sqlite:///{tmp_path / 'cluster.db'}", clock=clock)
    memory = open_store("sqlite:///:memory:", clock=clock)
    for store in (shared, memory):
        await store.start()
    yield shared, memory
    for store in (shared, memory):
        await store.close()


def reconciler(directory, stores, node_id="node-1", **options) -> Reconciler:
    shared, memory = stores
    return Reconciler(directory, shared, memory, node_id=node_id, **options)


def write(path, text, mtime=None):
    path.write_text(text)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


async def ids(store) -> list[str]:
    return [t.item_id for t in (await store.query_tasks(TaskQuery(limit=1000))).items]


async def test_files_become_tasks_and_an_unchanged_reload_writes_nothing(tmp_path, stores):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a"))
    write(tasks / "b.yml", task_yaml("b") + "---\n" + task_yaml("c"))
    write(tasks / ".ansible_tmp123a.yaml", task_yaml("ignored"))
    changes = []
    rec = reconciler(tasks, stores, on_change=lambda: changes.append(1))

    first = await rec.reload()
    second = await rec.reload()

    assert (first.ok, first.created, first.updated, first.removed) == (True, 3, 0, 0)
    assert (second.created, second.updated, second.removed) == (0, 0, 0)
    assert await ids(stores[0]) == ["a", "b", "c"]
    assert changes == [1] and rec.ready
    assert [f.status for f in second.files] == ["applied", "applied"]


async def test_a_bad_file_keeps_its_last_good_version(tmp_path, stores):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a", description="good"))
    rec = reconciler(tasks, stores)
    await rec.reload()

    write(tasks / "a.yaml", task_yaml("a", schedul="typo"))
    report = await rec.reload()

    assert not report.ok and report.rejected == 1
    state = report.files[0]
    assert state.status == "rejected" and state.tasks == ("a",)
    assert state.problems[0].line == 8 and "schedul" in state.problems[0].message
    assert (await stores[0].get_task("a")).spec.description == "good"
    data = state.to_dict()
    assert data["errors"][0]["location"] == f"{tasks / 'a.yaml'}:8:1"
    assert data["appliedSha256"] != data["sha256"]


async def test_spec_changes_keep_runtime_state_and_deleted_files_remove_tasks(tmp_path, stores):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a"))
    rec = reconciler(tasks, stores)
    await rec.reload()
    await stores[0].update_config("a", max_retries=9)

    write(tasks / "a.yaml", task_yaml("a", description="v2"))
    report = await rec.reload()
    task = await stores[0].get_task("a")
    assert report.updated == 1 and task.spec.description == "v2" and task.max_retries == 9

    (tasks / "a.yaml").unlink()
    report = await rec.reload()
    assert report.removed == 1 and report.files == ()
    with pytest.raises(TaskNotFound):
        await stores[0].get_task("a")


async def test_placement_of_non_persistent_and_run_on_all_tasks(tmp_path, stores):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "local.yaml", task_yaml("local", persistent="false"))
    write(tasks / "everywhere.yaml", task_yaml("everywhere", runOn="all"))
    shared, memory = stores

    await reconciler(tasks, stores, node_id="n1").reload()
    await reconciler(tasks, stores, node_id="n2").reload()
    await reconciler(tasks, stores, node_id="api-only", executor_node=False).reload()

    assert await ids(shared) == ["everywhere@n1", "everywhere@n2"]
    local = await memory.get_task("local")
    assert local.node == "n1"  # the first node to declare it; n2's identical spec writes nothing
    assert (await shared.get_task("everywhere@n2")).node == "n2"


async def test_nodes_holding_different_versions_converge_on_the_newest(tmp_path, stores, clock):
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    write(old_dir / "a.yaml", task_yaml("a", description="old"))
    write(new_dir / "a.yaml", task_yaml("a", description="new"), mtime=1_600_000_000)  # mtimes do not matter
    lagging, updated = reconciler(old_dir, stores, "n1"), reconciler(new_dir, stores, "n2")

    await lagging.reload()
    clock.advance(timedelta(seconds=1))
    await updated.reload()
    for _ in range(3):  # nodes keep reconciling and restarting: nobody flips the spec back
        clock.advance(timedelta(seconds=1))
        restarted = reconciler(old_dir, stores, "n1")
        report = await restarted.reload()
        assert report.superseded == 1 and report.updated == 0
        await updated.reload(full=True)

    assert (await stores[0].get_task("a")).spec.description == "new"
    [state] = report.files  # the lagging node says so, and which version runs instead
    assert state.status == "superseded" and state.to_dict()["appliedSha256"] is None
    assert [(s.item_id, s.nodes, s.source) for s in state.superseded] == [("a", ("n2",), f"{new_dir / 'a.yaml'}:1")]
    files, divergence = await restarted.current_files()
    assert files[0].status == "superseded" and [d["task"] for d in divergence] == ["a"]

    write(old_dir / "a.yaml", task_yaml("a", description="new"))  # the lagging node catches up
    report = await restarted.reload()
    assert report.files[0].status == "applied" and report.superseded == 0
    assert (await restarted.current_files())[1] == []


async def test_an_empty_directory_removes_nothing_another_node_declares(tmp_path, stores, clock):
    full, empty = tmp_path / "full", tmp_path / "empty"
    full.mkdir()
    empty.mkdir()
    write(full / "a.yaml", task_yaml("a"))
    await reconciler(full, stores, "n1").reload()

    report = await reconciler(empty, stores, "n2").reload()

    assert report.removed == 0 and await ids(stores[0]) == ["a"]


async def test_a_task_only_nodes_without_heartbeat_declared_goes(tmp_path, stores, clock):
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    write(mine / "a.yaml", task_yaml("a"))
    write(theirs / "a.yaml", task_yaml("a"))
    write(theirs / "b.yaml", task_yaml("b"))
    timeout = timedelta(seconds=30)
    me = reconciler(mine, stores, "n1", node_timeout=timeout)
    await reconciler(theirs, stores, "n2", node_timeout=timeout).reload()
    await me.reload()

    await me.maintain()  # n2 is live, and n1 has not been up long enough anyway
    assert await ids(stores[0]) == ["a", "b"]
    clock.advance(timeout * 2)  # n2 wrote no heartbeat since
    await me.maintain()
    assert await ids(stores[0]) == ["a"]
    assert [d.node_id for d in await stores[0].list_declarations()] == ["n1"]


async def test_a_declaration_gone_from_the_store_is_made_again(tmp_path, stores, clock):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a"))
    rec = reconciler(tasks, stores)
    await rec.reload()
    await stores[0].withdraw_specs("node-1", ["a"], live_after=clock())  # as a confused peer could

    await rec.maintain()

    assert await ids(stores[0]) == ["a"]
    assert [d.node_id for d in await stores[0].list_declarations()] == ["node-1"]


async def test_duplicate_names_across_files_reject_the_later_file(tmp_path, stores):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("same", description="first"))
    write(tasks / "b.yaml", task_yaml("same", description="second") + "---\n" + task_yaml("other"))

    report = await reconciler(tasks, stores).reload()

    assert [f.status for f in report.files] == ["applied", "rejected"]
    assert "already defined in" in report.files[1].problems[0].message
    assert (await stores[0].get_task("same")).spec.description == "first"
    assert await ids(stores[0]) == ["same"]


async def test_a_name_belongs_to_the_file_that_holds_it_whatever_the_name_order(tmp_path, stores, clock):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "b.yaml", task_yaml("same", description="holder"))
    rec = reconciler(tasks, stores)
    await rec.reload()

    write(tasks / "a.yaml", task_yaml("same", description="intruder") + "---\n" + task_yaml("other"))
    report = await rec.reload()
    assert [f.status for f in report.files] == ["rejected", "applied"]
    assert report.files[0].problems[0].message == f"task name 'same' is already defined in {tasks / 'b.yaml'}:1"
    assert await ids(stores[0]) == ["same"]  # the intruder's file is rejected as a whole

    restarted = reconciler(tasks, stores)  # the store tells a restarted node which file held the name
    report = await restarted.reload()
    assert [f.status for f in report.files] == ["rejected", "applied"] and report.removed == 0

    (tasks / "a.yaml").unlink()  # the intruder goes: nothing changes
    report = await restarted.reload()
    assert (report.updated, report.removed) == (0, 0)
    write(tasks / "a.yaml", task_yaml("same", description="intruder") + "---\n" + task_yaml("other"))
    await restarted.reload()
    (tasks / "b.yaml").unlink()  # the holder goes: the other declaration takes the name
    clock.advance(timedelta(seconds=1))
    report = await restarted.reload()
    assert [f.status for f in report.files] == ["applied"]
    assert (await stores[0].get_task("same")).spec.description == "intruder"
    assert await ids(stores[0]) == ["other", "same"]


async def test_a_restart_beside_a_broken_file_keeps_the_version_in_force(tmp_path, stores, clock):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a", description="good") + "---\n" + task_yaml("b"))
    write(tasks / "c.yaml", task_yaml("c"))
    await reconciler(tasks, stores).reload()
    await stores[0].update_config("a", max_retries=9)
    write(tasks / "a.yaml", task_yaml("a", schedul="typo"))
    (tasks / "c.yaml").unlink()

    restarted = reconciler(tasks, stores)
    report = await restarted.reload()

    assert (report.removed, report.updated) == (1, 0)  # c's file went; a's is only broken
    assert (report.files[0].status, report.files[0].tasks) == ("rejected", ("a", "b"))
    assert await ids(stores[0]) == ["a", "b"] and (await stores[0].get_task("a")).max_retries == 9
    write(tasks / "a.yaml", task_yaml("a", description="fixed"))
    clock.advance(timedelta(seconds=1))
    report = await restarted.reload()
    assert (report.updated, report.removed) == (1, 1)  # b is no longer declared
    assert (await stores[0].get_task("a")).spec.description == "fixed"


async def test_first_reload_removes_file_tasks_whose_files_went_while_the_node_was_down(tmp_path, stores):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a"))
    write(tasks / "b.yaml", task_yaml("b"))
    await reconciler(tasks, stores).reload()
    (tasks / "b.yaml").unlink()

    report = await reconciler(tasks, stores).reload()

    assert report.removed == 1
    assert await ids(stores[0]) == ["a"]


async def test_a_file_gone_while_down_goes_with_the_last_node_declaring_it(tmp_path, stores):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a"))
    write(tasks / "b.yaml", task_yaml("b"))
    write(tasks / "everywhere.yaml", task_yaml("everywhere", runOn="all"))
    await reconciler(tasks, stores, "n1").reload()
    await reconciler(tasks, stores, "n2").reload()
    (tasks / "b.yaml").unlink()

    report = await reconciler(tasks, stores, "n1").reload()

    assert (report.created, report.updated, report.removed) == (0, 0, 0)  # n2 still declares b
    assert await ids(stores[0]) == ["a", "b", "everywhere@n1", "everywhere@n2"]
    report = await reconciler(tasks, stores, "n2").reload()
    assert (report.created, report.updated, report.removed) == (0, 0, 1)
    assert await ids(stores[0]) == ["a", "everywhere@n1", "everywhere@n2"]


class FailingOnce(StoreWrapper):
    """A store whose first write of one item fails, as a store that loses its connection would."""

    def __init__(self, store, item_id):
        super().__init__(store)
        self.item_id, self.failed = item_id, False

    async def declare_spec(self, node_id, spec, **options):
        if options.get("item_id") == self.item_id and not self.failed:
            self.failed = True
            raise StoreError("connection lost")
        return await self._store.declare_spec(node_id, spec, **options)


async def test_writes_go_out_in_chunks_and_a_failed_write_is_retried_by_the_next_reload(tmp_path, stores, monkeypatch):
    monkeypatch.setattr(reconcile, "UPSERT_CHUNK", 2)
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    for name in "abcde":
        write(tasks / f"{name}.yaml", task_yaml(name))
    shared, memory = stores
    rec = Reconciler(tasks, FailingOnce(shared, "c"), memory, node_id="n1")

    with pytest.raises(StoreError, match="connection lost"):
        await rec.reload()
    report = await rec.reload()

    # Chunks a+b, c+d, e: d was written beside the failed c, e's chunk never went out.
    assert (report.created, report.updated, report.removed) == (2, 0, 0)
    assert await ids(shared) == ["a", "b", "c", "d", "e"]
    assert (await rec.reload()).created == 0


async def test_an_unreadable_directory_changes_nothing(tmp_path, stores):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a"))
    rec = reconciler(tasks, stores)
    await rec.reload()
    tasks.rename(tmp_path / "moved")

    report = await rec.reload()

    assert not report.ok and "cannot read the tasks directory" in report.problems[0].message
    assert (await stores[0].get_task("a")).status is Status.SCHEDULED


async def test_a_reload_that_does_not_finish_is_reported_until_it_does(tmp_path, stores, monkeypatch):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a"))
    rec = reconciler(tasks, stores)
    released = threading.Event()
    load_directory = reconcile.load_directory

    def blocked_reader(*args, **kwargs):  # what a FIFO named x.yaml does to the reader
        released.wait(30)
        return load_directory(*args, **kwargs)

    monkeypatch.setattr(reconcile, "load_directory", blocked_reader)
    assert rec.problems(timedelta(seconds=10)) == [f"the first reload of {tasks} has not finished"]
    reload = asyncio.create_task(rec.reload())
    try:
        problems = await wait_for(lambda: _now(rec.problems(timedelta(0))), lambda problems: len(problems) == 2)
        assert problems[1].startswith(f"the reload of {tasks} started at ")
        assert "has not finished after 0s (a file that blocks its reader, such as a FIFO" in problems[1]
        assert rec.problems(timedelta(seconds=10)) == problems[:1]  # running, not for long yet
    finally:
        released.set()
        await reload

    assert rec.problems(timedelta(0)) == []


async def _now(value):
    return value


async def test_a_reload_on_a_watchs_report_reads_only_the_files_it_names(tmp_path, stores, clock, monkeypatch):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    for name in ("a", "b", "c"):
        write(tasks / f"{name}.yaml", task_yaml(name))
    rec = reconciler(tasks, stores)
    await rec.reload()
    first_states = {s.path: s for s in rec.last_report.files}
    reads = counting_reads(monkeypatch)

    write(tasks / "b.yaml", task_yaml("b", description="v2"))
    (tasks / "c.yaml").unlink()
    write(tasks / "d.yaml", task_yaml("d"))
    clock.advance(timedelta(seconds=1))  # new content is newer
    report = await rec.reload(changed={"b.yaml", "c.yaml", "d.yaml"})

    assert sorted(reads) == ["b.yaml", "d.yaml"]
    assert (report.created, report.updated, report.removed) == (1, 1, 1)
    assert await ids(stores[0]) == ["a", "b", "d"]
    assert (await stores[0].get_task("b")).spec.description == "v2"
    assert [(os.path.basename(s.path), s.status) for s in report.files] == [
        ("a.yaml", "applied"), ("b.yaml", "applied"), ("d.yaml", "applied")
    ]
    assert report.files[0] is first_states[str(tasks / "a.yaml")]  # not read again: its state stands


async def test_a_file_turning_bad_on_a_watchs_report_keeps_its_last_good_version(tmp_path, stores, clock, monkeypatch):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a", description="good"))
    write(tasks / "b.yaml", task_yaml("b"))
    rec = reconciler(tasks, stores)
    await rec.reload()
    reads = counting_reads(monkeypatch)

    write(tasks / "a.yaml", task_yaml("a", schedul="typo"))
    bad = await rec.reload(changed={"a.yaml"})
    write(tasks / "b.yaml", task_yaml("a", description="a second a"))  # a duplicate of the rejected holder's name
    duplicate = await rec.reload(changed={"b.yaml"})
    in_force = (await stores[0].get_task("a")).spec.description
    write(tasks / "a.yaml", task_yaml("a", description="fixed"))
    write(tasks / "b.yaml", task_yaml("b"))
    clock.advance(timedelta(seconds=1))
    fixed = await rec.reload(changed={"a.yaml", "b.yaml"})

    assert reads[:2] == ["a.yaml", "b.yaml"] and sorted(reads[2:]) == ["a.yaml", "b.yaml"]
    assert [s.status for s in bad.files] == ["rejected", "applied"] and bad.files[0].tasks == ("a",)
    assert [s.status for s in duplicate.files] == ["rejected", "rejected"]
    assert "already defined" in duplicate.files[1].problems[0].message
    assert in_force == "good"
    assert fixed.ok and (await stores[0].get_task("a")).spec.description == "fixed"
    assert await ids(stores[0]) == ["a", "b"]


class SilentWatch:
    """A watch that misses every change (a full event queue, a file's link switched elsewhere)."""

    async def changes(self):
        await asyncio.Event().wait()
        yield None

    def close(self) -> None:
        pass


async def test_a_periodic_rescan_catches_a_change_the_watch_missed(tmp_path, stores, clock):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a", description="v1"))
    rec = reconciler(tasks, stores, rescan_interval=timedelta(milliseconds=50))
    await rec.reload()
    watching = asyncio.ensure_future(rec.watch(SilentWatch()))
    try:
        write(tasks / "a.yaml", task_yaml("a", description="v2"))
        clock.advance(timedelta(seconds=1))
        await wait_for(lambda: stores[0].get_task("a"), lambda task: task.spec.description == "v2")
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def test_after_a_failed_reload_the_next_one_reads_every_file(tmp_path, stores, clock, monkeypatch):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    write(tasks / "a.yaml", task_yaml("a"))
    write(tasks / "b.yaml", task_yaml("b"))
    shared, memory = stores
    rec = Reconciler(tasks, FailingOnce(shared, "b"), memory, node_id="n1")
    rec.store.failed = True  # not the first reload
    await rec.reload()
    rec.store.failed = False
    write(tasks / "b.yaml", task_yaml("b", description="v2"))
    clock.advance(timedelta(seconds=1))
    with pytest.raises(StoreError, match="connection lost"):
        await rec.reload(changed={"b.yaml"})
    reads = counting_reads(monkeypatch)

    report = await rec.reload(changed={"a.yaml"})

    assert sorted(reads) == ["a.yaml", "b.yaml"]
    assert report.updated == 1 and (await shared.get_task("b")).spec.description == "v2"
    assert [s.sha256 for s in report.files] == [hashlib.sha256((tasks / n).read_bytes()).hexdigest()
                                                for n in ("a.yaml", "b.yaml")]
