"""The control files' directory: private, removed with its executor, swept once its process has died."""

from __future__ import annotations

import gc
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from scheduler.executors.control_dir import LOCK_AFTER, ControlDir

HOLDER = """\
import sys, time
from pathlib import Path
from scheduler.executors.control_dir import ControlDir
held = ControlDir(Path(sys.argv[1]))
(held.path() / "run.control.jsonl").write_text("")
print(held.path(), flush=True)
time.sleep(600)
"""


def hold_a_directory(parent: Path) -> tuple[subprocess.Popen, Path]:
    """A process that makes its control directory and lives on with it."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(parent)], stdout=subprocess.PIPE, text=True)
    return process, Path(process.stdout.readline().strip())


def age(path: Path) -> None:
    """Make the directory look made long ago: the sweep leaves young ones (made, maybe not yet locked)."""
    past = time.time() - LOCK_AFTER - 1
    os.utime(path, (past, past))


def test_a_directory_is_private_and_removed_with_its_executor(tmp_path):
    control = ControlDir(tmp_path)
    path = control.path()
    assert path.parent == tmp_path and stat.S_IMODE(path.stat().st_mode) == 0o700
    assert control.path() == path  # one directory serves every run
    del control
    gc.collect()
    assert not path.exists()


def test_a_directory_removed_by_a_cleaner_is_made_again(tmp_path):
    control = ControlDir(tmp_path)
    first = control.path()
    open_files = len(os.listdir("/proc/self/fd"))
    first.rmdir()
    again = control.path()
    assert again.is_dir() and again != first
    assert len(os.listdir("/proc/self/fd")) == open_files  # the first one's lock is closed, not leaked


def test_the_directory_of_a_killed_process_is_swept_and_a_living_ones_kept(tmp_path):
    killed, left = hold_a_directory(tmp_path)
    living, kept = hold_a_directory(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        assert left.is_dir()  # nothing of the killed process could remove it
        for path in (left, kept):
            age(path)

        control = ControlDir(tmp_path)
        mine = control.path()

        assert not left.exists()
        assert kept.is_dir() and (kept / "run.control.jsonl").exists()
        assert sorted(tmp_path.iterdir()) == sorted([kept, mine])
    finally:
        for process in (killed, living):
            process.kill()
            process.wait(timeout=10)
            process.stdout.close()


def test_a_young_directory_is_left_to_the_process_that_is_making_it(tmp_path):
    unlocked = tmp_path / "scheduler-control-new"
    unlocked.mkdir()  # made, not yet locked: as between mkdtemp and flock
    ControlDir(tmp_path).path()
    assert unlocked.is_dir()
    age(unlocked)
    ControlDir(tmp_path).path()
    assert not unlocked.exists()
