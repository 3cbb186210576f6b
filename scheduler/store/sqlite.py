"""The SQLite store: the embedded default backend, safe for several processes on one host.

Every blocking ``sqlite3`` call runs on one worker thread per store, which owns
the store's only connection; the async verbs await it through
``loop.run_in_executor``. Each write is one ``BEGIN IMMEDIATE`` transaction: it
takes the database's write lock before reading, so the read-then-write steps
inside (a claim selecting due tasks, then updating them) are atomic across
threads and processes. WAL lets readers proceed beside the writer. The
statements themselves live in ``sqlite_claims`` and ``sqlite_tasks``.

Group commit: writes that queue up while the worker is busy (runs finishing
together, a claim beside them) share one transaction; the caller hears back
only after the commit. One commit then writes each touched page once instead
of once per verb. Each verb stays atomic on its own, and one verb's error
undoes only that verb: the batch is applied first without savepoints (two
statements per verb fewer, a tenth of the writer's time), and should a verb
fail, the transaction is rolled back and the batch applied again with each
verb inside its own SAVEPOINT. A verb may so run twice; verbs only write to
the database (and log), so that is harmless.

Runs ending one after another (slots spread over each second) would each pay a
transaction of their own: a commit of run ends only waits, when the commit before it
was of run ends too and moments ago, for the rest of ``FINISH_LINGER`` after it, so
that they share one. Any other write (a claim, an operator's action) cuts the wait short.

Reads have a thread and a connection of their own: WAL lets them go on beside
the writer, so an API request or the console's polling never waits behind a
busy node's group commits, nor do they delay them. A read issued after a write
returned sees it (each read is a transaction begun after the write committed).

``SQLiteStore(":memory:")`` runs the very same code on a private in-memory
database, which a second connection cannot open: there, reads share the
writer's thread and connection. It is the store of a node's non-persistent tasks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

from .. import loopcalls
from ..errors import StoreError
from ..spec import TaskSpec
from ..model import (
    Claim, Clock, Declaration, ExpiredLease, LeaseExpiries, NodeInfo, Page, PurgeCounts, Requirement, Retention,
    RunRecord, RunResult, Settled, Task, TaskQuery, Transition, UpsertResult, system_clock,
)
from . import sqlite_claims as claims_sql
from . import sqlite_declarations as declarations_sql
from . import sqlite_tasks as tasks_sql
from .base import Store
from .sqlite_schema import connect, to_json

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long after a commit of run ends the next one waits, when it has only run ends to write. In process
# (bench/engine.py), 1,000 tasks a second spread over it: 0.61 -> 0.42 ms of CPU per run; 10,000
# one-shots: the writer 154-171 -> 132-145 us per run, as a batch's runs end over a few milliseconds.
FINISH_LINGER = 0.003


class _VerbFailed(Exception):
    """A verb of a batch applied without savepoints failed with ``error``: the batch must be rolled back."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


@dataclass(frozen=True)
class _PendingWrite:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    linger: bool  # a run's end: may wait for others to share its commit (FINISH_LINGER)


class SQLiteStore(Store):
    """The Store contract on one SQLite file, or on a private in-memory database."""

    def __init__(self, path: str | os.PathLike[str], clock: Clock = system_clock) -> None:
        super().__init__(clock)
        self._path = os.fspath(path)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched on the worker thread only
        self._reader: ThreadPoolExecutor | None = None  # file stores: the reads' own thread
        self._read_conn: sqlite3.Connection | None = None  # touched on the reader thread only
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened; None in memory
        self._pending: list[_PendingWrite] = []  # writes waiting for the next group commit
        self._pending_lock = threading.Lock()
        self._hurry = threading.Event()  # set by a write that must not wait for FINISH_LINGER
        self._last_finishes = 0.0  # time.monotonic() at the end of the last commit of run ends only

    @property
    def path(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    # -- lifecycle and the worker thread -----------------------------------------------

    async def start(self) -> None:
        if self._executor is not None:
            raise StoreError(f"{self!r} is already started")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        try:
            await self._call(self._open)
            if self._path != ":memory:":
                self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reads")
                await self._call_reader(self._open_reader)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            try:
                await asyncio.get_running_loop().run_in_executor(reader, self._close_reader)
            finally:
                reader.shutdown(wait=True)
        if self._executor is None:
            return
        try:
            await self._call(self._close_connection)
        finally:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=True)

    def _open_reader(self) -> None:
        self._read_conn = connect(self._path)  # the schema is in place: the writer's connection made it

    def _close_reader(self) -> None:
        if self._read_conn is not None:
            self._read_conn.close()
            self._read_conn = None

    def _open(self) -> None:
        self._conn = connect(self._path)
        if self._path != ":memory:":
            # What check() compares the path with: an open connection keeps using a
            # file deleted or replaced under it, unseen by every process opening the path.
            self._file = _identity(os.stat(self._path))
        logger.debug("opened SQLite store %s", self._path)

    def _close_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def check(self) -> None:
        await self._call(self._check)

    def _check(self) -> None:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self!r} is closed")
        if self._file is not None:
            self._check_file(self._file)
        conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()

    def _check_file(self, opened: tuple[int, int]) -> None:
        try:
            found = _identity(os.stat(self._path))
        except FileNotFoundError:
            raise StoreError(
                f"SQLite store file {self._path} was deleted: this node still uses the deleted file, "
                "which no other process can open; restart the node"
            ) from None
        except OSError as exc:
            raise StoreError(f"SQLite store file {self._path} cannot be checked: {exc.strerror or exc}") from exc
        if found != opened:
            raise StoreError(
                f"SQLite store file {self._path} was replaced by another file: this node still uses the "
                "file it opened, not the one other processes open now; restart the node"
            )

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError(f"{self!r} is not started: call start() first")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._guarded, fn, args)

    def _guarded(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc

    def _store_error(self, exc: sqlite3.Error) -> StoreError:
        error = StoreError(f"SQLite store {self._path}: {exc}")
        error.__cause__ = exc
        return error

    async def _write(self, fn: Callable[..., T], *args: Any, linger: bool = False) -> T:
        """``fn(conn, now, *args)`` atomically, in the next ``BEGIN IMMEDIATE`` group commit;
        with ``linger``, a run's end, that commit may wait for other run ends (``FINISH_LINGER``)."""
        if self._executor is None:
            raise StoreError(f"{self!r} is not started: call start() first")
        loop = asyncio.get_running_loop()
        write = _PendingWrite(fn, args, loop.create_future(), loop, linger)
        with self._pending_lock:
            self._pending.append(write)
            first = len(self._pending) == 1
        if not linger:
            self._hurry.set()
        if first:  # later writes join the commit this one schedules
            self._executor.submit(self._commit_pending)
        return await write.future

    def _commit_pending(self) -> None:
        self._hurry.clear()  # before looking: a write added after the look sets it again
        with self._pending_lock:
            run_ends_only = all(write.linger for write in self._pending)
        if run_ends_only:
            wait = self._last_finishes + FINISH_LINGER - time.monotonic()
            if wait > 0:
                self._hurry.wait(wait)
        with self._pending_lock:
            batch, self._pending = self._pending, []
        try:
            if self._file is not None:
                # A file deleted or replaced under the store (a backup restored over it) is one
                # no other process sees: a claim or a result written there would run a task
                # twice or lose it. Refuse every write; readiness says why.
                self._check_file(self._file)
            try:
                outcomes = self._transaction("BEGIN IMMEDIATE", self._apply, (batch, False))
            except _VerbFailed as failed:  # rolled back whole
                if len(batch) == 1:  # the same as its own savepoint rolled back
                    outcomes = [(batch[0], None, failed.error)]
                else:  # again, each verb in its savepoint, so that the others still commit
                    outcomes = self._transaction("BEGIN IMMEDIATE", self._apply, (batch, True))
        except sqlite3.Error as exc:
            outcomes = [(write, None, self._store_error(exc)) for write in batch]
        except BaseException as exc:  # delivered to every waiting caller, not lost in the executor
            outcomes = [(write, None, exc) for write in batch]
        if run_ends_only:
            self._last_finishes = time.monotonic()
        # One call per loop for the whole batch: each call may wake its loop, which then takes the GIL
        # from this thread (``loopcalls``: none when a wake-up is on its way already).
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
        for write, result, error in outcomes:
            by_loop.setdefault(write.loop, []).append((write.future, result, error))
        for loop, settled in by_loop.items():
            try:
                loopcalls.call_soon(loop, _settle_all, settled)
            except RuntimeError:  # that loop is closed: nobody waits for these writes any more
                pass

    def _apply(self, conn: sqlite3.Connection, _now: datetime, batch: list[_PendingWrite],
               savepoints: bool) -> list[tuple[_PendingWrite, Any, BaseException | None]]:
        """Every verb of ``batch`` in turn. Without ``savepoints`` the first that fails raises
        ``_VerbFailed``; with them, a failed verb is undone alone and the others go on."""
        outcomes: list[tuple[_PendingWrite, Any, BaseException | None]] = []
        for write in batch:  # each verb reads the clock itself, as if it ran alone
            if savepoints:
                conn.execute("SAVEPOINT verb")
            try:
                result = write.fn(conn, self.now(), *write.args)
            except Exception as exc:
                error = self._store_error(exc) if isinstance(exc, sqlite3.Error) else exc
                if not savepoints:
                    raise _VerbFailed(error) from exc
                conn.execute("ROLLBACK TO verb")
                conn.execute("RELEASE verb")
                outcomes.append((write, None, error))
                continue
            if savepoints:
                conn.execute("RELEASE verb")
            outcomes.append((write, result, None))
        return outcomes

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, now, *args)`` on one consistent snapshot."""
        if self._reader is None:  # in memory (or closed: _call says so)
            return await self._call(self._transaction, "BEGIN", fn, args)
        return await self._call_reader(self._transaction, "BEGIN", fn, args, True)

    async def _call_reader(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the reads' thread, as ``_call`` on the writer's."""
        assert self._reader is not None
        return await asyncio.get_running_loop().run_in_executor(self._reader, self._guarded, fn, args)

    def _transaction(self, begin: str, fn: Callable[..., T], args: tuple[Any, ...], reads: bool = False) -> T:
        """``fn(conn, now, *args)`` in one transaction on the writer's connection, or with ``reads``
        the reads' (each is only ever touched on its own thread)."""
        conn = self._read_conn if reads else self._conn
        if conn is None:  # a call that raced close()
            raise StoreError(f"{self!r} is closed")
        conn.execute(begin)
        try:
            # Read the clock once the lock is held: a wait for the lock never ages ``now``.
            result = fn(conn, self.now(), *args)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    # -- specs and reads ---------------------------------------------------------------------

    async def upsert_spec(
        self,
        spec: TaskSpec,
        *,
        item_id: str | None = None,
        node: str | None = None,
        first_due: datetime | None,
        spec_version: float = 0.0,
    ) -> UpsertResult:
        return await self._write(tasks_sql.upsert, spec, item_id or spec.name, node, first_due, spec_version)

    async def remove_spec(self, item_id: str) -> bool:
        return await self._write(tasks_sql.remove, item_id)

    async def declare_spec(
        self, node_id: str, spec: TaskSpec, *, item_id: str | None = None, node: str | None = None
    ) -> UpsertResult:
        return await self._write(declarations_sql.declare, node_id, spec, item_id or spec.name, node)

    async def withdraw_specs(self, node_id: str, item_ids: Sequence[str], *, live_after: datetime) -> list[str]:
        if not item_ids:
            return []
        return await self._write(declarations_sql.withdraw, node_id, list(item_ids), live_after)

    async def drop_stale_declarations(self, node_id: str, *, live_after: datetime) -> list[str]:
        return await self._write(declarations_sql.drop_stale, node_id, live_after)

    async def list_declarations(
        self,
        *,
        node_id: str | None = None,
        item_ids: Sequence[str] | None = None,
        diverged: bool = False,
        live_after: datetime | None = None,
        with_documents: bool = False,
    ) -> list[Declaration]:
        return await self._read(
            declarations_sql.list_declarations, node_id, item_ids, diverged, live_after, with_documents
        )

    async def get_task(self, item_id: str) -> Task:
        return await self._read(tasks_sql.get, item_id)

    async def known_ids(self, item_ids: Collection[str]) -> set[str]:
        return await self._read(tasks_sql.known_ids, list(item_ids))

    async def _query_tasks(self, query: TaskQuery) -> Page:
        return await self._read(tasks_sql.query, query)

    async def _list_runs(self, item_id: str, offset: int, limit: int) -> Page:
        return await self._read(tasks_sql.list_runs, item_id, offset, limit)

    async def _runs_in_window(
        self, item_ids: list[str], start: datetime, end: datetime, limit: int
    ) -> dict[str, list[RunRecord]]:
        return await self._read(tasks_sql.runs_in_window, item_ids, start, end, limit)

    async def get_run(self, item_id: str, run_id: str) -> RunRecord | None:
        return await self._read(tasks_sql.get_run, item_id, run_id)

    async def _next_due_time(self, node_id: str, task_types: frozenset[str] | None) -> datetime | None:
        return await self._read(tasks_sql.next_due, node_id, task_types)

    async def count_waiting(self) -> dict[Requirement, int]:
        return await self._read(tasks_sql.count_waiting)

    # -- the claim protocol --------------------------------------------------------------------

    async def _claim_due(
        self, node_id: str, limit: int, lease_duration: timedelta, horizon: timedelta,
        task_types: frozenset[str] | None,
    ) -> list[Claim]:
        return await self._write(claims_sql.claim, node_id, limit, lease_duration, horizon, task_types)

    async def _renew_leases(self, node_id: str, claims: list[Claim], lease_duration: timedelta) -> set[str]:
        return await self._write(claims_sql.renew, node_id, claims, lease_duration)

    async def save_progress(
        self,
        claim: Claim,
        *,
        checkpoint: Mapping[str, Any] | None = None,
        step: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        updates: dict[str, Any] = {}
        if checkpoint is not None:
            updates["checkpoint_data"] = to_json(dict(checkpoint))
        if step is not None:
            updates["current_step"] = step
        if details is not None:
            updates["status_details"] = to_json(dict(details))
        return await self._write(claims_sql.save_progress, claim, updates)

    async def _finish_run(self, claim: Claim, result: RunResult, transition: Transition) -> bool:
        return await self._write(claims_sql.finish, claim, result, transition, linger=True)

    async def release_lease(self, claim: Claim) -> bool:
        return await self._write(claims_sql.release_lease, claim)

    async def lease_expiries(self) -> LeaseExpiries:
        return await self._read(tasks_sql.lease_expiries)

    async def _recover_expired(
        self, node_id: str, retention: Retention, only: frozenset[ExpiredLease] | None
    ) -> list[Task]:
        return await self._write(claims_sql.recover, node_id, retention, only)

    async def settle_dependencies(self) -> Settled:
        return await self._write(claims_sql.settle_dependencies)

    async def _abandon_runs(self, claims: list[Claim], reason: str, retention: Retention) -> list[str]:
        return await self._write(claims_sql.abandon, claims, reason, retention)

    async def _release_claims(self, claims: list[Claim]) -> list[str]:
        return await self._write(claims_sql.release, claims)

    # -- operator actions, nodes, retention -------------------------------------------------------

    async def cancel(self, item_id: str) -> Task:
        return await self._write(tasks_sql.cancel, item_id)

    async def retry(self, item_id: str, reset_failure_count: bool = False) -> Task:
        return await self._write(tasks_sql.retry, item_id, reset_failure_count)

    async def resume(self, item_id: str) -> Task:
        return await self._write(tasks_sql.resume, item_id)

    async def run_now(self, item_id: str) -> Task:
        return await self._write(tasks_sql.run_now, item_id)

    async def suspend(self, item_id: str) -> Task:
        return await self._write(tasks_sql.suspend, item_id)

    async def unsuspend(self, item_id: str) -> Task:
        return await self._write(tasks_sql.unsuspend, item_id)

    async def _update_config(
        self, item_id: str, max_retries: int | None, retry_delay: timedelta | None, clear: bool
    ) -> Task:
        return await self._write(tasks_sql.update_config, item_id, max_retries, retry_delay, clear)

    async def heartbeat(self, node: NodeInfo) -> None:
        await self._write(tasks_sql.heartbeat, node)

    async def list_nodes(self) -> list[NodeInfo]:
        return await self._read(tasks_sql.list_nodes)

    async def _purge(
        self, finished_before: datetime | None, keep_history: int | None, retention: Retention | None
    ) -> PurgeCounts:
        return await self._write(tasks_sql.purge, finished_before, keep_history, retention)


def _settle_all(settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        if future.cancelled():  # the caller went away; the write itself is committed (or not) all the same
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _identity(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino
