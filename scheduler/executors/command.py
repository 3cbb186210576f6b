"""The ``command`` executor: a program (argv) or ``/bin/sh -c`` in its own process group.

Output (stdout and stderr merged) is read continuously and only its tail is
kept. The run's environment carries the ``SCHEDULER_*`` variables of the
DESIGN's "Python builder" section, and the process reports progress through
its control file (see ``control``). A stop (timeout, cancel, lease lost)
sends SIGTERM to the whole group, waits up to the grace period for every
process of the group to end, then sends SIGKILL. When the command exits on its
own, processes it left behind in its group are killed too: a run ends with
all of its processes.

A run holding a lease is also guarded by the node's watchdog process (see
``scheduler.watchdog``), which stops the group the same way when the lease
runs out without renewal, even while the node itself is frozen.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from ..groups import group_alive, signal_group
from ..model import Outcome
from ..spec import RunSpec, thaw, utc_iso
from ..watchdog import Watchdog, node_watchdog
from .base import OUTPUT_LIMIT, Execution, RunContext, stop_message, text_tail, wait_or_stop
from .control import ControlReader
from .control_dir import ControlDir
from .processes import describe_exit, parent_death_signal, watch_exit

logger = logging.getLogger(__name__)

GROUP_POLL = 0.05  # seconds between checks that a signalled group has ended
OUTPUT_DRAIN_LIMIT = 2.0  # seconds to read what is left in the pipe once the group is gone


class CommandExecutor:
    """Runs ``spec.run.command`` / ``spec.run.shell``; stateless, one instance serves every run."""

    def __init__(
        self,
        *,
        grace_period: float = 10.0,
        output_limit: int = OUTPUT_LIMIT,
        control_poll: float = 0.15,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.grace_period = grace_period
        self.output_limit = output_limit
        self.control_poll = control_poll
        self._watchdog = watchdog  # None: this process's own, started on first use
        self._control_dir = ControlDir()  # private, made on first use; holds the runs' control files

    @property
    def watchdog(self) -> Watchdog:
        return self._watchdog or node_watchdog()

    async def execute(self, ctx: RunContext) -> Execution:
        run = ctx.spec.run
        if run is None or run.kind != "command":
            return Execution(Outcome.FAILURE, error=f"task {ctx.task_id!r} has no command or shell to run")
        if run.working_dir is not None and not os.path.isdir(run.working_dir):
            return Execution(Outcome.FAILURE, error=f"working directory {run.working_dir!r} does not exist")
        control_file = self._new_control_file()
        try:
            return await self._run(ctx, run, control_file)
        finally:
            control_file.unlink(missing_ok=True)

    def _new_control_file(self) -> Path:
        """An empty control file of its own for a run, in this executor's private temporary directory.

        One directory serves every run: making and removing a directory per run
        costs a fifth of a short command's run on ext4 (see ``control_dir``).
        """
        fd, path = tempfile.mkstemp(suffix=".control.jsonl", dir=self._control_dir.path())
        os.close(fd)
        return Path(path)

    async def _run(self, ctx: RunContext, run: RunSpec, control_file: Path) -> Execution:
        argv = list(run.command) if run.command is not None else ["/bin/sh", "-c", run.shell or ""]
        if ctx.lease_lapsed:  # the node stalled since the claim: a peer may be running the task already
            ctx.cancel(Outcome.LEASE_LOST)
            return Execution(Outcome.LEASE_LOST, error="the lease ran out before the command started")
        watchdog = self.watchdog if ctx.lease_deadline is not None else None
        # A preexec_fn makes Python fork the node instead of vfork: milliseconds per start,
        # most of a command run's cost. So while the watchdog serves, the command starts
        # without one: the watchdog expects it before the fork, and gives it the parent-death
        # signal when the node dies (see scheduler.watchdog). Otherwise the new process
        # sets its parent-death signal (and registers with a watchdog) itself.
        fast_start = watchdog is not None and watchdog.running
        if fast_start:
            watchdog.expect(ctx.lease_deadline, self.grace_period, task=ctx.task_id, run=ctx.run_id)
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=run.working_dir,
                env=command_env(ctx, run, control_file),
                start_new_session=True,
                preexec_fn=None if fast_start else self._preexec(ctx, watchdog),
            )
        except OSError as exc:
            if fast_start:
                watchdog.unexpect(ctx.run_id)
            return Execution(Outcome.FAILURE, error=f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        pgid = popen.pid  # a new session: the command leads its own group
        logger.debug("run %s: started %s as pid %d", ctx.run_id, argv, pgid)
        unguard = self._guard(ctx, watchdog, pgid)
        loop = asyncio.get_running_loop()
        process = _Process(loop, self.output_limit)
        # Not asyncio's subprocess transport: on Python 3.11 its child watcher starts a
        # thread per process to wait for it, a tenth of a short command's run.
        watch_exit(loop, popen, process.process_exited)
        output: asyncio.BaseTransport | None = None
        control = ControlReader(control_file, ctx)
        follower = asyncio.create_task(self._follow(control))
        how = ""
        try:
            output, _ = await loop.connect_read_pipe(lambda: process, popen.stdout)
            if await wait_or_stop(ctx, process.exited, run.timeout):
                how = await self._stop_group(pgid, process)
            elif ctx.lease_lapsed and popen.returncode != 0:
                # The watchdog stopped it: the lease was not renewed in time (a frozen node,
                # a store out of reach) and a peer may be running the task already.
                ctx.cancel(Outcome.LEASE_LOST)
                how = "the watchdog stopped it when the lease ran out without renewal"
                logger.warning("run %s: %s", ctx.run_id, how, extra={"task": ctx.task_id, "run": ctx.run_id})
        finally:
            follower.cancel()
            if not process.exited.done():  # this coroutine was cancelled: leave nothing running
                signal_group(pgid, signal.SIGKILL)
                await process.exited
            await self._kill_leftovers(ctx, pgid)
            unguard()  # the group is gone: it must never be signalled again
            control.read_new(final=True)
            await self._close(ctx, output, popen, process)
        returncode = popen.returncode
        tail = text_tail(bytes(process.output), self.output_limit)
        if how:
            return Execution(ctx.cancel_reason, returncode, tail, f"{stop_message(ctx)}; {how}")
        if returncode == 0:
            return Execution(Outcome.SUCCESS, 0, tail)
        return Execution(Outcome.FAILURE, returncode, tail, describe_exit(returncode))

    def _preexec(self, ctx: RunContext, watchdog: Watchdog | None) -> Callable[[], None] | None:
        """What the new process does before exec: die with the node, register its group with the watchdog."""
        steps = [parent_death_signal()]
        if watchdog is not None:
            steps.append(watchdog.preexec_registration(
                ctx.lease_deadline, self.grace_period, task=ctx.task_id, run=ctx.run_id
            ))
        steps = [step for step in steps if step is not None]
        if not steps:
            return None

        def before_exec() -> None:
            for step in steps:
                step()

        return before_exec

    def _guard(self, ctx: RunContext, watchdog: Watchdog | None, pgid: int) -> Callable[[], None]:
        """Hand the group and its lease deadline to the watchdog; returns what ends the guard."""
        if watchdog is None:
            return lambda: None
        watchdog.guard(pgid, ctx.lease_deadline, self.grace_period, task=ctx.task_id, run=ctx.run_id)
        stop_renewals = ctx.on_lease_renewed(lambda deadline: watchdog.renew(pgid, deadline))

        def unguard() -> None:
            stop_renewals()
            watchdog.release(pgid)

        return unguard

    async def _follow(self, control: ControlReader) -> None:
        while True:
            control.read_new()
            await asyncio.sleep(self.control_poll)

    async def _stop_group(self, pgid: int, process: _Process) -> str:
        """SIGTERM the group, give it the grace period, then SIGKILL it. Says how it ended."""
        signal_group(pgid, signal.SIGTERM)
        if await self._group_ended(pgid, process, self.grace_period):
            return "stopped with SIGTERM"
        signal_group(pgid, signal.SIGKILL)
        await process.exited
        return f"killed with SIGKILL after a {self.grace_period:g}s grace period"

    @staticmethod
    async def _group_ended(pgid: int, process: _Process, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        await asyncio.wait({process.exited}, timeout=within)
        if not process.exited.done():
            return False
        # The leader is gone; its children may still be handling SIGTERM. There is
        # no notification for a process group emptying, so it is polled.
        while await _group_alive(pgid):
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(GROUP_POLL)
        return True

    @staticmethod
    async def _kill_leftovers(ctx: RunContext, pgid: int) -> None:
        if await _group_alive(pgid):
            logger.warning("run %s: the command left processes in its group %d; killing them", ctx.run_id, pgid)
            signal_group(pgid, signal.SIGKILL)

    @staticmethod
    async def _close(
        ctx: RunContext, output: asyncio.BaseTransport | None, popen: subprocess.Popen, process: _Process
    ) -> None:
        if output is None:  # cancelled before the pipe was followed
            popen.stdout.close()
            return
        # Every writer of the pipe is dead unless a process left the group (setsid):
        # then the output is cut rather than waited for.
        await asyncio.wait({process.closed}, timeout=OUTPUT_DRAIN_LIMIT)
        if not process.closed.done():
            logger.warning("run %s: a process outside the group still holds the output open; output cut", ctx.run_id)
        output.close()


async def _group_alive(pgid: int) -> bool:
    """``group_alive`` without holding the loop.

    A group with no process left is known from one ``killpg`` (the usual end of a
    run); otherwise telling zombies from live members reads the stat of every
    process of the machine, which takes milliseconds and grows with the process
    count: that scan runs in a thread.
    """
    if not signal_group(pgid, 0):
        return False
    return await asyncio.to_thread(group_alive, pgid)


class _Process(asyncio.Protocol):
    """Keeps the last ``limit`` bytes of the output, whatever its length, and tells when the process exits.

    ``exited`` is set when the process exits (and has been reaped), ``closed`` once its
    output pipe is closed too (``asyncio.subprocess.Process.wait`` waits for both, which
    a background process holding the pipe open would delay indefinitely).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.output = bytearray()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._limit = limit

    def data_received(self, data: bytes) -> None:
        self.output += data
        if len(self.output) > self._limit:
            del self.output[: len(self.output) - self._limit]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def command_env(ctx: RunContext, run: RunSpec, control_file: Path) -> dict[str, str]:
    """The node's environment, then the spec's ``env``, then the run's ``SCHEDULER_*`` variables."""
    env = dict(os.environ)
    env.update(run.env)
    env.update(
        SCHEDULER_TASK_ID=ctx.task_id,
        SCHEDULER_RUN_ID=ctx.run_id,
        SCHEDULER_NODE_ID=ctx.node_id,
        SCHEDULER_FENCE=str(ctx.fence),
        SCHEDULER_SCHEDULED_FOR=utc_iso(ctx.scheduled_for),
        SCHEDULER_ATTEMPT=str(ctx.attempt),
        # YAML may hold dates: they travel as their ISO text.
        SCHEDULER_PARAMETERS=json.dumps(thaw(ctx.parameters), default=str),
        SCHEDULER_CHECKPOINT=json.dumps(ctx.checkpoint_data or {}, default=str),
        SCHEDULER_CONTROL_FILE=str(control_file),
        SCHEDULER_TRIGGER=json.dumps(thaw(ctx.trigger or {}), default=str),
    )
    return env
