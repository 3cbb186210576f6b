"""The command watchdog: a process that stops command groups whose lease ran out, whatever the node does.

The process tests talk to a real ``python -m scheduler.watchdog`` through the node's
``Watchdog`` handle and watch real process groups; since nothing reports what the watchdog
did not do, a "canary" group with a later deadline tells when it has acted. The ``Keeper``
tests drive the watchdog's logic in this process, to set up what a process cannot (a pid
given to another process).
"""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from scheduler.executors import CommandExecutor
from scheduler.model import Outcome
from scheduler.watchdog import Keeper, Watchdog

from executor_support import alive, eventually, pid_written, read_pid, spy_on_starts
from tests.support.wait import wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc are tested on Linux")

GRACE = 0.5
LATER = 60.0  # seconds: a deadline no test waits for


@pytest.fixture
def watchdog():
    dog = Watchdog()
    dog.start()
    wait_until(lambda: dog.running, timeout=30, what="the watchdog to serve")
    yield dog
    dog.close()


@pytest.fixture
def groups():
    """Start commands in process groups of their own (as the executor does); kill what is left at the end."""
    started: list[subprocess.Popen] = []

    def start(shell: str, *, run: str | None = None) -> subprocess.Popen:
        env = None if run is None else {**os.environ, "SCHEDULER_RUN_ID": run}  # as the executor starts a run
        process = subprocess.Popen(["/bin/sh", "-c", shell], start_new_session=True, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:  # not reaped yet: its group id cannot be anyone else's
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def in_(seconds: float) -> float:
    return time.monotonic() + seconds


def guard(dog: Watchdog, process: subprocess.Popen, deadline: float, grace: float = GRACE) -> None:
    dog.guard(process.pid, deadline, grace, task="t", run=f"t:{process.pid}")


def ended(process: subprocess.Popen, within: float = 15) -> int:
    return process.wait(timeout=within)


# -- the watchdog process ---------------------------------------------------------------------


def test_a_passed_deadline_terminates_the_whole_group(watchdog, groups, tmp_path):
    process = groups(f"sleep 60 & echo $! > {tmp_path / 'child'}; exec sleep 60")
    guard(watchdog, process, in_(0.2))

    assert ended(process) == -signal.SIGTERM
    wait_until(lambda: pid_written(tmp_path / "child"))
    wait_until(lambda: not alive(read_pid(tmp_path / "child")), what="the leader's child to end too")


def test_a_group_ignoring_sigterm_gets_sigkill_after_the_grace(watchdog, groups, tmp_path):
    marker = tmp_path / "terminated"
    process = groups(f"trap 'touch {marker}' TERM; while true; do sleep 0.05; done")
    guard(watchdog, process, in_(0.2))

    assert ended(process) == -signal.SIGKILL
    assert marker.exists()  # SIGTERM came first


def test_a_renewal_postpones_the_stop(watchdog, groups):
    renewed, canary = groups("exec sleep 60"), groups("exec sleep 60")
    guard(watchdog, renewed, in_(0.3))
    watchdog.renew(renewed.pid, in_(LATER))
    guard(watchdog, canary, in_(0.6))

    ended(canary)  # the watchdog acted on a deadline later than the renewed one's first
    assert renewed.poll() is None


def test_a_released_group_is_never_signalled(watchdog, groups):
    released, canary = groups("exec sleep 60"), groups("exec sleep 60")
    guard(watchdog, released, in_(0.3))
    watchdog.release(released.pid)
    guard(watchdog, canary, in_(0.6))

    ended(canary)
    assert released.poll() is None


def test_a_command_registers_its_group_before_it_runs(watchdog):
    """The registration a command makes between fork and exec: a node frozen at once cannot leave it unguarded."""
    register = watchdog.preexec_registration(in_(0.2), GRACE, task="t", run="t:1")
    process = subprocess.Popen(["sleep", "60"], start_new_session=True, preexec_fn=register)
    try:
        assert ended(process) == -signal.SIGTERM  # the node never called guard()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_when_the_node_goes_the_watchdog_stops_what_it_guards_and_exits(groups, tmp_path):
    """The leader gets SIGKILL at once (the parent-death signal), the rest of its group SIGTERM."""
    dog = Watchdog()
    dog.start()
    wait_until(lambda: dog.running, timeout=30, what="the watchdog to serve")
    guarded = groups(f"sleep 60 & echo $! > {tmp_path / 'child'}; trap '' TERM; exec sleep 60")
    wait_until(lambda: pid_written(tmp_path / "child"))
    guard(dog, guarded, in_(LATER), grace=LATER)
    watchdog_pid = dog.pid

    dog.close()  # the node's end of the socket closes, as when the node dies

    assert ended(guarded) == -signal.SIGKILL  # it ignores SIGTERM, and the grace is a minute
    wait_until(lambda: not alive(read_pid(tmp_path / "child")), what="the leader's child to end on SIGTERM")
    assert not alive(watchdog_pid)


def test_a_command_the_node_never_named_is_stopped_at_its_deadline(watchdog, groups):
    """The node expects a run, starts it, then freezes before it tells the watchdog its group."""
    watchdog.expect(in_(0.3), GRACE, task="t", run="t:expected")
    other_run = groups("exec sleep 60", run="t:other")
    expected = groups("exec sleep 60", run="t:expected")
    canary = groups("exec sleep 60")
    guard(watchdog, canary, in_(0.6))

    assert ended(expected) == -signal.SIGTERM
    ended(canary)
    assert other_run.poll() is None, "only the expected run's group is stopped"


def test_a_command_whose_node_died_before_naming_it_is_stopped(groups):
    dog = Watchdog()
    dog.start()
    wait_until(lambda: dog.running, timeout=30, what="the watchdog to serve")
    dog.expect(in_(LATER), LATER, task="t", run="t:orphan")
    process = groups("trap '' TERM; exec sleep 60", run="t:orphan")
    wait_until(lambda: process_environ_set(process.pid), what="the command to exec")

    dog.close()  # the node dies between the start of the command and its guard()

    assert ended(process) == -signal.SIGKILL


def process_environ_set(pid: int) -> bool:
    with open(f"/proc/{pid}/environ", "rb") as file:
        return b"SCHEDULER_RUN_ID=t:orphan" in file.read()


def test_an_expected_command_that_did_not_start_is_forgotten():
    keeper = Keeper()
    keeper.handle({"op": "expect", "run": "t:1", "deadline": in_(LATER), "grace": GRACE, "task": "t"})
    keeper.handle({"op": "forget", "run": "t:1"})
    assert keeper.expected == {} and keeper.wake_at(time.monotonic()) is None


def test_the_guard_of_an_expected_command_resolves_it(groups):
    keeper = Keeper()
    process = groups("exec sleep 60", run="t:1")
    keeper.handle({"op": "expect", "run": "t:1", "deadline": in_(LATER), "grace": GRACE, "task": "t"})
    keeper.handle({"op": "watch", "pgid": process.pid, "deadline": in_(LATER), "grace": GRACE, "task": "t", "run": "t:1"})
    assert keeper.expected == {} and set(keeper.guards) == {process.pid}


def test_a_watchdog_that_dies_is_replaced_and_told_what_it_guards(watchdog, groups, caplog):
    process = groups("exec sleep 60")
    guard(watchdog, process, in_(2.0))
    first = watchdog.pid
    os.kill(first, signal.SIGKILL)

    wait_until(lambda: watchdog.running and watchdog.pid != first, timeout=30, what="a new watchdog")
    assert ended(process) == -signal.SIGTERM  # only the replacement was there to do it
    assert f"the watchdog process {first} exited" in caplog.text


# -- pid reuse and reaped leaders (the watchdog's logic, in this process) ------------------------


def watch(keeper: Keeper, process: subprocess.Popen, deadline: float) -> None:
    keeper.handle({"op": "watch", "pgid": process.pid, "deadline": deadline, "grace": GRACE, "task": "t", "run": "r"})


def test_a_pid_now_held_by_another_process_is_never_signalled(groups):
    keeper = Keeper()
    process = groups("exec sleep 60")
    watch(keeper, process, in_(-1))
    keeper.guards[process.pid].leader_start -= 1  # as if the leader had ended and its pid gone to this process

    keeper.act(time.monotonic())

    assert process.poll() is None and alive(process.pid)
    assert keeper.guards == {}


def test_a_group_whose_leader_was_reaped_is_left_to_the_node(groups, tmp_path):
    keeper = Keeper()
    process = groups(f"sleep 60 & echo $! > {tmp_path / 'child'}")
    watch(keeper, process, in_(-1))
    assert ended(process) == 0  # reaped by its parent, as a running node does
    child = read_pid(tmp_path / "child")

    try:
        keeper.act(time.monotonic())

        assert alive(child), "the node kills what its commands leave behind, not the watchdog"
        assert keeper.guards == {}
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_leader_not_yet_reaped_still_holds_its_group(groups, tmp_path):
    """A frozen node reaps nothing: its command's leader may be a zombie while its children run on."""
    keeper = Keeper()
    process = groups(f"sleep 60 & echo $! > {tmp_path / 'child'}")
    watch(keeper, process, in_(-1))
    wait_until(lambda: pid_written(tmp_path / "child") and not alive(process.pid))  # a zombie
    child = read_pid(tmp_path / "child")

    keeper.act(time.monotonic())

    wait_until(lambda: not alive(child), what="the group to be stopped")


def test_a_command_that_ended_before_it_was_registered_is_not_guarded():
    keeper = Keeper()
    process = subprocess.Popen(["true"], start_new_session=True)
    process.wait()
    watch(keeper, process, in_(LATER))
    assert keeper.guards == {}


# -- the command executor with its watchdog ---------------------------------------------------


@pytest.fixture
def executor(watchdog):
    return CommandExecutor(grace_period=GRACE, control_poll=0.02, watchdog=watchdog)


async def test_a_command_whose_lease_runs_out_is_stopped_as_a_lost_lease(make_ctx, executor):
    ctx = make_ctx({"command": ["sleep", "60"]}, lease_deadline=in_(0.3))
    result = await executor.execute(ctx)
    assert result.outcome is Outcome.LEASE_LOST and ctx.cancel_reason is Outcome.LEASE_LOST
    assert "the watchdog stopped it" in result.error


async def test_a_renewed_lease_lets_the_command_finish(make_ctx, executor, tmp_path):
    pid_file, go = tmp_path / "pid", tmp_path / "go"
    ctx = make_ctx({"shell": f"echo $$ > {pid_file}; while [ ! -e {go} ]; do sleep 0.02; done"}, lease_deadline=in_(0.5))
    first_deadline = ctx.lease_deadline
    run = asyncio.ensure_future(executor.execute(ctx))
    await eventually(lambda: pid_written(pid_file) and read_pid(pid_file) in executor.watchdog.guarded)
    ctx.renew_lease(in_(LATER))
    await eventually(lambda: time.monotonic() > first_deadline + 0.5)  # past the first deadline: it held
    go.touch()
    result = await run
    assert result.outcome is Outcome.SUCCESS


async def test_while_the_watchdog_serves_a_command_starts_without_a_preexec_fn(make_ctx, executor, monkeypatch):
    """A preexec_fn makes Python fork the node rather than vfork it: the slow start of a command."""
    preexec_fns = spy_on_starts(monkeypatch)
    result = await executor.execute(make_ctx({"command": ["true"]}, lease_deadline=in_(LATER)))
    assert result.outcome is Outcome.SUCCESS
    assert preexec_fns == [(["true"], None)]


async def test_a_command_that_cannot_start_is_no_longer_expected(make_ctx, executor):
    result = await executor.execute(make_ctx({"command": ["/nonexistent/program"]}, lease_deadline=in_(LATER)))
    assert result.outcome is Outcome.FAILURE
    assert executor.watchdog._expected == {} and executor.watchdog.guarded == frozenset()


async def test_a_lease_that_ran_out_before_the_start_starts_nothing(make_ctx, executor, tmp_path):
    ctx = make_ctx({"shell": f"touch {tmp_path / 'ran'}"}, lease_deadline=in_(-0.1))
    result = await executor.execute(ctx)
    assert result.outcome is Outcome.LEASE_LOST
    assert not (tmp_path / "ran").exists()
