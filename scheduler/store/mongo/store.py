"""``MongoStore``: the Store contract on MongoDB through pymongo.

pymongo is synchronous. Every store verb runs as one job on a small thread pool
owned by the store (created in ``start()``) and is awaited with
``run_in_executor``, so the event loop never blocks on the network. The blocking
work lives in ``protocol`` (the claim protocol) and ``tasks`` (everything else);
this module holds the lifecycle, the clock and the error boundary: any
``PyMongoError`` leaves the store as a ``StoreError`` naming the operation and
the servers (never the credentials), and a value BSON cannot encode as a
``ValueError``.

Time is the server's (see ``clock``) when the store reads the system clock; an
injected clock (a test's manual clock) is used as it is unless
``server_clock=True`` asks for the server's offset on top of it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar
from urllib.parse import unquote, urlsplit

import pymongo
from pymongo.database import Database
from bson.errors import InvalidDocument
from pymongo.errors import ConnectionFailure, PyMongoError

from ...errors import ConfigError, StoreError
from ...redact import redact_url
from ...model import (
    Claim, Clock, Declaration, ExpiredLease, LeaseExpiries, NodeInfo, Page, PurgeCounts, Requirement, Retention,
    RunRecord, RunResult, Settled, Task, TaskQuery, Transition, UpsertResult, system_clock, truncate_ms,
)
from ...spec import TaskSpec
from ..base import Store
from . import declarations, protocol, tasks
from .clock import ServerClock
from .documents import SCHEMA_VERSION
from .indexes import create_indexes
from .migrations import fill_missing_fields

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "scheduler"
_SCHEMES = ("mongodb://", "mongodb+srv://")

T = TypeVar("T")


def database_from_url(url: str) -> str:
    """The database named in the URL path, or ``scheduler``."""
    return unquote(urlsplit(url).path.lstrip("/")) or DEFAULT_DATABASE


def hosts_of(url: str) -> str:
    """The host list of a MongoDB URL, without the credentials that may precede it."""
    return urlsplit(url).netloc.rpartition("@")[2]


class MongoStore(Store):
    """The cluster store: every node points at the same MongoDB replica set.

    ``client_factory(url, **options)`` builds the client in ``start()``
    (default ``pymongo.MongoClient``, looked up then so that ``mongomock.patch``
    applies; tests may pass ``mongomock.MongoClient``). ``server_clock``: follow
    the server's clock (default: only when ``clock`` is the system clock).
    ``threads`` bounds the driver calls in flight at once; mongomock is not
    thread-safe, so concurrent use of one mongomock-backed store is unsupported.
    """

    def __init__(
        self,
        url: str,
        clock: Clock = system_clock,
        *,
        database: str | None = None,
        client_factory: Callable[..., Any] | None = None,
        server_clock: bool | None = None,
        threads: int = 4,
    ) -> None:
        super().__init__(clock)
        if not isinstance(url, str) or not url.startswith(_SCHEMES):
            raise ConfigError(f"a MongoDB URL starts with mongodb:// or mongodb+srv://, got {redact_url(str(url))!r}")
        if threads < 1:
            raise ConfigError(f"threads must be at least 1, got {threads}")
        self._url = url
        self._hosts = hosts_of(url)
        self._database_name = database or database_from_url(url)
        self._client_factory = client_factory
        if server_clock is None:
            server_clock = clock is system_clock
        self._server_clock = ServerClock(clock) if server_clock else None
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._client: Any = None
        self._db: Database | None = None

    def __repr__(self) -> str:
        return f"MongoStore(hosts={self._hosts!r}, database={self._database_name!r})"

    def now(self) -> datetime:
        """The server's time when ``server_clock`` is on (see ``clock``), else the injected clock's."""
        if self._server_clock is None:
            return super().now()
        return truncate_ms(self._server_clock.now())

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self._executor is not None:
            raise StoreError(f"{self!r} is already started")
        self._executor = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="mongo-store")
        try:
            await self._call("connect and create indexes", self._open)
        except BaseException:
            await self.close()
            raise
        log.info("MongoDB store ready: %s, database %s", self._hosts, self._database_name)

    def _open(self) -> None:
        factory = self._client_factory or pymongo.MongoClient
        self._client = factory(self._url, tz_aware=True, appname="scheduler")
        self._db = self._client[self._database_name]
        if self._server_clock is not None:
            self._server_clock.sync(self._client.admin.command)  # also the first round trip
        meta = self._db["meta"]
        meta.update_one({"_id": "schema"}, {"$setOnInsert": {"version": SCHEMA_VERSION}}, upsert=True)
        version = meta.find_one({"_id": "schema"})["version"]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self._database_name} has schema version {version}, newer than this node's "
                f"{SCHEMA_VERSION}: upgrade the scheduler on this node"
            )
        create_indexes(self._db)
        fill_missing_fields(self._db)
        if version < SCHEMA_VERSION:
            meta.update_one(
                {"_id": "schema", "version": {"$lt": SCHEMA_VERSION}}, {"$set": {"version": SCHEMA_VERSION}}
            )
            log.info("database %s: schema version %s -> %s", self._database_name, version, SCHEMA_VERSION)

    async def close(self) -> None:
        executor, client = self._executor, self._client
        self._executor = self._client = self._db = None
        if executor is None:
            return
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(executor, client.close)
        executor.shutdown(wait=True)

    async def check(self) -> None:
        await self._with_db("check the connection", _ping)

    def _database(self) -> Database:
        """The database, after refreshing the clock offset when it is due (driver thread)."""
        if self._db is None:
            raise StoreError(f"{self!r} is not started")
        if self._server_clock is not None and self._server_clock.stale():
            self._server_clock.sync(self._client.admin.command)
        return self._db

    async def _call(self, operation: str, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError(f"{self!r} is not started: cannot {operation}")
        job = functools.partial(function, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        except ConnectionFailure as exc:
            raise StoreError(
                f"cannot {operation}: MongoDB unreachable at {self._hosts} (database {self._database_name}): {exc}"
            ) from exc
        except PyMongoError as exc:
            raise StoreError(
                f"cannot {operation}: MongoDB at {self._hosts} (database {self._database_name}) failed: {exc}"
            ) from exc
        except (InvalidDocument, OverflowError) as exc:
            # A caller's value BSON cannot hold: a non-string key, an int beyond 64 bits, an object.
            raise ValueError(f"cannot {operation}: a value cannot be stored in MongoDB: {exc}") from exc

    async def _with_db(self, operation: str, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(db, *args)`` on the driver thread."""
        return await self._call(operation, lambda: function(self._database(), *args))

    async def _with_db_now(self, operation: str, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(db, *args, now)``, reading ``now`` after any clock refresh."""
        return await self._call(operation, lambda: function(self._database(), *args, self.now()))

    # -- specs ---------------------------------------------------------------

    async def upsert_spec(
        self,
        spec: TaskSpec,
        *,
        item_id: str | None = None,
        node: str | None = None,
        first_due: datetime | None,
        spec_version: float = 0.0,
    ) -> UpsertResult:
        item_id = spec.name if item_id is None else item_id
        return await self._with_db_now(
            f"store task {item_id}", tasks.upsert_spec, spec, item_id, node, first_due, spec_version
        )

    async def remove_spec(self, item_id: str) -> bool:
        return await self._with_db_now(f"remove task {item_id}", tasks.remove_spec, item_id)

    # -- declarations --------------------------------------------------------

    async def declare_spec(
        self, node_id: str, spec: TaskSpec, *, item_id: str | None = None, node: str | None = None
    ) -> UpsertResult:
        item_id = spec.name if item_id is None else item_id
        return await self._with_db_now(
            f"record node {node_id}'s declaration of task {item_id}", declarations.declare, node_id, spec, item_id, node
        )

    async def withdraw_specs(self, node_id: str, item_ids: Sequence[str], *, live_after: datetime) -> list[str]:
        if not item_ids:
            return []
        return await self._with_db_now(
            f"withdraw node {node_id}'s declarations", declarations.withdraw, node_id, list(item_ids), live_after
        )

    async def drop_stale_declarations(self, node_id: str, *, live_after: datetime) -> list[str]:
        return await self._with_db_now("drop stale declarations", declarations.drop_stale, node_id, live_after)

    async def list_declarations(
        self,
        *,
        node_id: str | None = None,
        item_ids: Sequence[str] | None = None,
        diverged: bool = False,
        live_after: datetime | None = None,
        with_documents: bool = False,
    ) -> list[Declaration]:
        return await self._with_db(
            "list declarations", declarations.list_declarations, node_id, item_ids, diverged, live_after,
            with_documents,
        )

    # -- reads ---------------------------------------------------------------

    async def get_task(self, item_id: str) -> Task:
        return await self._with_db(f"read task {item_id}", tasks.get_task, item_id)

    async def known_ids(self, item_ids: Collection[str]) -> set[str]:
        return await self._with_db("look up task ids", tasks.known_ids, list(item_ids))

    async def _query_tasks(self, query: TaskQuery) -> Page:
        return await self._with_db("query tasks", tasks.query_tasks, query)

    async def _list_runs(self, item_id: str, offset: int, limit: int) -> Page:
        return await self._with_db(f"list runs of task {item_id}", tasks.list_runs, item_id, offset, limit)

    async def _runs_in_window(
        self, item_ids: list[str], start: datetime, end: datetime, limit: int
    ) -> dict[str, list[RunRecord]]:
        return await self._with_db("read runs in a time window", tasks.runs_in_window, item_ids, start, end, limit)

    async def get_run(self, item_id: str, run_id: str) -> RunRecord | None:
        return await self._with_db(f"read run {run_id}", tasks.get_run, item_id, run_id)

    async def _next_due_time(self, node_id: str, task_types: frozenset[str] | None) -> datetime | None:
        return await self._with_db("find the next due time", tasks.next_due_time, node_id, task_types)

    async def count_waiting(self) -> dict[Requirement, int]:
        return await self._with_db("count waiting tasks", tasks.count_waiting)

    # -- the claim protocol --------------------------------------------------

    async def _claim_due(
        self, node_id: str, limit: int, lease_duration: timedelta, horizon: timedelta,
        task_types: frozenset[str] | None,
    ) -> list[Claim]:
        return await self._with_db_now(
            "claim due tasks", protocol.claim_due, node_id, limit, lease_duration, horizon, task_types
        )

    async def _renew_leases(self, node_id: str, claims: list[Claim], lease_duration: timedelta) -> set[str]:
        return await self._with_db_now("renew leases", protocol.renew_leases, node_id, claims, lease_duration)

    async def release_lease(self, claim: Claim) -> bool:
        return await self._with_db_now(f"release the lease of run {claim.run_id}", protocol.release_lease, claim)

    async def save_progress(
        self,
        claim: Claim,
        *,
        checkpoint: Mapping[str, Any] | None = None,
        step: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> bool:
        return await self._with_db_now(
            f"save progress of run {claim.run_id}", protocol.save_progress, claim, checkpoint, step, details
        )

    async def _finish_run(self, claim: Claim, result: RunResult, transition: Transition) -> bool:
        return await self._with_db_now(f"finish run {claim.run_id}", protocol.finish_run, claim, result, transition)

    async def lease_expiries(self) -> LeaseExpiries:
        return await self._with_db_now("look for expired leases", tasks.lease_expiries)

    async def _recover_expired(
        self, node_id: str, retention: Retention, only: frozenset[ExpiredLease] | None
    ) -> list[Task]:
        return await self._with_db_now("recover expired leases", protocol.recover_expired, node_id, retention, only)

    async def settle_dependencies(self) -> Settled:
        return await self._with_db_now("check dependencies", protocol.settle_dependencies)

    async def _abandon_runs(self, claims: list[Claim], reason: str, retention: Retention) -> list[str]:
        return await self._with_db_now("abandon runs", protocol.abandon_runs, claims, reason, retention)

    async def _release_claims(self, claims: list[Claim]) -> list[str]:
        return await self._with_db_now("release claims", protocol.release_claims, claims)

    # -- operator actions ----------------------------------------------------

    async def cancel(self, item_id: str) -> Task:
        return await self._with_db_now(f"cancel task {item_id}", tasks.cancel, item_id)

    async def retry(self, item_id: str, reset_failure_count: bool = False) -> Task:
        return await self._with_db_now(f"retry task {item_id}", tasks.retry, item_id, reset_failure_count)

    async def resume(self, item_id: str) -> Task:
        return await self._with_db_now(f"resume task {item_id}", tasks.resume, item_id)

    async def run_now(self, item_id: str) -> Task:
        return await self._with_db_now(f"run task {item_id} now", tasks.run_now, item_id)

    async def suspend(self, item_id: str) -> Task:
        return await self._with_db_now(f"suspend task {item_id}", tasks.suspend, item_id)

    async def unsuspend(self, item_id: str) -> Task:
        return await self._with_db_now(f"unsuspend task {item_id}", tasks.unsuspend, item_id)

    async def _update_config(
        self, item_id: str, max_retries: int | None, retry_delay: timedelta | None, clear: bool
    ) -> Task:
        return await self._with_db_now(
            f"configure task {item_id}", tasks.update_config, item_id, max_retries, retry_delay, clear
        )

    # -- nodes ---------------------------------------------------------------

    async def heartbeat(self, node: NodeInfo) -> None:
        await self._with_db(f"record the heartbeat of node {node.node_id}", tasks.heartbeat, node)

    async def list_nodes(self) -> list[NodeInfo]:
        return await self._with_db("list nodes", tasks.list_nodes)

    # -- retention -----------------------------------------------------------

    async def _purge(
        self, finished_before: datetime | None, keep_history: int | None, retention: Retention | None
    ) -> PurgeCounts:
        return await self._with_db_now("purge", tasks.purge, finished_before, keep_history, retention)


def _ping(db: Database) -> None:
    """A round trip to the primary, which every write needs."""
    db.command("ping")
