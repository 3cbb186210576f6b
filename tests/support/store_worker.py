"""Entry points of the processes that race on one store (``multiprocessing`` spawn targets).

Each opens its own store from a URL (a SQLite file, a MongoDB database), as a node does.

Each writes its own account as JSON so the parent can check it against the
store: what it claimed, what it finished, what it recovered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.model import Claim, Outcome, RunResult, Status, Transition, system_clock
from scheduler.store import open_store
from scheduler.store.base import Store
from scheduler.store.sqlite import SQLiteStore

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds a worker waits for the start signal before giving up


def completed(claim: Claim, finished_at: datetime) -> tuple[RunResult, Transition]:
    """The end of a successful one-shot run."""
    transition = Transition(
        status=Status.COMPLETED, next_scheduled_execution=None, scheduled_for=None, attempt=claim.attempt,
        failure_count=0, success_count=claim.task.success_count + 1, last_error=None,
    )
    return RunResult(Outcome.SUCCESS, finished_at), transition


async def _claim_and_finish(store: Store, node_id: str, limit: int, lease: timedelta) -> dict[str, Any]:
    """Claim and finish until nothing is due; the account of what this node did."""
    claimed: list[str] = []
    finished: list[str] = []
    while claims := await store.claim_due(node_id, limit, lease):
        for claim in claims:
            claimed.append(claim.item_id)
            if await store.finish_run(claim, *completed(claim, store.now())):
                finished.append(claim.item_id)
    return {"node": node_id, "claimed": claimed, "finished": finished}


def claim_until_idle(url: str, node_id: str, account: str, start: Any, limit: int = 16) -> None:
    """Wait for ``start``, then claim and finish until nothing is due. ``start`` is an Event the
    parent sets, or a Barrier of the workers: they then start once all of them are connected."""

    async def main() -> None:
        async with open_store(url) as store:
            # Event.wait returns False on timeout; Barrier.wait raises BrokenBarrierError.
            if start.wait(START_TIMEOUT) is False:
                raise TimeoutError(f"{node_id}: no start signal within {START_TIMEOUT} s")
            result = await _claim_and_finish(store, node_id, limit, timedelta(seconds=60))
        Path(account).write_text(json.dumps(result))

    asyncio.run(main())


def hold_leases(url: str, node_id: str, count: int, account: str, ready: Any) -> None:
    """Claim ``count`` tasks with a 30 s lease, report them, set ``ready``, then hang until killed."""

    async def main() -> None:
        async with open_store(url) as store:
            claims = await store.claim_due(node_id, count, timedelta(seconds=30))
            Path(account).write_text(json.dumps({"node": node_id, "claimed": [c.item_id for c in claims]}))
            ready.set()
            # Bounded: the parent kills this process long before; never outlive a broken test.
            threading.Event().wait(120)

    asyncio.run(main())


def end_runs_then_hang(url: str, node_id: str, account: str, ready: Any) -> None:
    """Claim two tasks and record the end of the first; end the second's run too, its record left
    waiting for other run ends to share its commit (``FINISH_LINGER``, a minute here), and set
    ``ready``: a node killed now has run both, and recorded one."""
    from scheduler.store import sqlite as sqlite_store

    sqlite_store.FINISH_LINGER = 60.0

    async def main() -> None:
        async with open_store(url) as store:
            first, second = await store.claim_due(node_id, 2, timedelta(seconds=30))
            assert await store.finish_run(first, *completed(first, store.now()))
            Path(account).write_text(json.dumps({"recorded": first.item_id, "unrecorded": second.item_id}))
            ending = asyncio.ensure_future(store.finish_run(second, *completed(second, store.now())))
            while not store._pending:  # queued: the writer waits for other run ends
                await asyncio.sleep(0)
            ready.set()
            await ending  # never: the parent kills this process first

    asyncio.run(main())


def recover_and_finish(url: str, node_id: str, clock_offset_seconds: float, account: str) -> None:
    """With the clock moved ahead by ``clock_offset_seconds``: recover expired leases, then run what is due."""
    offset = timedelta(seconds=clock_offset_seconds)

    async def main() -> None:
        async with open_store(url, clock=lambda: system_clock() + offset) as store:
            recovered = [task.item_id for task in await store.recover_expired(node_id)]
            result = await _claim_and_finish(store, node_id, 16, timedelta(seconds=60))
        Path(account).write_text(json.dumps({**result, "recovered": recovered}))

    asyncio.run(main())


def open_fresh_files(directory: str, rounds: int, barrier: Any, account: str) -> None:
    """Each round, with every other worker at once (``barrier``): open and close ``round-<n>.db``, new then.

    Reports the errors, by round, instead of stopping at the first: the parent
    shows them all.
    """

    async def main() -> list[str]:
        errors: list[str] = []
        for index in range(rounds):
            store = SQLiteStore(Path(directory) / f"round-{index}.db")
            barrier.wait(START_TIMEOUT)  # blocks the loop on purpose: nothing else runs here
            try:
                await store.start()
            except Exception as exc:  # noqa: BLE001 - the account is the point
                errors.append(f"round {index}: {type(exc).__name__}: {exc}")
            finally:
                await store.close()
        return errors

    Path(account).write_text(json.dumps({"errors": asyncio.run(main())}))
