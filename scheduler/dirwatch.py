"""Watch the tasks directory by its configured path: symlink switches and re-created directories included.

inotify watches inodes, not paths. A watch set on ``/etc/scheduler/tasks.d`` while
it is a symlink to ``release-1`` keeps watching ``release-1`` after ``ln -sfn
release-2 tasks.d``, and the watch of a removed directory is gone for good, even
when a directory of that name is created again. So besides the directory itself,
``DirectoryWatch`` watches the directory that holds each link on the way to it
(the link ``tasks.d`` lives in ``/etc/scheduler``). When one of those entries
changes, it resolves the path again, sets its watches up on what the path leads
to now, and only then reports a change: the rescan that follows cannot miss a
file written in between.

Each batch of changes names the task files that changed, so that a reload reads
those alone. A batch that cannot be told that way asks for a rescan of every file:
the path re-resolved, or a link or directory among the entries changed (Kubernetes
updates a ConfigMap volume by switching its ``..data`` link, through which every
task file's link goes).

The watches are set up when the object is made, so a caller that makes it before
its first scan misses nothing either. Watching the parent directories means
waking up for changes of their other entries too (filtered out here, never a
rescan): keep the tasks directory away from busy files such as the SQLite store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator, Callable

from watchfiles._rust_notify import RustNotify  # watchfiles' documented low-level API (awatch is built on it)

log = logging.getLogger(__name__)

DEBOUNCE_MS = 50  # changes arriving within this window are one batch (an editor's save, an Ansible copy)
STEP_MS = 10
TIMEOUT_MS = 5_000  # the watch thread's wait before it looks at the stop event again
RETRY_SECONDS = 2.0  # when nothing on the way exists, or no watch can be set: look again this often
MAX_LINKS = 40  # as the kernel's limit on symbolic links followed in one path


@dataclass(frozen=True)
class _Targets:
    """What the configured path leads to now."""

    directory: str | None  # the real directory, when the path leads to one
    entries: frozenset[str]  # each link and the directory on the way (real parent + name): a change re-resolves
    watched: tuple[str, ...]  # the existing directories to watch: the entries' parents and the directory


def _targets(path: str) -> _Targets:
    entries: set[str] = set()
    watched: list[str] = []
    hop = os.path.abspath(path)
    for _ in range(MAX_LINKS):
        parent = os.path.realpath(os.path.dirname(hop))
        entries.add(os.path.join(parent, os.path.basename(hop)))
        if os.path.isdir(parent):
            watched.append(parent)
        try:
            link = os.readlink(hop)
        except OSError:  # not a link (the directory itself), or gone
            break
        hop = os.path.normpath(os.path.join(parent, link))
    directory = os.path.realpath(path) if os.path.isdir(path) else None
    if directory is not None:
        watched.append(directory)
    return _Targets(directory, frozenset(entries), tuple(dict.fromkeys(watched)))


class DirectoryWatch:
    """Changes of the entries of the directory at ``path`` whose names pass ``relevant``.

    ``changes()`` yields once per batch of relevant changes, the names that changed
    (added, modified or removed); ``None`` when every entry must be looked at again:
    after the path was re-resolved (a link on the way switched, the directory removed
    or created), or when a link or a directory of the directory changed.
    ``close()`` releases the watches and the thread.
    """

    def __init__(self, path: str | os.PathLike[str], relevant: Callable[[str], bool]) -> None:
        self.path = os.fspath(path)
        self._relevant = relevant
        self._stop = threading.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="watch-tasks")
        self._notify: RustNotify | None = None
        self._targets = _Targets(None, frozenset(), ())
        self._arm()

    def _arm(self) -> bool:
        """(Re)set the watches on what the path leads to now. False when none could be set."""
        self._release()
        targets = _targets(self.path)
        self._targets = targets
        if not targets.watched:
            log.error("cannot watch %s: nothing on its way exists; looking again every %.0f s", self.path, RETRY_SECONDS)
            return False
        try:
            self._notify = RustNotify(list(targets.watched), False, False, 300, False, True)
        except Exception as exc:  # removed meanwhile, or the system's limit of watches reached
            log.error("cannot watch %s: %s; trying again every %.0f s", self.path, exc, RETRY_SECONDS)
            return False
        if targets.directory is None:
            log.warning("%s leads to no directory: watching for it to come back", self.path)
        return True

    def _release(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    async def changes(self) -> AsyncIterator[frozenset[str] | None]:
        loop = asyncio.get_running_loop()
        while True:
            if self._notify is None:
                await asyncio.sleep(RETRY_SECONDS)
                if self._arm():
                    yield None
                continue
            future = loop.run_in_executor(self._thread, self._notify.watch, DEBOUNCE_MS, STEP_MS, TIMEOUT_MS, self._stop)
            try:
                raw = await future
            except asyncio.CancelledError:
                self._stop.set()  # the watch thread returns within STEP_MS
                raise
            if not isinstance(raw, set):  # "timeout" (look again), "stop" or "signal"
                if raw == "stop":
                    return
                continue
            paths = {path for _, path in raw}
            if paths & self._targets.entries:
                self._arm()
                yield None
                continue
            names: set[str] = set()
            for path in paths:
                directory, name = os.path.split(path)
                if directory != self._targets.directory:
                    continue  # another entry of a parent directory
                if self._relevant(name):
                    names.add(name)
                elif os.path.islink(path) or os.path.isdir(path):  # files may lead through it: look at them all
                    names.clear()
                    yield None
                    break
            if names:
                yield frozenset(names)

    def close(self) -> None:
        self._stop.set()
        self._thread.shutdown(wait=True)  # the watch call returns within STEP_MS of the stop
        self._release()
