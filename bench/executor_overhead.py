"""Per-run overhead of the executors alone (no store, no engine): runs per second, best of 5 rounds.

    python bench/executor_overhead.py
"""

import asyncio
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.executors import CommandExecutor, RunContext, executor_from_callable  # noqa: E402
from scheduler.spec import TaskSpec  # noqa: E402


async def runs_per_second(executor, spec, runs):
    loop = asyncio.get_running_loop()

    async def sink(progress):
        pass

    start = time.perf_counter()
    for i in range(runs):
        ctx = RunContext(
            task_id="t", run_id=f"t:{i}", node_id="n", fence=1, scheduled_for=datetime.now(timezone.utc),
            attempt=1, spec=spec, checkpoint_data=None, progress_sink=sink, loop=loop,
        )
        result = await executor.execute(ctx)
        assert result.outcome == "success", result
    return runs / (time.perf_counter() - start)


async def main():
    async def async_noop(ctx):
        pass

    def sync_noop(ctx):
        pass

    bare = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}})
    true = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}, "run": {"command": ["/bin/true"]}})
    cases = [
        ("async no-op function", executor_from_callable(async_noop), bare, 5000),
        ("sync no-op function", executor_from_callable(sync_noop), bare, 5000),
        ("command /bin/true", CommandExecutor(), true, 100),
    ]
    for name, executor, spec, runs in cases:
        best = max([await runs_per_second(executor, spec, runs) for _ in range(5)])
        print(f"{name:22} {best:10.0f} runs/s")


asyncio.run(main())
