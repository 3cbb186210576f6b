"""The private temporary directory that holds a process's control files, and the sweep of dead ones.

A command executor makes one directory (mode 0700, under the system's temporary
directory) for the control files of all its runs and removes it when it is
garbage-collected or the process exits. A process killed with SIGKILL cannot
remove its own, so each directory is locked (``flock``) for as long as its
process lives: the kernel drops the lock when the process dies, whatever pid
namespace it lived in and whatever pid it had. Making a new directory first
removes this user's directories that no process holds any more.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
import weakref
from pathlib import Path

logger = logging.getLogger(__name__)

PREFIX = "scheduler-control-"
# A directory is made, then locked: one younger than this may be between the two, and is left alone.
LOCK_AFTER = 60.0  # seconds


class ControlDir:
    """A locked private directory, made on first use and made again if a cleaner of /tmp removed it."""

    def __init__(self, parent: Path | None = None) -> None:
        self._parent = Path(tempfile.gettempdir()) if parent is None else parent
        self._path: Path | None = None
        self._removal: weakref.finalize | None = None

    def path(self) -> Path:
        if self._path is None or not self._path.is_dir():
            if self._removal is not None:
                self._removal()  # the lock of the directory a cleaner removed
            sweep(self._parent)
            self._path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=self._parent))
            lock = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new and ours: nobody else can hold it
            self._removal = weakref.finalize(self, _remove, self._path, lock)
        return self._path


def _remove(path: Path, lock: int) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.close(lock)


def sweep(parent: Path) -> list[Path]:
    """Remove this user's control directories under ``parent`` whose process has died; the removed ones."""
    removed = []
    for candidate in parent.glob(f"{PREFIX}*"):
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to open
            status = candidate.lstat()
            if status.st_uid != os.getuid() or time.time() - status.st_mtime < LOCK_AFTER:
                continue
            lock = os.open(candidate, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process lives
            finally:
                os.close(lock)
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    if removed:
        logger.info("removed %d control directory(ies) left by processes that died: %s",
                    len(removed), ", ".join(str(path) for path in removed))
    return removed
