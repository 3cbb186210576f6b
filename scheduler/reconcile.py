"""The reconciler: make the stores hold what ``tasks.d`` declares, file by file, in a cluster.

Rules (README "Reload rules"):

- Each file is validated on its own. A file that turns bad is *rejected* and the
  last good version of its tasks stays in force; its errors are reported. Only
  what the node could read and validate counts as its declaration, across
  restarts too: at start, a rejected file keeps the declarations the node had
  recorded for it.
- What each node declares is kept in the store (``Store.declare_spec``): a file
  task lives while a live node declares it. A task whose file disappears is
  withdrawn; it is removed (a run in progress is stopped at its next lease
  renewal) only when no live node declares it any more, so a node with an empty
  or missing directory removes nothing others declare.
- A spec change keeps runtime state; the next run is recomputed only when the
  schedule changed (the store's ``upsert_spec`` rule).
- Writes are idempotent: an unchanged spec writes nothing, so every node of a
  cluster can reconcile the same files.
- Rollouts converge: the version in force is the declaration whose content
  appeared most recently (the store's rule, from when a node first declared that
  content), so nodes holding different versions during a rollout end up on the
  newest one and never flip back. A node only writes the files whose content
  changed since it last looked (everything on its first reconcile and on an
  operator's reload).

Where a task goes: ``persistent: false`` tasks live in the node's in-memory store,
pinned to the node; ``runOn: all`` tasks get one copy per executor node, named
``<name>@<nodeId>`` and pinned to it; every other task is one shared document.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Collection, Iterable

from .dirwatch import DirectoryWatch
from .loader import DirectoryResult, FileResult, Problem, check_names, is_task_file, load_directory
from .model import Declaration, UpsertResult
from .schedule import first_slot
from .spec import Source, TaskSpec, utc_iso
from .store.base import Store

log = logging.getLogger(__name__)

UPSERT_CHUNK = 256  # spec writes in flight at once during a reload (see _write_all)
# A reload on a watch's report reads the files it names; every file is read again this
# often too, in case the watch missed a change (a full event queue, a file's link
# switched outside the directory). Reading 10,000 files takes about half a second.
RESCAN_INTERVAL = timedelta(minutes=2)
DEFAULT_NODE_TIMEOUT = timedelta(seconds=60)  # the config's nodeTimeout


@dataclass(frozen=True)
class InForce:
    """The version of a task in force when it is not this node's: which spec, declared by whom, from where."""

    item_id: str
    spec_hash: str
    nodes: tuple[str, ...]  # the nodes declaring it (none: no node declares it any more)
    source: str  # path:line of its declaration (a path on the node that declared it)
    version: float  # its spec version (see Store.declare_spec)

    def to_dict(self) -> dict:
        return {
            "task": self.item_id, "specHash": self.spec_hash, "nodes": list(self.nodes), "source": self.source,
            "version": self.version,
        }


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

    sha256: str  # "" for a version carried over from the store at start
    specs: tuple[TaskSpec, ...]
    written: bool = field(default=False)
    # (store, item id, pinned node, spec) of each copy this node is responsible for: Reconciler._placements,
    # worked out once per version rather than at every reload.
    placements: tuple[tuple[Store, str, str | None, TaskSpec], ...] = ()


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
        node_timeout: timedelta = DEFAULT_NODE_TIMEOUT,
        on_change: Callable[[], None] = lambda: None,
        on_reload: Callable[[ReloadReport], None] = lambda report: None,
        rescan_interval: timedelta = RESCAN_INTERVAL,
    ) -> None:
        self.tasks_dir = tasks_dir
        self.rescan_interval = rescan_interval
        self.node_timeout = node_timeout  # a node whose heartbeat is older stops counting
        self.store = store
        self.memory_store = memory_store
        self.node_id = node_id
        self.executor_node = executor_node
        self._on_change = on_change
        self._on_reload = on_reload
        self._good: dict[str, _GoodVersion] = {}
        self._rejected: dict[str, tuple[Problem, ...]] = {}  # path -> its problems, at the last reload
        self._states: dict[str, FileState] = {}  # path -> its state at the last reload that looked at it
        self._states_superseded: dict[str, InForce] = {}  # the versions in force those states show
        self._scanned: DirectoryResult | None = None  # the last scan: unchanged files are not parsed again
        self._read_all_next = False  # a reload failed: the next one reads every file, whatever changed
        self._in_force: dict[str, tuple[Store, str]] = {}  # item id -> where this node put it
        self._in_force_exact = False  # each item of _in_force declared by one version alone
        self._copies = 0  # the placements of every version in _good
        self._good_changes: list[tuple[_GoodVersion | None, _GoodVersion | None]] = []  # this reload's (old, new)
        self._superseded: dict[str, InForce] = {}  # item id -> the other version the store holds
        self._lock = asyncio.Lock()
        self._first_done = False
        self._reloading_since: tuple[float, datetime] | None = None  # (time.monotonic(), UTC) of the reload running
        self._started: datetime | None = None  # the first reload
        self.last_report: ReloadReport | None = None

    @property
    def ready(self) -> bool:
        """True once the first reconcile has completed."""
        return self._first_done

    def problems(self, stuck_after: timedelta) -> list[str]:
        """Why this node is not ready as far as ``tasks.d`` goes: its first reload is not done,
        or a reload has been running for longer than ``stuck_after`` (a file that blocks its
        reader, a store write that hangs). Empty when neither holds."""
        problems = []
        if not self._first_done:
            problems.append(f"the first reload of {self.tasks_dir} has not finished")
        running = self._reloading_since
        if running is not None and time.monotonic() - running[0] > stuck_after.total_seconds():
            problems.append(
                f"the reload of {self.tasks_dir} started at {utc_iso(running[1])} has not finished after "
                f"{stuck_after.total_seconds():g}s (a file that blocks its reader, such as a FIFO, or a store "
                "write that hangs)"
            )
        return problems

    async def reload(self, *, full: bool = False, changed: Collection[str] | None = None) -> ReloadReport:
        """Rescan the directory and apply what changed. Serialised: one reload at a time.

        ``full`` (an operator's reload: SIGHUP, ``POST /-/reload``) writes every
        task in force, not only those of the files that changed: a task deleted
        from the store by other means comes back. ``changed``: the names of the
        only files to read again (a watch's report); without it, every file is.
        """
        async with self._lock:
            self._reloading_since = (time.monotonic(), datetime.now(timezone.utc).replace(microsecond=0))
            try:
                report = await self._reload(full, None if full or self._read_all_next else changed)
            except BaseException:
                self._read_all_next = True  # what this one applied is uncertain
                raise
            finally:
                self._reloading_since = None
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
        """Reload whenever a task file in the directory changes, or the path leads elsewhere, and look after
        the declarations every ``node_timeout / 2`` (see ``maintain``). Runs until cancelled."""
        try:
            await asyncio.gather(
                self._reload_on_changes(watch), self._maintain_periodically(), self._rescan_periodically()
            )
        finally:
            watch.close()

    async def _reload_on_changes(self, watch: DirectoryWatch) -> None:
        async for changed in watch.changes():
            try:
                await self.reload(changed=changed)
            except Exception:
                log.exception("reload of %s failed", self.tasks_dir)

    async def _rescan_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.rescan_interval.total_seconds())
            try:
                await self.reload()
            except Exception:
                log.exception("rescan of %s failed", self.tasks_dir)

    async def _maintain_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.node_timeout.total_seconds() / 2)
            try:
                await self.maintain()
            except Exception:
                log.exception("looking after the declarations of %s failed", self.node_id)

    async def maintain(self) -> None:
        """Forget the declarations of nodes that stopped counting, and declare again what went missing.

        A task only nodes without heartbeat declared goes (their file is gone for
        the cluster). Not before this node has been up for ``node_timeout``
        itself: after a restart of the whole cluster, the others get the time
        to come back first.
        """
        now = self.store.now()
        if self._started is not None and now - self._started >= self.node_timeout:
            removed = await self.store.drop_stale_declarations(self.node_id, live_after=now - self.node_timeout)
            for item_id in removed:
                log.info("removed task %s: no live node declares it any more", item_id, extra={"task": item_id})
            if removed:
                self._on_change()
        if self._lock.locked():
            return  # a reload is writing the declarations: look next time
        mine = {item_id for item_id, (store, _) in self._in_force.items() if store is self.store}
        recorded = {d.item_id for d in await self.store.list_declarations(node_id=self.node_id)}
        if mine - recorded and not self._lock.locked():
            log.warning("%d declaration(s) of %s went missing from the store (%s): declaring again",
                        len(mine - recorded), self.node_id, ", ".join(sorted(mine - recorded)[:5]))
            await self.reload(full=True)

    async def _reload(self, full: bool, changed: Collection[str] | None) -> ReloadReport:
        now = self.store.now()
        try:
            # In a thread: parsing thousands of files must not stall the API and the engine.
            incremental = changed is not None and self._scanned is not None
            directory = await asyncio.to_thread(
                load_directory, self.tasks_dir, previous=self._scanned, holders=self._holders, changed=changed,
                # The executor types installed are looked up again by every full rescan.
                known_types=self._scanned.known_types if incremental else None,
            )
        except OSError as exc:
            # Nothing can be known about the files: everything in force stays in force.
            problem = Problem(str(self.tasks_dir), 0, 0, "", f"cannot read the tasks directory: {exc.strerror or exc}")
            log.error("%s", problem)
            return ReloadReport(ok=False, at=now, files=self.last_report.files if self.last_report else (),
                                problems=(problem,))
        own = None if self._first_done else await self.store.list_declarations(node_id=self.node_id)
        if own is not None:
            self._started = now
            if directory.shadowed:
                directory = check_names(directory, _recorded_holders(directory, own))
        self._scanned = directory
        between: dict[str, list[Problem]] = {}
        for problem in directory.problems:
            between.setdefault(problem.path, []).append(problem)
        if incremental:
            # Only these files can have changed their verdict: those read again, those with problems
            # between files now, and those rejected before. Every other one was applied, and still is.
            read_again = {os.path.join(str(self.tasks_dir), name) for name in changed}
            touched = read_again | between.keys() | self._rejected.keys()
            results = {f.path: f for f in directory.files if f.path in touched}
            absent = [path for path in touched if path not in results]
        else:
            results = {f.path: f for f in directory.files}
            absent = [path for path in self._good if path not in results]
        gone = [path for path in absent if path in self._good]
        rejected: dict[str, tuple[Problem, ...]] = {}
        for result in results.values():
            good = self._good.get(result.path)
            problems = (*result.problems, *between.get(result.path, ()))
            if problems:
                for problem in problems:
                    log.error("rejected %s", problem, extra={"file": result.path})
                rejected[result.path] = tuple(sorted(problems))
            elif good is None or good.sha256 != result.sha256:
                self._set_good(result.path, self._good_version(result.sha256, tuple(result.specs)))
                log.info("applied %s (%d task(s))", result.path, len(result.specs), extra={"file": result.path})
        for path in gone:
            log.info("file %s removed: its tasks go", path, extra={"file": path})
            self._drop_good(path)
        self._rejected = rejected
        if own is not None:
            await self._carry_over(set(rejected) - set(self._good), own)

        desired, writes, to_mark = self._desired_and_writes(full, incremental)
        counts = {result: 0 for result in UpsertResult}
        outcomes = await _write_all(list(writes.values()), self.store, self.node_id, now)
        superseded = []
        for write, result in zip(writes.values(), outcomes):
            counts[result] += 1
            if result is UpsertResult.SUPERSEDED:
                superseded.append(write.item_id)
            else:
                self._superseded.pop(write.item_id, None)
        for good in to_mark:
            good.written = True

        # Withdrawn after the writes: a task moving from one file to another keeps its runtime state.
        stale = self._in_force.keys() - desired.keys()
        if own is not None:
            stale |= {d.item_id for d in own} - desired.keys()
        removed = await self._withdraw(sorted(stale), now)
        self._in_force = desired
        self._in_force_exact = len(desired) == self._copies
        for in_force in await self._describe_in_force(superseded, now):  # a withdrawal may have changed it
            self._superseded[in_force.item_id] = in_force
            log.warning("%s: the version in force is %s's (%s); this node's is not", in_force.item_id,
                        ", ".join(in_force.nodes) or "no live node", in_force.source, extra={"task": in_force.item_id})

        self._read_all_next = False
        return ReloadReport(
            ok=not rejected,
            at=now,
            files=self._file_states(directory, results, absent, rejected, now, incremental),
            created=counts[UpsertResult.CREATED],
            updated=counts[UpsertResult.UPDATED],
            removed=removed,
            superseded=counts[UpsertResult.SUPERSEDED],
        )

    def _set_good(self, path: str, good: _GoodVersion) -> None:
        old = self._good.get(path)
        self._good[path] = good
        self._copies += len(good.placements) - (len(old.placements) if old else 0)
        self._good_changes.append((old, good))

    def _drop_good(self, path: str) -> None:
        old = self._good.pop(path)
        self._copies -= len(old.placements)
        self._good_changes.append((old, None))

    def _desired_and_writes(
        self, full: bool, incremental: bool
    ) -> tuple[dict[str, tuple[Store, str]], dict[str, _Write], list[_GoodVersion]]:
        """Where each task in force goes (by item id), the copies to write (those of the versions not
        written yet, those not in force where they go; every copy when ``full``), and the versions
        written with them."""
        changes, self._good_changes = self._good_changes, []
        if incremental and not full and self._in_force_exact:
            # What was in force, with the versions that changed: 10,000 tasks need not be placed
            # again for one file. Exact while each item is declared once (or an item went missing).
            desired = dict(self._in_force)
            for old, _ in changes:
                for _, item_id, _, _ in old.placements if old is not None else ():
                    desired.pop(item_id, None)
            writes: dict[str, _Write] = {}
            new = [good for _, good in changes if good is not None]
            for good in new:
                for store, item_id, node, spec in good.placements:
                    desired[item_id] = (store, item_id)
                    if not good.written:
                        writes[item_id] = _Write(store, spec, item_id, node)
            if len(desired) == self._copies:
                return desired, writes, new
        goods = list(self._good.values())
        desired = {item_id: (store, item_id) for good in goods for store, item_id, _, _ in good.placements}
        writes = {}  # by item id: the last declaration wins, as in ``desired``
        for good in goods:
            for store, item_id, node, spec in good.placements:
                if full or not (good.written and self._in_force.get(item_id) == (store, item_id)):
                    writes[item_id] = _Write(store, spec, item_id, node)
        return desired, writes, goods

    def _file_states(
        self, directory: DirectoryResult, results: dict[str, FileResult], absent: list[str],
        rejected: dict[str, tuple[Problem, ...]], now: datetime, incremental: bool,
    ) -> tuple[FileState, ...]:
        """Each file's state, in path order. A file an incremental reload did not look at keeps its state
        (and when it was checked) while the versions in force are what they were: 10,000 states need
        not be made again for one changed file."""
        if incremental and self._superseded == self._states_superseded:
            states = self._states
            for path in absent:
                states.pop(path, None)
        else:
            states, results = {}, {f.path: f for f in directory.files}
        added = not results.keys() <= states.keys()
        for path, result in results.items():
            states[path] = self._file_state(result, rejected.get(path, ()), now)
        if added:  # in path order again
            states = {f.path: states[f.path] for f in directory.files}
        self._states = states
        self._states_superseded = dict(self._superseded)
        return tuple(states.values())

    async def _withdraw(self, item_ids: list[str], now: datetime) -> int:
        """This node no longer declares ``item_ids``: the tasks go unless another live node declares them."""
        removed = 0
        shared = []
        for item_id in item_ids:
            self._superseded.pop(item_id, None)
            store = self._in_force.get(item_id, (self.store, item_id))[0]
            if store is self.store:
                shared.append(item_id)
            elif await store.remove_spec(item_id):
                removed += 1
                log.info("removed task %s: no longer declared", item_id, extra={"task": item_id})
        gone = set(await self.store.withdraw_specs(self.node_id, shared, live_after=now - self.node_timeout))
        for item_id in shared:
            if item_id in gone:
                log.info("removed task %s: no longer declared", item_id, extra={"task": item_id})
            else:
                log.info("task %s: no longer declared here, other nodes still declare it", item_id,
                         extra={"task": item_id})
        return removed + len(gone)

    async def _carry_over(self, paths: set[str], own: list[Declaration]) -> None:
        """At start, the declarations this node had recorded for files that are present but rejected.

        Only what the node can read and validate counts as its declaration; a
        file it cannot read or that turned bad while the node was down keeps
        what the node declared from it before, so its tasks keep the version in
        force with their counters, history, checkpoint and operator overrides.
        """
        kept = [d.item_id for d in own if d.source is not None and d.source.path in paths]
        if not kept:
            return
        found: dict[str, list[TaskSpec]] = {}
        for declaration in await self.store.list_declarations(
            node_id=self.node_id, item_ids=kept, with_documents=True
        ):
            found.setdefault(declaration.source.path, []).append(declaration.spec())
        for path, specs in found.items():
            specs.sort(key=lambda spec: spec.source.line if spec.source else 0)
            self._set_good(path, self._good_version("", tuple(specs), written=True))
            log.warning("%s is rejected: its tasks stay as this node declared them (%s)",
                        path, ", ".join(spec.name for spec in specs), extra={"file": path})

    def _file_state(self, result: FileResult, problems: tuple[Problem, ...], now: datetime) -> FileState:
        good = self._good.get(result.path)
        names = tuple(s.name for s in good.specs) if good else ()
        if problems:
            return FileState(result.path, "rejected", result.sha256, now, names, problems,
                             applied_sha256=good.sha256 if good else None)
        others = self._superseded_of(result.path)
        return FileState(result.path, "superseded" if others else "applied", result.sha256, now, names,
                         superseded=others)

    def _superseded_of(self, path: str) -> tuple[InForce, ...]:
        """The other versions in force instead of the tasks of the file at ``path`` (of a rejected file: none)."""
        if not self._superseded:  # as usual
            return ()
        return tuple(self._superseded[item_id] for item_id in self._items_of(path) if item_id in self._superseded)

    def _good_version(self, sha256: str, specs: tuple[TaskSpec, ...], written: bool = False) -> _GoodVersion:
        placements = tuple((store, item_id, node, spec) for spec in specs for store, item_id, node in self._placements(spec))
        return _GoodVersion(sha256, specs, written, placements)

    def _holders(self) -> dict[str, Source]:
        """Each task name in force, and the declaration (file and line) that holds it."""
        return {
            spec.name: spec.source or Source(path, 0)
            for path, good in self._good.items()
            for spec in good.specs
        }

    async def _describe_in_force(self, item_ids: list[str], now: datetime) -> list[InForce]:
        """For tasks whose version in force is not this node's: which one it is, and who declares it."""
        if not item_ids:
            return []
        declarations: dict[str, list[Declaration]] = {}
        for declaration in await self.store.list_declarations(item_ids=item_ids, live_after=now - self.node_timeout):
            declarations.setdefault(declaration.item_id, []).append(declaration)
        return [
            _in_force(item_id, found)
            for item_id, found in ((item_id, declarations.get(item_id, [])) for item_id in item_ids)
            if any(d.node_id == self.node_id and d.spec_hash != d.in_force for d in found)
        ]

    async def current_files(self) -> tuple[tuple[FileState, ...], list[dict]]:
        """The files of the last reload, their versions in force checked against the store now, and the
        tasks of this node's on which live nodes disagree (for ``GET /cxs/config``)."""
        report = self.last_report
        if report is None:
            return (), []
        now = self.store.now()
        mine = sorted(item_id for item_id, (store, _) in self._in_force.items() if store is self.store)
        by_item: dict[str, list[Declaration]] = {}
        if mine:
            for declaration in await self.store.list_declarations(item_ids=mine, live_after=now - self.node_timeout):
                by_item.setdefault(declaration.item_id, []).append(declaration)
        self._superseded = {
            item_id: _in_force(item_id, declarations)
            for item_id, declarations in by_item.items()
            if any(d.node_id == self.node_id and d.spec_hash != d.in_force for d in declarations)
        }
        files = []
        for state in report.files:
            if state.status != "rejected":
                others = tuple(self._superseded[i] for i in self._items_of(state.path) if i in self._superseded)
                state = replace(state, status="superseded" if others else "applied", superseded=others)
            files.append(state)
        divergence = [
            _divergence(item_id, declarations) for item_id, declarations in by_item.items()
            if _diverged(declarations)
        ]
        return tuple(files), divergence

    def _placements(self, spec: TaskSpec) -> Iterable[tuple[Store, str, str | None]]:
        """(store, item id, pinned node) for each copy of ``spec`` this node is responsible for."""
        if spec.node_local and not self.executor_node:
            return
        item_id, node = spec.placement(self.node_id)
        yield (self.store if spec.persistent else self.memory_store), item_id, node

    def _items_of(self, path: str) -> list[str]:
        good = self._good.get(path)
        return [item_id for _, item_id, _, _ in (good.placements if good else ())]


def _recorded_holders(directory: DirectoryResult, own: list[Declaration]) -> dict[str, Source]:
    """At start, for the names two files declare: the file this node had recorded as declaring it.

    A node that restarts knows nothing of which file held a name, but its
    recorded declarations do: the file that held the name keeps it, rather
    than the file that sorts first.
    """
    contested = {name for _, name in directory.shadowed}
    recorded = {d.source.path for d in own if d.source is not None}
    holders: dict[str, Source] = {}
    for result in directory.files:
        if result.path in recorded:
            for spec in result.specs:
                if spec.name in contested and any(
                    d.source is not None and d.source.path == result.path and d.item_id.split("@")[0] == spec.name
                    for d in own
                ):
                    holders[spec.name] = spec.source or Source(result.path, 0)
    return holders


def _in_force(item_id: str, declarations: list[Declaration]) -> InForce:
    """The version ``item_id`` holds, described by the declarations of it."""
    in_force = next((d.in_force for d in declarations if d.in_force), "")
    holding = [d for d in declarations if d.spec_hash == in_force]
    newest = max(holding, key=lambda d: d.since, default=None)
    return InForce(
        item_id, in_force, tuple(d.node_id for d in holding), str(newest.source or "") if newest else "",
        newest.version if newest else 0.0,
    )


def _diverged(declarations: list[Declaration]) -> bool:
    live = [d for d in declarations if d.live]
    return len({d.spec_hash for d in live} | {d.in_force for d in live}) > 1


def _divergence(item_id: str, declarations: list[Declaration]) -> dict:
    return {
        "task": item_id,
        "inForce": next((d.in_force for d in declarations if d.in_force), None),
        "declarations": [
            {"node": d.node_id, "specHash": d.spec_hash, "since": utc_iso(d.since), "live": d.live,
             "source": str(d.source or "")}
            for d in declarations
        ],
    }


@dataclass(frozen=True)
class _Write:
    """One spec copy to write: declared in the shared store, or upserted in the node's memory store."""

    store: Store
    spec: TaskSpec
    item_id: str
    node: str | None


async def _write_all(writes: list[_Write], shared: Store, node_id: str, now: datetime) -> list[UpsertResult]:
    """The writes' results, in order; the first error is raised once every write of its chunk is done.

    Writes go out ``UPSERT_CHUNK`` at a time, concurrently: the SQLite store
    commits the writes that queue up together as one transaction, and MongoDB
    overlaps their round trips, where one awaited write after another paid a
    commit (or a round trip) each: 10,000 files took seconds. A chunk is small
    enough that the engine's own writes (claims, finishes) get the store between
    chunks. The items of one reload are distinct, so their order does not matter.
    """

    def write(w: _Write):
        if w.store is shared:
            return shared.declare_spec(node_id, w.spec, item_id=w.item_id, node=w.node)
        return w.store.upsert_spec(w.spec, item_id=w.item_id, node=w.node, first_due=first_slot(w.spec.schedule, now))

    results: list[UpsertResult] = []
    for start in range(0, len(writes), UPSERT_CHUNK):
        chunk = writes[start:start + UPSERT_CHUNK]
        outcomes = await asyncio.gather(
            *(write(w) for w in chunk),
            return_exceptions=True,  # no write left running unobserved when another fails
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        results.extend(outcomes)
    return results
