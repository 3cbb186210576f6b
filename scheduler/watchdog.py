"""The command watchdog: a process beside the node that stops commands whose lease ran out.

A run's lease is renewed from the node's event loop. A frozen node (SIGSTOP, a long GC
pause) or one cut off from the store renews nothing: once the lease has expired a peer
claims the task and starts the next attempt, while the node's command runs on. Fencing
refuses the late node's writes, not its command's side effects, and nothing inside a
frozen node acts. So each node starts this small process (``python -m
scheduler.watchdog``): it holds the lease deadline of every running command and, when
one passes without renewal, sends SIGTERM to the command's process group, then SIGKILL
after the executor's kill grace. (A pause of the whole machine pauses the watchdog too:
it acts when the machine resumes.)

Deadlines are ``time.monotonic()`` instants: on Linux CLOCK_MONOTONIC is one clock for
the whole machine, so the node and the watchdog read the same time, and a step of the
wall clock changes nothing. A deadline is the node's estimate of the lease expiry (see
``RunContext.lease_deadline``), pushed back by each successful renewal.

The node talks to the watchdog over a SOCK_SEQPACKET socket pair, the watchdog's
standard input, one JSON message per packet::

    {"op": "watch", "pgid": 4242, "deadline": 1234.5, "grace": 10, "task": "t", "run": "t:1:1"}
    {"op": "renew", "pgid": 4242, "deadline": 1244.5}
    {"op": "forget", "pgid": 4242}

    {"op": "expect", "run": "t:1:1", "deadline": 1234.5, "grace": 10, "task": "t"}
    {"op": "forget", "run": "t:1:1"}

A command must never run unguarded, even if the node freezes or dies right after forking
it, before it could say which group to watch. So before it starts a command the node
says which run it *expects* to start; the ``watch`` of that run's group resolves it (a
``forget`` of the run drops it when the command could not start). An expectation still
unresolved at its deadline, or when the node goes, is resolved by the watchdog itself:
it stops the groups led by a session leader whose environment names the run
(``SCHEDULER_RUN_ID``), which is how the node started it. (Commands started while no
watchdog serves register themselves instead, between fork and exec, with
``Watchdog.preexec_registration``: the slower start Python does for a ``preexec_fn``.)
The node sends its renewals and forgets a group when the run is over. The node's sends
never block its event loop: a watchdog that stops reading is replaced.

- Pid reuse: on the first message about a group, the watchdog records its leader's start
  time, and signals the group only while that same process holds the pid, running or
  exited but not yet reaped (a frozen node reaps nothing). Meanwhile no other process or
  group can have that number. Once the node has reaped the leader, the run is the node's
  business again (it kills what the command left in its group).
- The node dies: its end of the socket closes; the watchdog stops the groups it still
  holds (SIGTERM, grace, SIGKILL) and exits. Each leader gets SIGKILL at once first: the
  parent-death signal the kernel sends to the commands started with a ``preexec_fn``, given
  here to those started without one. It ignores SIGINT, SIGTERM and SIGHUP and
  runs in a session of its own: the socket alone decides when it ends.
- The watchdog dies: the node sees it exit, logs it, starts a new one and tells it every
  group it guards; until then the node is not ready (``GET /readyz``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import select
import signal
import site
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .groups import group_alive, process_stat, session_leaders_with_env, signal_group
from .logs import configure_logging, configured_format

log = logging.getLogger("scheduler.watchdog")  # not __name__: "__main__" in the watchdog process

PACKET_LIMIT = 4096  # bytes; a message is about 150
READY = b"ready"  # the watchdog's one message to the node: it serves
GROUP_POLL = 0.05  # seconds between checks that a signalled group has ended
RESTART_DELAY = 0.5  # seconds between a watchdog's death and the start of the next one
START_LIMIT = 30.0  # seconds a new watchdog has to say it serves (Python's start on a loaded machine)


# -- the watchdog process ----------------------------------------------------------------------


@dataclass
class Guard:
    """One running command the watchdog stops if its lease runs out."""

    pgid: int
    leader_start: int  # the leader's start time: tells it apart from a later process given the same pid
    deadline: float  # time.monotonic() at which the lease runs out unless renewed
    grace: float  # seconds between SIGTERM and SIGKILL
    task: str
    run: str
    kill_at: float | None = None  # set with the SIGTERM: SIGKILL then, if the group still runs


@dataclass
class Expected:
    """A command the node is starting and has not yet named the group of (see the module's docstring)."""

    run: str
    task: str
    deadline: float
    grace: float


class Keeper:
    """The watchdog's guards, and what it does when their deadlines pass."""

    def __init__(self) -> None:
        self.guards: dict[int, Guard] = {}
        self.expected: dict[str, Expected] = {}  # by run id
        self.node_gone = False

    def handle(self, message: dict[str, Any]) -> None:
        op, run = message["op"], str(message.get("run", ""))
        if op == "expect":
            self.expected[run] = Expected(
                run, str(message.get("task", "")), float(message["deadline"]), float(message["grace"])
            )
            return
        if "pgid" not in message:
            if op == "forget":  # the expected command did not start
                self.expected.pop(run, None)
            return
        pgid = int(message["pgid"])
        guard = self.guards.get(pgid)
        if op == "watch":
            self.expected.pop(run, None)  # the node names the group: nothing to look for
            leader = process_stat(pgid)
            if leader is None or leader.pgrp != pgid:  # the command already ended
                self.guards.pop(pgid, None)
            elif guard is None or guard.leader_start != leader.start_time:
                self.guards[pgid] = Guard(
                    pgid, leader.start_time, float(message["deadline"]), float(message["grace"]),
                    str(message.get("task", "")), str(message.get("run", "")),
                )
            else:  # the node registers a command that registered itself: the same group
                self._renew(guard, float(message["deadline"]))
        elif op == "renew" and guard is not None:
            self._renew(guard, float(message["deadline"]))
        elif op == "forget":
            self.guards.pop(pgid, None)

    @staticmethod
    def _renew(guard: Guard, deadline: float) -> None:
        if guard.kill_at is None:  # a stop, once begun, is never called off
            guard.deadline = max(guard.deadline, deadline)

    def wake_at(self, now: float) -> float | None:
        """When ``act`` has something to do next (a deadline, a group to check or kill)."""
        times = [g.deadline if g.kill_at is None else min(g.kill_at, now + GROUP_POLL) for g in self.guards.values()]
        times.extend(expected.deadline for expected in self.expected.values())
        return min(times, default=None)

    def act(self, now: float) -> None:
        for expected in [e for e in self.expected.values() if now >= e.deadline]:
            del self.expected[expected.run]
            self._guard_expected(expected)
        for guard in list(self.guards.values()):
            if guard.kill_at is None:
                if now < guard.deadline:
                    continue
                if self._holds(guard) and signal_group(guard.pgid, signal.SIGTERM):
                    if self.node_gone:  # the parent-death signal (a leader SIGKILLed may be reaped at once)
                        _kill_leader(guard.pgid)
                    why = "the node is gone" if self.node_gone else "its lease ran out without renewal"
                    log.warning(
                        "run %s of task %s: %s; SIGTERM to its process group %d",
                        guard.run, guard.task, why, guard.pgid, extra={"task": guard.task, "run": guard.run},
                    )
                    guard.kill_at = now + guard.grace
                else:
                    del self.guards[guard.pgid]  # the run ended meanwhile
            elif not self._holds(guard) or not group_alive(guard.pgid):
                del self.guards[guard.pgid]  # stopped, or reaped by the node, which has it in hand
            elif now >= guard.kill_at:
                signal_group(guard.pgid, signal.SIGKILL)
                log.warning(
                    "run %s of task %s: still running %gs after SIGTERM; SIGKILL to its process group %d",
                    guard.run, guard.task, guard.grace, guard.pgid, extra={"task": guard.task, "run": guard.run},
                )
                del self.guards[guard.pgid]

    def _guard_expected(self, expected: Expected) -> None:
        """Guard the groups of a run the node started but never named (it froze or died meanwhile)."""
        for leader in session_leaders_with_env("SCHEDULER_RUN_ID", expected.run):
            if leader.pid not in self.guards:
                self.guards[leader.pid] = Guard(
                    leader.pid, leader.start_time, expected.deadline, expected.grace, expected.task, expected.run
                )

    @staticmethod
    def _holds(guard: Guard) -> bool:
        """Whether the group's leader is still the process registered (running, or a zombie not yet reaped)."""
        leader = process_stat(guard.pgid)
        return leader is not None and leader.start_time == guard.leader_start

    def release_all(self) -> None:
        """The node is gone: stop every group still held, as if every deadline passed now."""
        self.node_gone = True
        now = time.monotonic()
        for guard in self.guards.values():
            guard.deadline = min(guard.deadline, now)
        for expected in self.expected.values():
            expected.deadline = min(expected.deadline, now)
        while self.guards or self.expected:
            self.act(time.monotonic())
            wake_at = self.wake_at(time.monotonic())
            if wake_at is not None:
                time.sleep(max(0.0, wake_at - time.monotonic()))


def _kill_leader(pgid: int) -> None:
    try:
        os.kill(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def serve(channel: socket.socket, keeper: Keeper) -> None:
    """Follow the node's messages and the deadlines until the node closes its end (or dies)."""
    channel.send(READY)
    while True:
        wake_at = keeper.wake_at(time.monotonic())
        timeout = None if wake_at is None else max(0.0, wake_at - time.monotonic())
        if select.select([channel], [], [], timeout)[0] and not _read_all(channel, keeper):
            break
        keeper.act(time.monotonic())
    keeper.release_all()


def _read_all(channel: socket.socket, keeper: Keeper) -> bool:
    """Apply every message waiting, so that no deadline is acted on before a renewal already sent. False at EOF."""
    while True:
        try:
            packet = channel.recv(PACKET_LIMIT, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        if not packet:
            return False
        try:
            keeper.handle(json.loads(packet))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("ignored a malformed message %r: %s", packet[:200], exc)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler.watchdog",
        description="Started by a scheduler node, which talks to it over standard input (a socket).",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    configure_logging("info", args.log_format)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    serve(socket.socket(fileno=sys.stdin.fileno()), Keeper())
    return 0


# -- the node's side ---------------------------------------------------------------------------


class Watchdog:
    """The node's handle on its watchdog process: starts it, replaces it, tells it deadlines.

    Its methods are called from the event loop (by the command executor, for each run)
    and do not block it: a message is one non-blocking send on a socket (at worst a call
    waits the few milliseconds a replacement watchdog takes to fork). A monitor thread
    waits for the process; when it exits, the thread logs it, starts a new one and tells
    it every group still guarded.
    """

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = list(command or [sys.executable, "-m", "scheduler.watchdog"])
        self._lock = threading.Lock()
        self._guarded: dict[int, dict[str, Any]] = {}  # pgid -> its latest "watch": what a new watchdog is told
        self._expected: dict[str, dict[str, Any]] = {}  # run -> its "expect", until its group is guarded
        self._channel: socket.socket | None = None  # the node's end; None while no watchdog runs
        self._process: subprocess.Popen | None = None
        self._serving = False  # the current watchdog said it reads its messages
        self._started = False
        self._closed = False

    @property
    def running(self) -> bool:
        """Whether a watchdog process serves now (the node is not ready otherwise)."""
        return self._serving

    async def until_running(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) for the watchdog to serve; whether it does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.running and loop.time() < deadline:
            await asyncio.sleep(0.01)  # set by the monitor thread, which has no loop to wake
        return self.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self.running else None

    @property
    def guarded(self) -> frozenset[int]:
        """The process groups guarded now."""
        with self._lock:
            return frozenset(self._guarded)

    def start(self) -> None:
        """Start the watchdog process (once; later calls do nothing); it is kept running from then on."""
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            process = self._try_spawn()
        threading.Thread(target=self._keep_running, args=(process,), name="watchdog monitor", daemon=True).start()

    def expect(self, deadline: float, grace: float, *, task: str, run: str) -> None:
        """The command of ``run`` is about to start (without a ``preexec_fn``): guard it even before ``guard``.

        Its environment must set ``SCHEDULER_RUN_ID`` to ``run``: that is how the watchdog
        finds it if the node freezes or dies before it calls ``guard`` (or ``unexpect``).
        """
        message = {"op": "expect", "run": run, "deadline": deadline, "grace": grace, "task": task}
        self.start()
        with self._lock:
            self._expected[run] = message
            self._send(message)

    def unexpect(self, run: str) -> None:
        """The command of ``run`` expected did not start."""
        with self._lock:
            if self._expected.pop(run, None) is not None:
                self._send({"op": "forget", "run": run})

    def guard(self, pgid: int, deadline: float, grace: float, *, task: str, run: str) -> None:
        """Stop the group ``pgid`` at ``deadline`` (SIGTERM, then SIGKILL ``grace`` seconds later)."""
        message = {"op": "watch", "pgid": pgid, "deadline": deadline, "grace": grace, "task": task, "run": run}
        self.start()
        with self._lock:
            self._expected.pop(run, None)  # the watchdog drops it on this message too
            self._guarded[pgid] = message
            self._send(message)

    def renew(self, pgid: int, deadline: float) -> None:
        with self._lock:
            if pgid in self._guarded:
                self._guarded[pgid]["deadline"] = deadline
                self._send({"op": "renew", "pgid": pgid, "deadline": deadline})

    def release(self, pgid: int) -> None:
        """The run of ``pgid`` is over: its group must never be signalled again."""
        with self._lock:
            if self._guarded.pop(pgid, None) is not None:
                self._send({"op": "forget", "pgid": pgid})

    def preexec_registration(self, deadline: float, grace: float, *, task: str, run: str) -> Callable[[], None]:
        """A step of a command's ``preexec_fn``: the new process registers its own group.

        It runs in the child after ``setsid`` (its pid is its group id) and before exec,
        so the watchdog knows the group before the command runs. It sends one packet,
        without blocking and ignoring failures (no watchdog at that moment): the node
        registers the group again once the start returns.
        """
        self.start()
        with self._lock:
            channel = self._channel
        text = json.dumps({"op": "watch", "deadline": deadline, "grace": grace, "task": task, "run": run})
        head = text[:-1].encode() + b', "pgid": '

        def register() -> None:
            if channel is not None:
                try:
                    channel.send(head + b"%d}" % os.getpid(), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                except OSError:
                    pass

        return register

    def close(self) -> None:
        """End the watchdog: it stops the groups still guarded and exits."""
        with self._lock:
            self._closed = True
            process, channel, self._channel = self._process, self._channel, None
        if channel is not None:
            channel.close()
        if process is not None:
            process.wait()

    # -- internals ------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        """Send without blocking (lock held); a watchdog that is not there gets the state when it starts."""
        if self._channel is None:
            return
        try:
            self._channel.send(json.dumps(message).encode(), socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
        except BlockingIOError:
            log.error("the watchdog process %d stopped reading its messages: replacing it", self._process.pid)
            self._process.kill()  # the monitor thread starts the next one, and tells it everything
            self._channel.close()
            self._channel = None
        except OSError:
            pass  # it exited: the monitor thread starts the next one

    def _try_spawn(self) -> subprocess.Popen | None:
        """Start a watchdog process and tell it every guarded group (lock held); None if it cannot start."""
        node_end, watchdog_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(
                [*self._command, "--log-format", configured_format()], stdin=watchdog_end, env=_child_env(),
                start_new_session=True,  # out of reach of the terminal's Ctrl-C and Ctrl-Z
            )
        except OSError as exc:
            log.error("cannot start the watchdog process (%s): %s", " ".join(self._command), exc)
            node_end.close()
            return None
        finally:
            watchdog_end.close()
        self._process, self._channel = process, node_end
        for message in [*self._expected.values(), *self._guarded.values()]:
            self._send(message)
        log.info("watchdog process %d guards the commands of this node", process.pid)
        return process

    def _keep_running(self, process: subprocess.Popen | None) -> None:
        """The monitor thread: wait for the watchdog process, start another when it exits."""
        while True:
            if process is not None:
                if self._await_ready():
                    self._serving = True
                elif process.poll() is None and not self._closed:
                    log.error("the watchdog process %d did not start serving within %gs", process.pid, START_LIMIT)
                    process.kill()
                returncode = process.wait()
                with self._lock:
                    self._serving = False
                    if self._closed:
                        return
                    if self._channel is not None:
                        self._channel.close()
                        self._channel = None
                log.error(
                    "the watchdog process %d exited (status %d): starting another; until it serves, the"
                    " commands of a frozen node outlive their leases", process.pid, returncode,
                )
            time.sleep(RESTART_DELAY)
            with self._lock:
                if self._closed:
                    return
                process = self._try_spawn()

    def _await_ready(self) -> bool:
        channel = self._channel
        try:
            return (
                channel is not None
                and bool(select.select([channel], [], [], START_LIMIT)[0])
                and channel.recv(PACKET_LIMIT) == READY
            )
        except (OSError, ValueError):  # closed meanwhile (close())
            return False


def _child_env() -> dict[str, str] | None:
    """The node's environment, plus the directory holding this package when it is not installed."""
    package_root = str(Path(__file__).resolve().parents[1])
    if package_root in (*site.getsitepackages(), site.getusersitepackages()):
        return None  # installed: found as it is (putting site-packages first would shadow the standard library)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}


_node_watchdog: Watchdog | None = None
_node_watchdog_lock = threading.Lock()


def node_watchdog() -> Watchdog:
    """This process's watchdog, created on first use: one node (or embedded scheduler) per process."""
    global _node_watchdog
    with _node_watchdog_lock:
        if _node_watchdog is None:
            _node_watchdog = Watchdog()
        return _node_watchdog


if __name__ == "__main__":
    sys.exit(main())
