"""The reconciler: make the stores hold what ``tasks.d`` declares, file by file.

Rules (DESIGN.md "Reload rules"):

- Each file is validated on its own. A file that turns bad is *rejected* and the
  last good version of its tasks stays in force; its errors are reported.
- A task whose file disappears is removed (a run in progress is stopped at its
  next lease renewal).
- A spec change keeps runtime state; the next run is recomputed only when the
  schedule changed (the store's ``upsert_spec`` rule).
- Writes are idempotent: an unchanged spec writes nothing, so every node of a
  cluster can reconcile the same files.
- Rollouts converge: each spec is written with its file's modification time as
  ``spec_version`` and the store never replaces a newer version with an older
  one, so nodes holding different versions of a file during a rollout end up on
  the newest one instead of flip-flopping. A node only writes the files whose
  content changed since it last looked (everything on its first reconcile), so
  an unchanged old file on a lagging node does not fight the new version.

Where a task goes: ``persistent: false`` tasks live in the node's in-memory store,
pinned to the node; ``runOn: all`` tasks get one copy per executor node, named
``<name>@<nodeId>`` and pinned to it; every other task is one shared document.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

from .dirwatch import DirectoryWatch
from .errors import TaskNotFound
from .loader import DirectoryResult, FileResult, Problem, check_names, is_task_file, load_directory
from .model import Task, TaskQuery, UpsertResult
from .schedule import first_slot
from .spec import Source, TaskSpec, utc_iso
from .store.base import Store

log = logging.getLogger(__name__)

UPSERT_CHUNK = 256  # spec writes in flight at once during a reload (see _upsert_all)


@dataclass(frozen=True)
class InForce:
    """The version of a task the store holds when it is not this node's: which spec, from where, how new."""

    item_id: str
    spec_hash: str
    source: str  # path:line of the declaration it came from (a path on the node that wrote it)
    version: float  # its spec version (see upsert_spec)

    def to_dict(self) -> dict:
        return {"task": self.item_id, "specHash": self.spec_hash, "source": self.source, "version": self.version}


@dataclass(frozen=True)
class FileState:
    """What the node made of one file at its last reload.

    ``applied``: valid, and each of its tasks is in force as this file declares it.
    ``rejected``: it has problems; its last good version (``tasks``) stays in force.
    ``superseded``: valid, but the store holds another version of some of its tasks
    (``superseded`` says which), so this file is not what runs.
    """

    path: str
    status: str  # "applied", "rejected" or "superseded"
    sha256: str
    checked_at: datetime
    tasks: tuple[str, ...]  # names in force from this file (the last good version when rejected)
    problems: tuple[Problem, ...] = ()
    applied_sha256: str | None = None  # the version in force, when rejected but a good one exists
    superseded: tuple[InForce, ...] = ()  # the other versions in force instead of this file's

    def to_dict(self) -> dict:
        applied = {"applied": self.sha256, "rejected": self.applied_sha256}.get(self.status)
        return {
            "path": self.path,
            "status": self.status,
            "sha256": self.sha256,
            "appliedSha256": applied,
            "checkedAt": utc_iso(self.checked_at),
            "tasks": list(self.tasks),
            "superseded": [s.to_dict() for s in self.superseded],
            "errors": [
                {
                    "location": f"{p.path}:{p.line}:{p.col}",
                    "line": p.line,
                    "col": p.col,
                    "pointer": p.pointer,
                    "message": p.message,
                }
                for p in self.problems
            ],
        }


@dataclass(frozen=True)
class ReloadReport:
    ok: bool  # no file rejected
    at: datetime
    files: tuple[FileState, ...]
    created: int = 0
    updated: int = 0
    removed: int = 0
    superseded: int = 0
    problems: tuple[Problem, ...] = ()  # directory-level problems (unreadable directory...)

    @property
    def rejected(self) -> int:
        return sum(1 for f in self.files if f.status == "rejected")

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "at": utc_iso(self.at),
            "created": self.created,
            "updated": self.updated,
            "removed": self.removed,
            "superseded": self.superseded,
            "rejectedFiles": self.rejected,
            "files": [f.to_dict() for f in self.files],
            "errors": [str(p) for p in self.problems],
        }


@dataclass
class _GoodVersion:
    """The last version of a file that validated: what stays in force if it turns bad."""

    sha256: str
    mtime: float
    specs: tuple[TaskSpec, ...]
    written: bool = field(default=False)


class Reconciler:
    """Keeps ``store`` (and ``memory_store`` for non-persistent tasks) in line with ``tasks_dir``."""

    def __init__(
        self,
        tasks_dir: Path,
        store: Store,
        memory_store: Store,
        *,
        node_id: str,
        executor_node: bool = True,
        on_change: Callable[[], None] = lambda: None,
        on_reload: Callable[[ReloadReport], None] = lambda report: None,
    ) -> None:
        self.tasks_dir = tasks_dir
        self.store = store
        self.memory_store = memory_store
        self.node_id = node_id
        self.executor_node = executor_node
        self._on_change = on_change
        self._on_reload = on_reload
        self._good: dict[str, _GoodVersion] = {}
        self._scanned: DirectoryResult | None = None  # the last scan: unchanged files are not parsed again
        self._in_force: dict[str, tuple[Store, str]] = {}  # item id -> where this node put it
        self._superseded: dict[str, InForce] = {}  # item id -> the other version the store holds
        self._lock = asyncio.Lock()
        self._first_done = False
        self.last_report: ReloadReport | None = None

    @property
    def ready(self) -> bool:
        """True once the first reconcile has completed."""
        return self._first_done

    async def reload(self, *, full: bool = False) -> ReloadReport:
        """Rescan the directory and apply what changed. Serialised: one reload at a time.

        ``full`` (an operator's reload: SIGHUP, ``POST /-/reload``) writes every
        task in force, not only those of the files that changed: a task deleted
        from the store by other means comes back.
        """
        async with self._lock:
            report = await self._reload(full)
        self.last_report = report
        self._first_done = True
        self._on_reload(report)
        if report.created or report.updated or report.removed:
            self._on_change()
        return report

    def open_watch(self) -> DirectoryWatch:
        """The watch ``watch()`` consumes, set up now: open it before the first reload to miss nothing.

        The directory is watched, not the files: editors and Ansible replace
        files by renaming a temporary file over them. The configured path is
        followed, not what it led to at start (see ``dirwatch``).
        """
        return DirectoryWatch(self.tasks_dir, is_task_file)

    async def watch(self, watch: DirectoryWatch) -> None:
        """Reload whenever a task file in the directory changes, or the path leads elsewhere (until cancelled)."""
        try:
            async for _ in watch.changes():
                try:
                    await self.reload()
                except Exception:
                    log.exception("reload of %s failed", self.tasks_dir)
        finally:
            watch.close()

    async def _reload(self, full: bool) -> ReloadReport:
        now = self.store.now()
        try:
            # In a thread: parsing thousands of files must not stall the API and the engine.
            directory = await asyncio.to_thread(
                load_directory, self.tasks_dir, previous=self._scanned, holders=self._holders()
            )
        except OSError as exc:
            # Nothing can be known about the files: everything in force stays in force.
            problem = Problem(str(self.tasks_dir), 0, 0, "", f"cannot read the tasks directory: {exc.strerror or exc}")
            log.error("%s", problem)
            return ReloadReport(ok=False, at=now, files=self.last_report.files if self.last_report else (),
                                problems=(problem,))
        if not self._first_done and directory.shadowed:
            directory = check_names(directory, await self._stored_holders(directory))
        self._scanned = directory
        between: dict[str, list[Problem]] = {}
        for problem in directory.problems:
            between.setdefault(problem.path, []).append(problem)
        rejected: dict[str, tuple[Problem, ...]] = {}
        seen_paths = set()
        for result in directory.files:
            seen_paths.add(result.path)
            good = self._good.get(result.path)
            problems = (*result.problems, *between.get(result.path, ()))
            if problems:
                for problem in problems:
                    log.error("rejected %s", problem, extra={"file": result.path})
                rejected[result.path] = tuple(sorted(problems))
            elif good is None or good.sha256 != result.sha256:
                self._good[result.path] = _GoodVersion(result.sha256, _mtime(result.path), tuple(result.specs))
                log.info("applied %s (%d task(s))", result.path, len(result.specs), extra={"file": result.path})
        for path in set(self._good) - seen_paths:
            log.info("file %s removed: its tasks go", path, extra={"file": path})
            del self._good[path]
        if not self._first_done and set(rejected) - set(self._good):
            await self._keep_stored_versions(set(rejected) - set(self._good))

        desired: dict[str, tuple[Store, str]] = {}
        writes: dict[str, _Upsert] = {}  # by item id: the last declaration wins, as in ``desired``
        for good in self._good.values():
            for spec in good.specs:
                for store, item_id, node in self._placements(spec):
                    desired[item_id] = (store, item_id)
                    if full or not (good.written and self._in_force.get(item_id) == (store, item_id)):
                        writes[item_id] = _Upsert(store, spec, item_id, node, good.mtime)
        counts = {result: 0 for result in UpsertResult}
        for write, result in zip(writes.values(), await _upsert_all(list(writes.values()), now)):
            counts[result] += 1
            if result is UpsertResult.SUPERSEDED:
                self._superseded[write.item_id] = await self._describe_in_force(write)
                log.warning("%s: the store holds a newer version (%s); not overwritten",
                            write.item_id, self._superseded[write.item_id].source, extra={"task": write.item_id})
            else:
                self._superseded.pop(write.item_id, None)
        for good in self._good.values():
            good.written = True

        removed = 0
        stale = set(self._in_force) - set(desired)
        if not self._first_done:
            stale |= await self._gone_while_down(desired, counts[UpsertResult.SUPERSEDED])
        for item_id in sorted(stale):
            store = self._in_force.get(item_id, (self.store, item_id))[0]
            self._superseded.pop(item_id, None)
            if await store.remove_spec(item_id):
                removed += 1
                log.info("removed task %s: no longer declared", item_id, extra={"task": item_id})
        self._in_force = desired

        states = [self._file_state(result, rejected.get(result.path, ()), now) for result in directory.files]
        return ReloadReport(
            ok=not rejected,
            at=now,
            files=tuple(sorted(states, key=lambda s: s.path)),
            created=counts[UpsertResult.CREATED],
            updated=counts[UpsertResult.UPDATED],
            removed=removed,
            superseded=counts[UpsertResult.SUPERSEDED],
        )

    def _file_state(self, result: FileResult, problems: tuple[Problem, ...], now: datetime) -> FileState:
        good = self._good.get(result.path)
        names = tuple(s.name for s in good.specs) if good else ()
        if problems:
            return FileState(result.path, "rejected", result.sha256, now, names, problems,
                             applied_sha256=good.sha256 if good else None)
        others = tuple(
            self._superseded[item_id]
            for spec in result.specs
            for _, item_id, _ in self._placements(spec)
            if item_id in self._superseded
        )
        return FileState(result.path, "superseded" if others else "applied", result.sha256, now, names,
                         superseded=others)

    def _holders(self) -> dict[str, Source]:
        """Each task name in force, and the declaration (file and line) that holds it."""
        return {
            spec.name: spec.source or Source(path, 0)
            for path, good in self._good.items()
            for spec in good.specs
        }

    async def _stored_holders(self, directory: DirectoryResult) -> dict[str, Source]:
        """At start, for the names two files declare: the declaration the store holds, when it is one of them.

        A node that restarts knows nothing of which file held a name, but the
        stored task names its source: the file that held the name keeps it,
        rather than the file that sorts first.
        """
        holders: dict[str, Source] = {}
        for name in sorted({name for _, name in directory.shadowed}):
            for result in directory.files:
                spec = next((s for s in result.specs if s.name == name), None)
                placement = next(iter(self._placements(spec)), None) if spec is not None else None
                if placement is None:
                    continue
                store, item_id, _ = placement
                try:
                    stored = await store.get_task(item_id)
                except TaskNotFound:
                    continue
                if stored.spec.source is not None and stored.spec.source.path == result.path:
                    holders[name] = spec.source or Source(result.path, 0)
                    break
        return holders  # a name no stored task matches goes by the name order

    async def _describe_in_force(self, write: _Upsert) -> InForce:
        try:
            task = await write.store.get_task(write.item_id)
        except TaskNotFound:  # removed meanwhile: the next reload writes it again
            return InForce(write.item_id, "", "", 0.0)
        return InForce(write.item_id, task.spec_hash, str(task.spec.source or ""), task.spec_version)

    def _placements(self, spec: TaskSpec) -> Iterable[tuple[Store, str, str | None]]:
        """(store, item id, pinned node) for each copy of ``spec`` this node is responsible for."""
        if spec.node_local and not self.executor_node:
            return
        item_id, node = spec.placement(self.node_id)
        yield (self.store if spec.persistent else self.memory_store), item_id, node

    async def _keep_stored_versions(self, paths: set[str]) -> None:
        """At start, the version in force of files present but rejected: the one the store holds.

        Only what the node could read and validate counts as its declaration; a
        file it cannot read or that turned bad while the node was down must not
        delete its tasks (with their counters, history, checkpoint and operator
        overrides). Its last good version is the one in the store, written from
        the same path.
        """
        found: dict[str, list[TaskSpec]] = {}
        for task in await self._stored_file_tasks():
            if task.spec.source is not None and task.spec.source.path in paths:
                found.setdefault(task.spec.source.path, []).append(task.spec)
        for path, specs in found.items():
            specs.sort(key=lambda spec: spec.source.line if spec.source else 0)
            self._good[path] = _GoodVersion("", 0.0, tuple(specs), written=True)
            log.warning("%s is rejected: its tasks keep the version in force (%s)",
                        path, ", ".join(spec.name for spec in specs), extra={"file": path})

    async def _gone_while_down(self, desired: dict[str, tuple[Store, str]], superseded: int) -> set[str]:
        """Stored file tasks of this node's that no file declares any more (first reload only).

        Every task just written is in the store, as a file task unless a newer
        version superseded it. So when nothing was superseded and the store counts
        exactly as many file tasks as were written to it, nothing else is there:
        one count instead of reading back every task (seconds for 10,000).
        """
        declared = sum(1 for store, _ in desired.values() if store is self.store)
        if not superseded:
            stored = await self.store.query_tasks(TaskQuery(origin_file=True, limit=0))
            if stored.total == declared:
                return set()
        return {task.item_id for task in await self._stored_file_tasks()} - set(desired)

    async def _stored_file_tasks(self) -> list[Task]:
        """The file-declared tasks this node is responsible for, as stored now (first reload only)."""
        tasks: list[Task] = []
        page_size = 1000
        offset = 0
        while True:
            page = await self.store.query_tasks(TaskQuery(origin_file=True, offset=offset, limit=page_size))
            tasks.extend(task for task in page.items if task.node is None or task.node == self.node_id)
            offset += page_size
            if offset >= page.total:
                return tasks


@dataclass(frozen=True)
class _Upsert:
    """One spec copy to write: ``store.upsert_spec`` with these arguments."""

    store: Store
    spec: TaskSpec
    item_id: str
    node: str | None
    spec_version: float


async def _upsert_all(writes: list[_Upsert], now: datetime) -> list[UpsertResult]:
    """The writes' results, in order; the first error is raised once every write of its chunk is done.

    Writes go out ``UPSERT_CHUNK`` at a time, concurrently: the SQLite store
    commits the writes that queue up together as one transaction, and MongoDB
    overlaps their round trips, where one awaited write after another paid a
    commit (or a round trip) each: 10,000 files took seconds. A chunk is small
    enough that the engine's own writes (claims, finishes) get the store between
    chunks. The items of one reload are distinct, so their order does not matter.
    """
    results: list[UpsertResult] = []
    for start in range(0, len(writes), UPSERT_CHUNK):
        chunk = writes[start:start + UPSERT_CHUNK]
        outcomes = await asyncio.gather(
            *(
                w.store.upsert_spec(
                    w.spec, item_id=w.item_id, node=w.node, first_due=first_slot(w.spec.schedule, now),
                    spec_version=w.spec_version,
                )
                for w in chunk
            ),
            return_exceptions=True,  # no write left running unobserved when another fails
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        results.extend(outcomes)
    return results


def _mtime(path: str) -> float:
    """The file's modification time: the version of its specs (see the rollout rule above)."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
