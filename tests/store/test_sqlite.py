"""What only the SQLite backend promises: file settings, schema version, URLs, query plans."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scheduler.errors import StoreError, TaskNotFound
from scheduler.model import Requirement, Status, TaskQuery, UpsertResult
from scheduler.store import open_store
from scheduler.store import sqlite as sqlite_store
from scheduler.store.sqlite import SQLiteStore
from scheduler.store.sqlite_schema import SCHEMA_VERSION
from tests.support.clock import ManualClock

from .helpers import LEASE, add_task, failure, make_spec, success


async def test_file_database_uses_wal_and_records_its_schema_version(tmp_path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path):
        pass
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()


async def test_reopening_keeps_the_data(tmp_path):
    clock = ManualClock()
    async with SQLiteStore(tmp_path / "s.db", clock) as store:
        await add_task(store, clock(), "t")
    async with SQLiteStore(tmp_path / "s.db", clock) as store:
        assert (await store.get_task("t")).status == Status.SCHEDULED


async def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    conn.close()
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}.*upgrade"):
        await store.start()
    await store.close()  # nothing started: still fine


V1_DUMP = Path(__file__).parent / "data" / "schema_v1.sql"


def _claim_index_columns(path) -> list[str]:
    with sqlite3.connect(path) as conn:
        columns = [row[2] for row in conn.execute("PRAGMA index_info(tasks_claim)")]
    conn.close()
    return columns


async def test_a_version_1_file_is_migrated_in_place(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_DUMP.read_text())
    conn.close()
    assert _claim_index_columns(path) == ["next_at", "item_id"]
    clock = ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc))  # when the dump was written

    async with SQLiteStore(path, clock) as store:
        # What each task needs: an executor for its type without a run: section, nothing with one.
        assert await store.count_waiting() == {
            Requirement("appJob"): 1, Requirement(None): 1, Requirement("inventory", node="node-a"): 1,
        }
        assert (await store.list_nodes())[0].task_types == ()
        assert (await store.list_nodes())[0].stuck == 0
        # Each node claims what it can run: node-a its own copy, the program its appJob task.
        claims = await store.claim_due("node-a", 10, LEASE, task_types={"inventory"})
        assert [claim.item_id for claim in claims] == ["inventory@node-a"]
        assert [claim.item_id for claim in await store.claim_due("app", 10, LEASE, task_types={"appJob"})] == [
            "app-job"
        ]

    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        stored = dict(conn.execute("SELECT item_id, executor_type FROM tasks"))
    conn.close()
    assert stored == {"app-job": "appJob", "backup": None, "inventory@node-a": "inventory"}
    assert _claim_index_columns(path) == ["executor_type", "next_at", "item_id", "node", "nodes"]

    # A version 1 scheduler still running on the file writes a task without its executor type:
    # the next open fills it in, and changes nothing else.
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tasks SET executor_type = NULL WHERE item_id = 'app-job'")
    conn.close()
    async with SQLiteStore(path, clock):
        pass
    with sqlite3.connect(path) as conn:
        assert dict(conn.execute("SELECT item_id, executor_type FROM tasks")) == stored
    conn.close()
    assert _claim_index_columns(path) == ["executor_type", "next_at", "item_id", "node", "nodes"]


V4_DUMP = Path(__file__).parent / "data" / "schema_v4.sql"


async def test_a_version_4_file_gets_suspensions_keep_runs_free_hand_backs_and_lasting_leases(tmp_path):
    path = tmp_path / "v4.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(V4_DUMP.read_text())
        claim_condition = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks_claim'").fetchone()[0]
    conn.close()
    assert "suspended_at" not in claim_condition
    clock = ManualClock(datetime(2030, 1, 1, 13, 0, tzinfo=timezone.utc))  # both tasks due

    async with SQLiteStore(path, clock) as store:
        assert not (await store.get_task("backup")).suspended
        await store.suspend("backup")
        [claim] = await store.claim_due("node-a", 10, LEASE)
        assert claim.item_id == "report" and claim.task.interruptions == 0
        assert await store.abandon_runs([claim], "Interrupted by scheduler shutdown") == ["report"]
        assert (await store.get_task("report")).interruptions == 1  # schema 6
        assert (await store.list_runs("backup")).total == 1
        assert (await store.purge()).runs == 0  # no keepRuns in the old specs: nothing trimmed

    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        claim_condition = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks_claim'").fetchone()[0]
        limits = conn.execute("SELECT keep_successful, keep_failed FROM tasks").fetchall()
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert SCHEMA_VERSION == 7 and "suspended_at IS NULL" in claim_condition
    assert [tuple(row) for row in limits] == [(None, None), (None, None)]
    assert "tasks_leases" in indexes and "tasks_recover" not in indexes and "removed_leases" in tables  # schema 7


async def test_sqlite_errors_become_store_errors(tmp_path):
    store = SQLiteStore(tmp_path / "missing-dir" / "s.db")
    with pytest.raises(StoreError, match="unable to open") as error:
        await store.start()
    assert isinstance(error.value.__cause__, sqlite3.Error)


async def test_the_check_fails_once_the_file_is_deleted_under_the_store(tmp_path):
    path = tmp_path / "s.db"
    async with SQLiteStore(path) as store:
        await store.check()
        path.unlink()

        with pytest.raises(StoreError, match=f"SQLite store file {path} was deleted: .*restart the node"):
            await store.check()


async def test_the_check_fails_once_another_file_replaces_the_one_opened(tmp_path):
    path, other = tmp_path / "s.db", tmp_path / "restored.db"
    async with SQLiteStore(other):
        pass
    async with SQLiteStore(path) as store:
        other.replace(path)  # an operator restoring a backup over a running node's file

        with pytest.raises(StoreError, match=f"SQLite store file {path} was replaced by another file: .*restart the node"):
            await store.check()


async def test_no_write_reaches_a_file_replaced_under_the_store(tmp_path):
    path, other = tmp_path / "s.db", tmp_path / "restored.db"
    clock = ManualClock()
    async with SQLiteStore(other):
        pass
    async with SQLiteStore(path, clock) as store:
        await add_task(store, clock(), "t")
        other.replace(path)

        with pytest.raises(StoreError, match=f"SQLite store file {path} was replaced by another file"):
            await store.claim_due("a", 10, timedelta(seconds=30))
        with pytest.raises(StoreError, match=f"SQLite store file {path} was replaced by another file"):
            await add_task(store, clock(), "u")
    async with SQLiteStore(path, clock) as restored:  # what every other process sees: nothing of the refused writes
        tasks = (await restored.query_tasks(TaskQuery())).items
        assert "u" not in [task.item_id for task in tasks]
        assert all(task.status is Status.SCHEDULED for task in tasks) and (await restored.list_runs("t")).total == 0


async def test_a_store_in_memory_passes_its_check():
    async with SQLiteStore(":memory:") as store:
        await store.check()


async def test_memory_stores_are_private(tmp_path):
    clock = ManualClock()
    async with SQLiteStore(":memory:", clock) as first, SQLiteStore(":memory:", clock) as second:
        await add_task(first, clock(), "t")
        assert (await second.query_tasks(TaskQuery())).total == 0


async def test_lifecycle_errors(tmp_path):
    store = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(StoreError, match="not started"):
        await store.get_task("t")
    await store.start()
    with pytest.raises(StoreError, match="already started"):
        await store.start()
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="not started"):
        await store.list_nodes()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/lib/scheduler/tasks.db", "/var/lib/scheduler/tasks.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("sqlite://:memory:", ":memory:"),
        ("memory:", ":memory:"),
    ],
)
def test_open_store_sqlite_urls(url, path):
    store = open_store(url)
    assert isinstance(store, SQLiteStore) and store.path == path


@pytest.mark.parametrize("url", ["sqlite://relative.db", "sqlite://", "sqlite:///", "postgres://db/x", "tasks.db", ""])
def test_open_store_rejects_other_urls(url):
    with pytest.raises(StoreError, match="sqlite:///absolute/path.db"):
        open_store(url)


def test_open_store_mongodb_url_uses_the_mongo_backend():
    from scheduler.store.mongo import MongoStore

    assert isinstance(open_store("mongodb://127.0.0.1:27017/scheduler"), MongoStore)


def test_open_store_passes_the_clock():
    clock = ManualClock()
    clock.advance(timedelta(milliseconds=1500))
    assert open_store("memory:", clock=clock).now() == clock()


async def until_queued(store: SQLiteStore, count: int) -> None:
    """Wait until ``count`` writes wait for the writer (each enqueues on its task's first step)."""
    for _ in range(100):
        if len(store._pending) == count:
            return
        await asyncio.sleep(0)
    assert len(store._pending) == count


@contextlib.asynccontextmanager
async def traced(store: SQLiteStore):
    """The statements the writer runs meanwhile."""
    statements: list[str] = []
    await store._call(lambda: store._conn.set_trace_callback(statements.append))
    try:
        yield statements
    finally:
        await store._call(lambda: store._conn.set_trace_callback(None))


async def queue_up(store: SQLiteStore, *writes) -> list:
    """Run ``writes`` as one batch: the writer is held until all of them are queued; what they
    returned or raised, and the statements the writer ran meanwhile."""
    gate = threading.Event()
    async with traced(store) as statements:
        store._executor.submit(gate.wait, 30)  # hold the worker so that the writes queue up
        done = asyncio.gather(*writes, return_exceptions=True)
        await until_queued(store, len(writes))
        gate.set()
        results = await done
    return [*results, statements]


async def test_queued_writes_share_one_commit(tmp_path):
    clock = ManualClock()
    async with SQLiteStore(tmp_path / "s.db", clock) as store:
        *created, statements = await queue_up(
            store, *(store.upsert_spec(make_spec(name), first_due=clock()) for name in "abc"))
        assert created == [UpsertResult.CREATED] * 3
        assert [sql for sql in statements if sql.startswith(("BEGIN", "COMMIT", "SAVEPOINT"))] == [
            "BEGIN IMMEDIATE", "COMMIT"]  # none failed: no savepoint needed


async def test_queued_writes_stay_atomic_each_when_one_fails(tmp_path):
    clock = ManualClock()
    async with SQLiteStore(tmp_path / "s.db", clock) as store:
        await add_task(store, clock(), "kept")

        def delete_then_fail(conn, now):
            conn.execute("DELETE FROM tasks WHERE item_id = 'kept'")
            raise ValueError("refused after writing")

        created_a, refused, missing, created_b, statements = await queue_up(
            store,
            store.upsert_spec(make_spec("a"), first_due=clock()),
            store._write(delete_then_fail),
            store.cancel("missing"),
            store.upsert_spec(make_spec("b"), first_due=clock()),
        )

        assert created_a == created_b == UpsertResult.CREATED
        assert isinstance(refused, ValueError) and isinstance(missing, TaskNotFound)
        assert [task.item_id for task in (await store.query_tasks(TaskQuery())).items] == ["a", "b", "kept"]
        # Applied at once and rolled back at the first error, then again with a savepoint per verb.
        transactions = [sql for sql in statements if sql.startswith(("BEGIN", "COMMIT", "ROLLBACK"))]
        assert transactions == ["BEGIN IMMEDIATE", "ROLLBACK", "BEGIN IMMEDIATE", "ROLLBACK TO verb",
                                "ROLLBACK TO verb", "COMMIT"]


async def _claimed(store: SQLiteStore, clock: ManualClock, count: int) -> list:
    for index in range(count):
        await add_task(store, clock(), f"t{index}")
    claims = await store.claim_due("a", count, LEASE)
    assert len(claims) == count
    return claims


async def test_run_ends_one_after_another_share_a_commit(tmp_path, monkeypatch):
    """Runs ending moments apart (slots spread over each second) wait for one another: one commit for
    several, rather than a transaction each."""
    monkeypatch.setattr(sqlite_store, "FINISH_LINGER", 1.0)
    clock = ManualClock()
    async with SQLiteStore(tmp_path / "s.db", clock) as store:
        first, second, third = await _claimed(store, clock, 3)
        assert await store.finish_run(first, *success(first, clock()))  # the first commit of run ends: at once
        async with traced(store) as statements:
            ending = asyncio.ensure_future(store.finish_run(second, *success(second, clock())))
            await until_queued(store, 1)  # the writer waits for the rest of FINISH_LINGER after the first commit
            assert not ending.done()
            assert await store.finish_run(third, *success(third, clock())) and await ending
        assert [sql for sql in statements if sql.startswith(("BEGIN", "COMMIT"))] == ["BEGIN IMMEDIATE", "COMMIT"]


async def test_any_other_write_cuts_the_wait_of_run_ends_short(tmp_path, monkeypatch):
    """A claim (or an operator's action) never waits for run ends to gather: it commits at once, with them."""
    monkeypatch.setattr(sqlite_store, "FINISH_LINGER", 30)
    clock = ManualClock()
    async with SQLiteStore(tmp_path / "s.db", clock) as store:
        first, second = await _claimed(store, clock, 2)
        await add_task(store, clock(), "next")
        assert await store.finish_run(first, *success(first, clock()))
        ending = asyncio.ensure_future(store.finish_run(second, *success(second, clock())))
        await until_queued(store, 1)
        assert not ending.done()  # waiting for other run ends, up to half a minute
        claims = await asyncio.wait_for(store.claim_due("a", 5, LEASE), timeout=10)
        assert [claim.item_id for claim in claims] == ["next"]
        assert await asyncio.wait_for(ending, timeout=10)  # it went with the claim


async def test_reads_are_served_while_the_writer_is_busy(tmp_path):
    """An API request (a read) must not wait behind a busy node's claims and finishes, nor the reverse."""
    clock = ManualClock()
    async with SQLiteStore(tmp_path / "s.db", clock) as store:
        await add_task(store, clock(), "kept")
        gate = threading.Event()
        store._executor.submit(gate.wait, 30)  # the writer's thread is busy (a long commit, a lock wait)
        try:
            write = asyncio.ensure_future(store.cancel("kept"))
            task = await asyncio.wait_for(store.get_task("kept"), timeout=10)
            listed = await asyncio.wait_for(store.query_tasks(TaskQuery()), timeout=10)
            assert task.status is Status.SCHEDULED and [t.item_id for t in listed.items] == ["kept"]
            assert not write.done()
        finally:
            gate.set()
        assert (await write).status is Status.CANCELLED
        assert (await store.get_task("kept")).status is Status.CANCELLED  # a read after a write sees it


# -- query plans: the statements the store really runs, explained --------------------


async def _statements(store: SQLiteStore, action) -> list[str]:
    """The SQL ``action`` made the store run, with bound values expanded."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    await store._call(lambda: store._conn.set_trace_callback(seen.append))
    await loop.run_in_executor(store._reader, lambda: store._read_conn.set_trace_callback(seen.append))  # reads
    try:
        await action()
    finally:
        await store._call(lambda: store._conn.set_trace_callback(None))
        await loop.run_in_executor(store._reader, lambda: store._read_conn.set_trace_callback(None))
    return [sql for sql in seen if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))]


def _plan(path, sql: str) -> str:
    with sqlite3.connect(path) as conn:
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    conn.close()
    return plan


@pytest.fixture
async def busy_store(tmp_path):
    """A file store with a hundred-odd tasks in assorted states."""
    clock = ManualClock()
    store = SQLiteStore(tmp_path / "plans.db", clock)
    await store.start()
    for index in range(120):
        await add_task(store, clock() + timedelta(seconds=index % 7 - 3), f"t{index:03d}", type=f"type{index % 5}")
    for claim in await store.claim_due("a", 40, LEASE):
        if claim.fence % 2:
            await store.finish_run(claim, *failure(claim, clock()))
    await store._call(lambda: store._conn.execute("ANALYZE"))
    yield store
    await store.close()


@pytest.mark.parametrize(
    ("name", "action", "index"),
    [
        ("claim", lambda store: store.claim_due("b", 16, LEASE, task_types={"type1", "type3"}), "tasks_claim"),
        ("claim, run: sections only", lambda store: store.claim_due("b", 16, LEASE, task_types=()), "tasks_claim"),
        ("next due", lambda store: store.next_due_time("b", task_types={"type1", "type3"}), "tasks_claim"),
        ("next due, run: sections only", lambda store: store.next_due_time("b", task_types=()), "tasks_claim"),
        ("recover", lambda store: store.recover_expired("b"), "tasks_leases"),
        ("lease expiries", lambda store: store.lease_expiries(), "tasks_leases"),
        ("status page", lambda store: store.query_tasks(TaskQuery(status=Status.SCHEDULED, limit=50)), "tasks_status"),
        ("type page", lambda store: store.query_tasks(TaskQuery(task_type="type3", limit=50)), "tasks_type"),
        ("by next run", lambda store: store.query_tasks(TaskQuery(sort_by="nextScheduledExecution", descending=True)),
         "tasks_next"),
        ("by failures", lambda store: store.query_tasks(TaskQuery(sort_by="failureCount")), "tasks_failures"),
        ("runs", lambda store: store.list_runs("t001"), "runs_by_task"),
        ("disabled count", lambda store: store.query_tasks(TaskQuery(enabled=False, limit=0)), "tasks_disabled"),
        ("suspended count", lambda store: store.query_tasks(TaskQuery(suspended=True, limit=0)), "tasks_suspended"),
    ],
)
async def test_queries_are_served_by_an_index(busy_store, name, action, index):
    statements = await _statements(busy_store, lambda: action(busy_store))
    plans = [_plan(busy_store.path, sql) for sql in statements if not sql.startswith("UPDATE")]
    assert any(index in plan for plan in plans), f"{name} does not use {index}: {plans}"
    assert not any("TEMP B-TREE" in plan for plan in plans), f"{name} sorts in a temporary b-tree: {plans}"
    assert not any(plan.startswith("SCAN tasks") and "INDEX" not in plan for plan in plans), plans


async def test_a_claim_and_a_finish_write_each_task_through_its_key(busy_store):
    """A claim writes its tasks in one statement and a finish its task in one: by item_id, never a scan."""
    claims: list = []

    async def claim_and_finish() -> None:
        claims.extend(await busy_store.claim_due("b", 16, LEASE))
        await busy_store.finish_run(claims[0], *failure(claims[0], busy_store.now()))

    statements = await _statements(busy_store, claim_and_finish)
    writes = [sql for sql in statements if sql.startswith("UPDATE tasks")]
    assert len(claims) > 1 and len(writes) == 2, writes
    for sql in writes:
        plan = _plan(busy_store.path, sql)
        assert plan.startswith("SEARCH tasks USING INDEX sqlite_autoindex_tasks_1 (item_id=?)"), (sql, plan)


async def test_the_keep_runs_purge_reads_only_the_tasks_with_limits_and_their_runs(busy_store):
    statements = await _statements(busy_store, busy_store.purge)
    plans = [_plan(busy_store.path, sql) for sql in statements if "tasks_keep_runs" in sql]
    assert len(plans) == 2, statements  # one per kind of outcome
    for plan in plans:
        assert "SCAN tasks USING INDEX tasks_keep_runs" in plan and "SEARCH runs USING INDEX runs_by_task" in plan
        assert "SCAN runs" not in plan, plan  # the runs of tasks without limits are never read
        # At most the runs of one task are put in order (they come by task from the index).
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan
