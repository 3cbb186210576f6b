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
from .loader import DirectoryResult, Problem, is_task_file, load_directory
from .model import TaskQuery, UpsertResult
from .schedule import first_slot
from .spec import TaskSpec, utc_iso
from .store.base import Store

log = logging.getLogger(__name__)

UPSERT_CHUNK = 256  # spec writes in flight at once during a reload (see _upsert_all)


@dataclass(frozen=True)
class FileState:
    """What the node made of one file at its last reload."""

    path: str
    status: str  # "applied" or "rejected"
    sha256: str
    checked_at: datetime
    tasks: tuple[str, ...]  # names in force from this file (the last good version when rejected)
    problems: tuple[Problem, ...] = ()
    applied_sha256: str | None = None  # the version in force, when rejected but a good one exists

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "status": self.status,
            "sha256": self.sha256,
            "appliedSha256": self.applied_sha256 if self.status == "rejected" else self.sha256,
            "checkedAt": utc_iso(self.checked_at),
            "tasks": list(self.tasks),
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
        self._lock = asyncio.Lock()
        self._first_done = False
        self.last_report: ReloadReport | None = None

    @property
    def ready(self) -> bool:
        """True once the first reconcile has completed."""
        return self._first_done

    async def reload(self) -> ReloadReport:
        """Rescan the directory and apply what changed. Serialised: one reload at a time."""
        async with self._lock:
            report = await self._reload()
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

    async def _reload(self) -> ReloadReport:
        now = self.store.now()
        try:
            # In a thread: parsing thousands of files must not stall the API and the engine.
            directory = await asyncio.to_thread(load_directory, self.tasks_dir, previous=self._scanned)
        except OSError as exc:
            # Nothing can be known about the files: everything in force stays in force.
            problem = Problem(str(self.tasks_dir), 0, 0, "", f"cannot read the tasks directory: {exc.strerror or exc}")
            log.error("%s", problem)
            return ReloadReport(ok=False, at=now, files=self.last_report.files if self.last_report else (),
                                problems=(problem,))
        self._scanned = directory
        between: dict[str, list[Problem]] = {}
        for problem in directory.problems:
            between.setdefault(problem.path, []).append(problem)
        states: list[FileState] = []
        seen_paths = set()
        for result in directory.files:
            seen_paths.add(result.path)
            good = self._good.get(result.path)
            problems = (*result.problems, *between.get(result.path, ()))
            if problems:
                for problem in problems:
                    log.error("rejected %s", problem, extra={"file": result.path})
                states.append(
                    FileState(
                        path=result.path,
                        status="rejected",
                        sha256=result.sha256,
                        checked_at=now,
                        tasks=tuple(s.name for s in good.specs) if good else (),
                        problems=tuple(sorted(problems)),
                        applied_sha256=good.sha256 if good else None,
                    )
                )
                continue
            if good is None or good.sha256 != result.sha256:
                self._good[result.path] = _GoodVersion(result.sha256, _mtime(result.path), tuple(result.specs))
                log.info("applied %s (%d task(s))", result.path, len(result.specs), extra={"file": result.path})
            states.append(
                FileState(
                    path=result.path,
                    status="applied",
                    sha256=result.sha256,
                    checked_at=now,
                    tasks=tuple(s.name for s in result.specs),
                )
            )
        for path in set(self._good) - seen_paths:
            log.info("file %s removed: its tasks go", path, extra={"file": path})
            del self._good[path]

        desired: dict[str, tuple[Store, str]] = {}
        writes: dict[str, _Upsert] = {}  # by item id: the last declaration wins, as in ``desired``
        for good in self._good.values():
            for spec in good.specs:
                for store, item_id, node in self._placements(spec):
                    desired[item_id] = (store, item_id)
                    if not (good.written and self._in_force.get(item_id) == (store, item_id)):
                        writes[item_id] = _Upsert(store, spec, item_id, node, good.mtime)
        counts = {result: 0 for result in UpsertResult}
        for write, result in zip(writes.values(), await _upsert_all(list(writes.values()), now)):
            counts[result] += 1
            if result is UpsertResult.SUPERSEDED:
                log.warning("%s: the store holds a newer version; not overwritten", write.item_id)
        for good in self._good.values():
            good.written = True

        removed = 0
        stale = set(self._in_force) - set(desired)
        if not self._first_done:
            stale |= await self._gone_while_down(desired, counts[UpsertResult.SUPERSEDED])
        for item_id in sorted(stale):
            store = self._in_force.get(item_id, (self.store, item_id))[0]
            if await store.remove_spec(item_id):
                removed += 1
                log.info("removed task %s: no longer declared", item_id, extra={"task": item_id})
        self._in_force = desired

        return ReloadReport(
            ok=all(s.status == "applied" for s in states),
            at=now,
            files=tuple(sorted(states, key=lambda s: s.path)),
            created=counts[UpsertResult.CREATED],
            updated=counts[UpsertResult.UPDATED],
            removed=removed,
            superseded=counts[UpsertResult.SUPERSEDED],
        )

    def _placements(self, spec: TaskSpec) -> Iterable[tuple[Store, str, str | None]]:
        """(store, item id, pinned node) for each copy of ``spec`` this node is responsible for."""
        if spec.node_local and not self.executor_node:
            return
        item_id, node = spec.placement(self.node_id)
        yield (self.store if spec.persistent else self.memory_store), item_id, node

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
        return await self._stored_file_tasks() - set(desired)

    async def _stored_file_tasks(self) -> set[str]:
        """Ids of the file-declared tasks this node is responsible for, as stored now (first reload only)."""
        ids: set[str] = set()
        page_size = 1000
        offset = 0
        while True:
            page = await self.store.query_tasks(TaskQuery(origin_file=True, offset=offset, limit=page_size))
            for task in page.items:
                if task.node is None or task.node == self.node_id:
                    ids.add(task.item_id)
            offset += page_size
            if offset >= page.total:
                return ids


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
