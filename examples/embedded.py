"""Embed the scheduler in a Python program: a periodic task and a one-shot that checkpoints.

Run it with the package installed (``pip install -e .``): ``python examples/embedded.py``.
It keeps its tasks in a temporary SQLite file, waits (at most 30 s) until the periodic
task ran twice and the one-shot completed, prints what they did and exits.
The README's "Embedding" section shows this file from its first import on.
"""

import asyncio
import tempfile
import time
from datetime import timedelta

from scheduler import Scheduler

synced: list[str] = []


def sync_data() -> None:  # runs in a thread; returning is success, raising is failure
    synced.append(time.strftime("%H:%M:%S"))


class Export:
    """An executor object: a run after a crash starts from the last checkpoint, not from scratch."""

    def execute(self, ctx) -> None:
        batches = ctx.parameters["batches"]
        for batch in range((ctx.checkpoint_data or {}).get("next", 0), batches):
            if ctx.cancelled.is_set():  # cancelled through the API, or the node is stopping
                return
            ctx.update_step("exporting", {"batch": batch + 1, "of": batches})
            ctx.checkpoint({"next": batch + 1})


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Scheduler(f"sqlite:///{tmp}/tasks.db", node_id="example") as scheduler:
            await scheduler.new_task("dataSync").with_period(timedelta(seconds=1)) \
                .with_simple_executor(sync_data).schedule()  # its itemId: data-sync
            await scheduler.new_task("export").as_one_shot().with_parameters({"batches": 3}) \
                .with_executor(Export()).schedule()

            async def done() -> bool:
                sync, export = await scheduler.get_task("data-sync"), await scheduler.get_task("export")
                return sync.success_count >= 2 and export.status.value == "COMPLETED"

            deadline = time.monotonic() + 30
            while not await done():
                if time.monotonic() > deadline:
                    raise SystemExit("the tasks did not run within 30 s")
                await asyncio.sleep(0.1)

            for name in ("data-sync", "export"):
                task = await scheduler.get_task(name)
                step = f", last step {task.current_step} {dict(task.status_details)}" if task.current_step else ""
                print(f"{task.item_id}: {task.status.value} after {task.success_count} run(s){step}")
    print(f"sync_data ran {len(synced)} times, at {', '.join(synced)}")


if __name__ == "__main__":
    asyncio.run(main())
