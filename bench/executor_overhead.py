"""Per-run overhead of the executors alone (no store, no engine): runs per second, best of the rounds.

The command executor runs ``/bin/true`` as the engine runs a command: with a lease deadline, its group
guarded by the node's watchdog process. Beside it, in the same rounds, the machine's own spawn rate: a
plain asyncio loop starting ``/bin/true`` in a new session with its output on a pipe, which is as fast as
Python starts a command here. The ratio of the two is what the executor keeps of the machine's rate; on a
shared machine, compare ratios rather than rates.

    python bench/executor_overhead.py                 # about 30 s
    python bench/executor_overhead.py --runs 500 --rounds 7
"""

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.executors import CommandExecutor, RunContext, executor_from_callable  # noqa: E402
from scheduler.spec import TaskSpec  # noqa: E402
from scheduler.watchdog import node_watchdog  # noqa: E402

LEASE = 30.0  # seconds: the default leaseDuration, the deadline each command run is guarded with


async def executor_runs_per_second(executor, spec, runs, lease=None):
    loop = asyncio.get_running_loop()

    async def sink(progress):
        pass

    start = time.perf_counter()
    for i in range(runs):
        ctx = RunContext(
            task_id="t", run_id=f"t:{i}", node_id="n", fence=1, scheduled_for=datetime.now(timezone.utc),
            attempt=1, spec=spec, checkpoint_data=None, progress_sink=sink, loop=loop,
            lease_deadline=None if lease is None else time.monotonic() + lease,
        )
        result = await executor.execute(ctx)
        assert result.outcome == "success", result
    return runs / (time.perf_counter() - start)


async def plain_spawns_per_second(runs):
    """The machine's rate: what Python itself does to start a command in a session and read its output."""
    start = time.perf_counter()
    for _ in range(runs):
        process = await asyncio.create_subprocess_exec(
            "/bin/true", stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        await process.communicate()
        assert process.returncode == 0
    return runs / (time.perf_counter() - start)


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="command runs per round (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, interleaved (default 5)")
    args = parser.parse_args()
    print(machine())
    print(load(), "at the start")

    async def async_noop(ctx):
        pass

    def sync_noop(ctx):
        pass

    bare = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}})
    for name, executor in [("async no-op function", executor_from_callable(async_noop)),
                           ("sync no-op function", executor_from_callable(sync_noop))]:
        best = max([await executor_runs_per_second(executor, bare, 5000) for _ in range(args.rounds)])
        print(f"{name:32} {best:8.0f} runs/s")

    watchdog = node_watchdog()
    watchdog.start()
    if not await watchdog.until_running(timeout=30):
        sys.exit("the watchdog did not start")
    true = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}, "run": {"command": ["/bin/true"]}})
    executor = CommandExecutor(watchdog=watchdog)
    await executor_runs_per_second(executor, true, 20, LEASE)  # warm-up: imports, the first temporary files
    plain, command = [], []
    for _ in range(args.rounds):  # interleaved, so that both see the same share of a busy machine
        plain.append(await plain_spawns_per_second(args.runs))
        command.append(await executor_runs_per_second(executor, true, args.runs, LEASE))
    print(f"{'plain Python spawn of /bin/true':32} {max(plain):8.0f} /s  (rounds: {', '.join(f'{r:.0f}' for r in plain)})")
    print(f"{'command executor, /bin/true':32} {max(command):8.0f} runs/s  (rounds: {', '.join(f'{r:.0f}' for r in command)})")
    print(f"{'command executor / plain spawn':32} {max(command) / max(plain):8.2f}")
    print(load(), "at the end")
    watchdog.close()


asyncio.run(main())
