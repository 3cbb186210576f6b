"""Bounded waits on real conditions: the only way tests wait for something to happen."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable


async def wait_for(get: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool], timeout: float = 10) -> Any:
    """Poll ``await get()`` until ``predicate`` holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await get()
        if predicate(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.02)


def wait_until(check: Callable[[], Any], timeout: float = 10, what: str = "condition", every: float = 0.02) -> Any:
    """Synchronous twin for subprocess tests: poll ``check()`` every ``every`` seconds until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(every)
