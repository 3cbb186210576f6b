"""Python callables for the example tasks (``run: {python: examples.jobs:count_primes}``).

The scheduler calls a job with one argument, its context:

- ``parameters``: the task's ``parameters`` mapping;
- ``checkpoint_data``: the last checkpoint saved by this task (``{}`` at first);
- ``checkpoint(data)``: save progress; after a crash the next run starts from it;
- ``update_step(step, details)``: report progress, shown by ``scheduler task-show``;
- ``cancelled``: an event; ``cancelled.is_set()`` turns true when the run must stop.

Returning means success, raising means failure (and a retry, per the task's ``retry``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def default_output_dir() -> Path:
    return Path(os.environ.get("TMPDIR") or "/tmp", "scheduler-examples")


def count_primes(context: Any) -> int:
    """Count the primes up to ``parameters.limit``, one chunk at a time, resumable.

    Each chunk ends with a checkpoint ``{"next": n, "found": k}``: a node that dies
    mid-run loses at most one chunk of work, and the node that resumes the task
    starts from ``next``. The count is written to ``<outDir>/primes.txt``.
    """
    limit = int(context.parameters.get("limit", 2_000_000))
    chunk = int(context.parameters.get("chunk", 100_000))
    out_dir = Path(context.parameters.get("outDir") or default_output_dir())
    progress = context.checkpoint_data or {}
    start, found = int(progress.get("next", 2)), int(progress.get("found", 0))
    if start > 2:
        log.info("resuming at %s with %s primes found", start, found)
    while start <= limit:
        if context.cancelled.is_set():
            log.info("cancelled at %s; the checkpoint keeps the progress", start)
            return found
        end = min(start + chunk, limit + 1)
        found += _primes_in(start, end)
        start = end
        context.checkpoint({"next": start, "found": found})
        context.update_step("counting", {"next": start, "found": found, "limit": limit})
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "primes.txt").write_text(f"{found} primes up to {limit}\n", encoding="utf-8")
    context.update_step("done", {"found": found, "limit": limit})
    return found


def _primes_in(low: int, high: int) -> int:
    """The number of primes in [low, high): a sieve of that segment only, so memory stays at one chunk."""
    low = max(low, 2)
    if low >= high:
        return 0
    sieve = bytearray(b"\x01") * (high - low)
    for factor in range(2, math.isqrt(high - 1) + 1):
        first = max(factor * factor, -(-low // factor) * factor)
        if first < high:
            sieve[first - low :: factor] = bytes(len(range(first, high, factor)))
    return sum(sieve)
