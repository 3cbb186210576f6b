"""Process-group plumbing for command runs: parent-death signal, group signals, group liveness.

Every command starts a new session, so it leads its own process group whose id
is its pid; everything it forks stays in that group unless it calls setsid
itself. Stopping a run signals the whole group (see ``scheduler.groups``).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Callable

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError) as exc:
        logger.warning("prctl unavailable (%s): command runs get no parent-death signal", exc)
        return None


def parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when its parent dies (Linux only).

    It runs in the forked child between fork and exec, where only async-signal-safe
    work is wise: it calls one libc function resolved beforehand in the parent and
    reads the parent pid. If the parent died before ``prctl`` took effect, the
    child kills itself rather than run unsupervised.

    The kernel sends the signal when the *thread* that forked the child exits;
    asyncio forks from the event loop's thread, which lives as long as the node.
    The signal reaches the direct child only (the kernel clears it on fork).
    Processes the command forks are stopped through the group, which takes a
    living node; after a SIGKILL of the node they run on unless they exit with
    their parent or die of SIGPIPE writing to the dead node's pipe. A command
    that forks long-lived helpers should exec its main program last, or stop
    its helpers when its parent goes away.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return die_with_parent


def watch_exit(loop: asyncio.AbstractEventLoop, popen: subprocess.Popen, on_exit: Callable[[], None]) -> None:
    """Reap ``popen`` once it exits (its ``returncode`` is then set), then call ``on_exit`` on the loop.

    A pidfd (Linux 5.3) becomes readable when the process exits: the loop watches it
    like any file. Elsewhere a thread waits for the process, as asyncio's child
    watcher does on Python 3.11.
    """
    try:
        pidfd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        pidfd = None
    if pidfd is None:
        def wait_in_thread() -> None:
            popen.wait()
            try:
                loop.call_soon_threadsafe(on_exit)
            except RuntimeError:  # the loop was closed meanwhile
                pass

        threading.Thread(target=wait_in_thread, name=f"wait for pid {popen.pid}", daemon=True).start()
        return

    def reap() -> None:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        popen.wait()  # it has exited: returns at once
        on_exit()

    loop.add_reader(pidfd, reap)


def describe_exit(returncode: int) -> str:
    """``exit code N`` or ``killed by signal SIGX`` (asyncio reports a signal as ``-N``)."""
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by signal {name}"
