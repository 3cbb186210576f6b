import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from pathlib import Path

import pytest

from scheduler.executors import CommandExecutor, Progress
from scheduler.model import Outcome

from executor_support import alive, eventually, pid_written, read_pid, spy_on_starts

REPO = Path(__file__).resolve().parents[2]
GRACE = 0.3
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups and prctl are tested on Linux")


@pytest.fixture
def executor():
    return CommandExecutor(grace_period=GRACE, control_poll=0.02)


async def test_success_with_output(make_ctx, executor):
    result = await executor.execute(make_ctx({"command": ["/bin/echo", "hello", "world"]}))
    assert (result.outcome, result.exit_code, result.output, result.error) == (Outcome.SUCCESS, 0, "hello world\n", None)


async def test_shell_merges_stderr_and_reports_the_exit_code(make_ctx, executor):
    result = await executor.execute(make_ctx({"shell": "echo out; echo err >&2; exit 3"}))
    assert (result.outcome, result.exit_code, result.error) == (Outcome.FAILURE, 3, "exit code 3")
    assert result.output == "out\nerr\n"


async def test_death_by_signal_is_named(make_ctx, executor):
    result = await executor.execute(make_ctx({"shell": "kill -KILL $$"}))
    assert (result.outcome, result.exit_code, result.error) == (Outcome.FAILURE, -9, "killed by signal SIGKILL")


@pytest.mark.parametrize(
    ("run", "error"),
    [
        ({"command": ["/no/such/program"]}, "cannot start '/no/such/program': No such file or directory"),
        ({"command": ["/bin/true"], "workingDir": "/no/such/dir"}, "working directory '/no/such/dir' does not exist"),
    ],
)
async def test_a_command_that_cannot_start_is_a_failed_run(make_ctx, executor, run, error):
    result = await executor.execute(make_ctx(run))
    assert (result.outcome, result.error) == (Outcome.FAILURE, error)


async def test_a_file_that_is_not_executable_is_a_failed_run(make_ctx, executor, tmp_path):
    program = tmp_path / "script.sh"
    program.write_text("echo hi\n")
    result = await executor.execute(make_ctx({"command": [str(program)]}))
    assert (result.outcome, result.error) == (Outcome.FAILURE, f"cannot start {str(program)!r}: Permission denied")


async def test_environment_and_working_directory(make_ctx, executor, tmp_path, monkeypatch):
    # The node's environment passes through: drop the SCHEDULER_* variables this test run may hold
    # (SCHEDULER_TEST_MONGO_URI under scripts/with-mongo), so that only the run's own are seen.
    for name in [name for name in os.environ if name.startswith("SCHEDULER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FROM_NODE", "node-value")
    script = (
        "import json, os; print(json.dumps({'cwd': os.getcwd(), "
        "'env': {k: v for k, v in os.environ.items() if k.startswith(('SCHEDULER_', 'FROM_', 'LOG_'))}}))"
    )
    ctx = make_ctx(
        {"command": [sys.executable, "-c", script], "env": {"LOG_LEVEL": "info"}, "workingDir": str(tmp_path)},
        parameters={"target": "CRM", "batch": 1000},
        checkpoint={"offset": 42},
    )
    result = await executor.execute(ctx)
    seen = json.loads(result.output)
    assert seen["cwd"] == str(tmp_path)
    env = seen["env"]
    control_file = env.pop("SCHEDULER_CONTROL_FILE")
    assert env == {
        "FROM_NODE": "node-value",
        "LOG_LEVEL": "info",
        "SCHEDULER_TASK_ID": "job",
        "SCHEDULER_RUN_ID": "job:1772368200000:2",
        "SCHEDULER_NODE_ID": "node-a",
        "SCHEDULER_FENCE": "7",
        "SCHEDULER_SCHEDULED_FOR": "2026-03-01T12:30:00Z",
        "SCHEDULER_ATTEMPT": "2",
        "SCHEDULER_PARAMETERS": '{"target": "CRM", "batch": 1000}',
        "SCHEDULER_CHECKPOINT": '{"offset": 42}',
        "SCHEDULER_TRIGGER": "{}",  # not a chain's run
    }
    assert control_file.endswith(".control.jsonl")
    assert not Path(control_file).exists(), "the control file is removed after the run"


async def test_no_checkpoint_is_an_empty_object(make_ctx, executor):
    result = await executor.execute(make_ctx({"shell": 'printf %s "$SCHEDULER_CHECKPOINT"'}))
    assert result.output == "{}"


async def test_only_the_tail_of_a_large_output_is_kept_in_memory(make_ctx):
    executor = CommandExecutor(output_limit=1024)
    ctx = make_ctx({"shell": "yes 0123456789abcdef | head -c 20000000; printf THE-END"})
    tracemalloc.start()
    try:
        result = await executor.execute(ctx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.outcome is Outcome.SUCCESS
    assert len(result.output.encode()) == 1024
    assert result.output.endswith("THE-END") and "\n0123456789abcdef\n" in result.output
    assert peak < 2_000_000, f"20 MB of output took {peak} bytes of memory"


async def test_timeout_kills_the_whole_process_group(make_ctx, executor, tmp_path):
    # The shell starts a child shell, which starts a grandchild; all three share the group.
    script = (
        "sh -c 'echo $$ > child.pid; sleep 60 & echo $! > grandchild.pid; wait' & "
        "echo $$ > leader.pid; wait"
    )
    ctx = make_ctx({"shell": script, "workingDir": str(tmp_path), "timeout": "2s"})
    result = await executor.execute(ctx)
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == "timed out after 2s; stopped with SIGTERM"
    assert ctx.cancelled.is_set() and ctx.cancel_reason is Outcome.TIMEOUT
    pids = [read_pid(tmp_path / name) for name in ("leader.pid", "child.pid", "grandchild.pid")]
    await eventually(lambda: not any(alive(pid) for pid in pids))


async def test_cancel_sends_sigkill_after_the_grace_period_to_a_process_ignoring_sigterm(make_ctx, executor):
    def cancel_when_ready(ctx, progress):
        if progress.step == "ready":
            ctx.cancel(Outcome.CANCELLED)

    script = """trap '' TERM; echo '{"step": "ready"}' >> "$SCHEDULER_CONTROL_FILE"; exec sleep 60"""
    ctx = make_ctx({"shell": script}, on_report=cancel_when_ready)
    result = await executor.execute(ctx)
    assert (result.outcome, result.exit_code) == (Outcome.CANCELLED, -9)
    assert result.error == f"cancelled while running; killed with SIGKILL after a {GRACE:g}s grace period"


async def test_lease_loss_stops_a_cooperative_process_with_sigterm(make_ctx, executor):
    def lose_lease_when_ready(ctx, progress):
        if progress.step == "ready":
            ctx.cancel(Outcome.LEASE_LOST)

    script = """echo '{"step": "ready"}' >> "$SCHEDULER_CONTROL_FILE"; exec sleep 60"""
    result = await executor.execute(make_ctx({"shell": script}, on_report=lose_lease_when_ready))
    assert (result.outcome, result.exit_code) == (Outcome.LEASE_LOST, -15)
    assert result.error.endswith("; stopped with SIGTERM")


async def test_processes_left_behind_are_killed_when_the_command_exits(make_ctx, executor, tmp_path):
    # The background sleep would keep the output pipe open for a minute.
    ctx = make_ctx({"shell": "sleep 60 & echo $! > bg.pid; echo done", "workingDir": str(tmp_path)})
    result = await executor.execute(ctx)
    assert (result.outcome, result.output) == (Outcome.SUCCESS, "done\n")
    background = read_pid(tmp_path / "bg.pid")
    await eventually(lambda: not alive(background))


async def test_the_process_table_is_scanned_off_the_event_loop(make_ctx, executor, tmp_path, monkeypatch):
    # Telling a group's live members from zombies reads every process's stat: milliseconds the loop must not wait.
    import threading

    from scheduler import groups

    scans = []
    scan = groups._all_stats
    monkeypatch.setattr(groups, "_all_stats", lambda: scans.append(threading.current_thread()) or scan())
    ctx = make_ctx({"shell": "sleep 60 & echo $! > bg.pid; echo done", "workingDir": str(tmp_path)})
    result = await executor.execute(ctx)
    assert result.outcome is Outcome.SUCCESS
    await eventually(lambda: not alive(read_pid(tmp_path / "bg.pid")))
    assert scans, "the leftover background process was found without a scan"
    assert threading.current_thread() not in scans


async def test_control_file_lines_are_delivered_in_order(make_ctx, executor, tmp_path, caplog):
    # The second step is written in two parts; the process only completes it once
    # the first step has been delivered, so the reader surely saw the partial line.
    def acknowledge(ctx, progress):
        if progress.step == "one":
            (tmp_path / "ack").touch()

    script = textwrap.dedent(
        """\
        c="$SCHEDULER_CONTROL_FILE"
        echo '{"checkpoint": {"offset": 1}}' >> "$c"
        echo 'this is not json' >> "$c"
        printf '%s\\n%s' '{"step": "one", "details": {"rows": 5}}' '{"step": "tw' >> "$c"
        i=0; while [ ! -e ack ]; do i=$((i+1)); [ $i -gt 500 ] && exit 9; sleep 0.02; done
        printf '%s\\n' 'o"}' >> "$c"
        printf '%s' '{"checkpoint": {"offset": 2}}' >> "$c"
        """
    )
    ctx = make_ctx({"shell": script, "workingDir": str(tmp_path)}, on_report=acknowledge)
    result = await executor.execute(ctx)
    await ctx.drain()
    assert result.outcome is Outcome.SUCCESS
    assert ctx.reports == [
        Progress(checkpoint={"offset": 1}),
        Progress(step="one", details={"rows": 5}),
        Progress(step="two"),
        Progress(checkpoint={"offset": 2}),  # the unterminated last line, read once the process ended
    ]
    assert "control.jsonl line 2 ignored: not valid JSON" in caplog.text


async def test_without_a_watchdog_serving_the_command_sets_its_own_parent_death_signal(make_ctx, executor, monkeypatch):
    """No lease to guard, so no watchdog: the new process calls prctl itself, between fork and exec."""
    preexec_fns = spy_on_starts(monkeypatch)
    result = await executor.execute(make_ctx({"command": ["true"]}))
    assert result.outcome is Outcome.SUCCESS
    assert len(preexec_fns) == 1 and preexec_fns[0][0] == ["true"] and preexec_fns[0][1] is not None


async def test_a_command_run_starts_no_thread(make_ctx, executor, monkeypatch):
    """Its exit is watched through a pidfd on the loop, not by a thread per process (asyncio's way on 3.11)."""
    started = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda thread: started.append(thread.name) or real_start(thread))
    result = await executor.execute(make_ctx({"shell": "echo done; exit 3"}))
    assert (result.outcome, result.exit_code, result.output) == (Outcome.FAILURE, 3, "done\n")
    assert started == []


async def test_without_pidfds_a_thread_waits_for_the_command(make_ctx, executor, monkeypatch):
    def no_pidfd(pid, flags=0):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfd)
    result = await executor.execute(make_ctx({"shell": "echo done; exit 3"}))
    assert (result.outcome, result.exit_code, result.output) == (Outcome.FAILURE, 3, "done\n")


PARENT = """
import asyncio, sys, time
from datetime import datetime, timezone
from scheduler.executors import CommandExecutor, RunContext
from scheduler.spec import TaskSpec
from scheduler.watchdog import node_watchdog

async def main():
    spec = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}, "run": {"shell": sys.argv[1]}})
    async def sink(progress):
        pass
    lease = sys.argv[2] == "lease"
    if lease:  # as in a node: the watchdog serves, and the run's lease deadline is far away
        node_watchdog().start()
        assert await node_watchdog().until_running(30)
    ctx = RunContext(task_id="t", run_id="t:1", node_id="n", fence=1, scheduled_for=datetime.now(timezone.utc),
                     attempt=1, spec=spec, checkpoint_data=None, progress_sink=sink, loop=asyncio.get_running_loop(),
                     lease_deadline=time.monotonic() + 600 if lease else None)
    await CommandExecutor(grace_period=600).execute(ctx)

asyncio.run(main())
"""


@pytest.mark.parametrize("lease", ["lease", "no lease"])
async def test_the_command_dies_with_its_node(tmp_path, lease):
    """Without a lease the kernel's parent-death signal stops it; with one, the watchdog does (no preexec_fn).

    The command ignores SIGTERM and the kill grace is long: only a SIGKILL at the node's death stops it.
    """
    pid_file = tmp_path / "command.pid"
    node = subprocess.Popen(
        [sys.executable, "-c", PARENT, f"trap '' TERM; echo $$ > {pid_file}; exec sleep 60", lease],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        await eventually(lambda: pid_written(pid_file) or node.poll() is not None)
        assert node.poll() is None, "the node process ended early"
        command = read_pid(pid_file)
        assert alive(command)
        node.send_signal(signal.SIGKILL)
    finally:
        node.kill()
        node.wait()
    try:
        await eventually(lambda: not alive(command))
    finally:
        if alive(command):
            os.kill(command, signal.SIGKILL)


async def test_a_cancelled_execution_leaves_no_process(make_ctx, executor, tmp_path):
    ctx = make_ctx({"shell": "echo $$ > leader.pid; exec sleep 60", "workingDir": str(tmp_path)})
    task = asyncio.ensure_future(executor.execute(ctx))
    await eventually(lambda: pid_written(tmp_path / "leader.pid"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(read_pid(tmp_path / "leader.pid"))
