"""Process groups: signal one, tell whether it still runs, recognise its leader.

Every command starts a new session, so it leads its own process group whose id
is its pid. The node's command executor and the watchdog process both use these;
this module imports nothing of the scheduler, so the watchdog starts light.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting to be reaped do not count).

    ``killpg(pgid, 0)`` also finds zombies, and orphaned zombies linger where the
    init process does not reap them (containers, micro-VMs); on Linux the
    members are then read from /proc.
    """
    if not signal_group(pgid, 0):
        return False
    if not sys.platform.startswith("linux"):
        return True
    return any(stat.state != "Z" for stat in _all_stats() if stat.pgrp == pgid)


@dataclass(frozen=True)
class ProcessStat:
    """What /proc/<pid>/stat says of a process that identifies it and its group."""

    pid: int
    state: str  # R, S, D, Z (exited, not yet reaped by its parent), ...
    pgrp: int
    session: int
    start_time: int  # clock ticks since boot: with the pid, names one process for the machine's uptime


def process_stat(pid: int) -> ProcessStat | None:
    """The process ``pid`` (a zombie included), or None when no process has that pid (Linux only)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read().decode("ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # "pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice threads itrealvalue starttime ...": comm may hold spaces and parentheses.
    fields = stat[stat.rfind(")") + 2 :].split()
    return ProcessStat(pid=pid, state=fields[0], pgrp=int(fields[2]), session=int(fields[3]), start_time=int(fields[19]))


def session_leaders_with_env(name: str, value: str) -> list[ProcessStat]:
    """The session leaders (a command's process, in the session it starts) whose environment sets ``name=value``.

    The environment read is the one the process was started with (``/proc/<pid>/environ``),
    readable for processes of the same user that are not set-user-ID. It scans the
    machine's processes: for rare use (see ``scheduler.watchdog``).
    """
    needle = b"\0" + f"{name}={value}".encode() + b"\0"
    found = []
    for stat in _all_stats():
        if stat.pid != stat.session or stat.pid != stat.pgrp:
            continue
        try:
            with open(f"/proc/{stat.pid}/environ", "rb") as file:
                environ = file.read()
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if needle in b"\0" + environ:
            found.append(stat)
    return found


def _all_stats() -> list[ProcessStat]:
    stats = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := process_stat(int(entry.name))) is not None:  # else exited meanwhile
            stats.append(stat)
    return stats
