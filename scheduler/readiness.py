"""Readiness: whether this node can do its job now and, when it cannot, why (``GET /readyz``).

A node is ready when all of these hold (``leaseDuration`` is 30 s by default):

- its engine is healthy (``Engine.health``): among others, it wrote its
  heartbeat to the store within the last ``2 × leaseDuration / 3``, so the
  store takes its writes;
- the store answers a check (``Store.check``) within ``leaseDuration / 3``:
  a read and, on SQLite, the file at the configured path is still the file the
  node has open (not deleted, not replaced);
- the first reload of ``tasks.d`` is done, and no reload has been running for
  longer than ``leaseDuration`` (at least 10 s).

Each problem is one sentence, listed in the ``/readyz`` answer. Once the node
has started, readiness is also evaluated every ``pollInterval``, so that each
change is logged once, whether anyone asks ``/readyz`` or not (a problem that
only says it has lasted longer is no change).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from .errors import StoreError
from .store.base import Store

if TYPE_CHECKING:
    from .engine import Engine
    from .reconcile import Reconciler
    from .watchdog import Watchdog

log = logging.getLogger(__name__)

# Numbers in a problem (for how long it has lasted, a counter in a driver's error) do not
# make it another state: left out when telling whether readiness changed.
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

# A reload parses every changed file and writes its tasks: a large tasks.d takes
# seconds even when nothing is wrong, however short the lease.
MIN_RELOAD_LIMIT = timedelta(seconds=10)


@dataclass(frozen=True)
class ReadinessLimits:
    """How long the store may take to answer a check, and a reload to finish."""

    store_check: timedelta
    reload: timedelta

    @classmethod
    def for_lease(cls, lease_duration: timedelta) -> ReadinessLimits:
        """Limits derived from the lease: the time the cluster lets a node go silent before
        taking its work over. The store must answer within a keep-alive period, as the
        lease renewals need it to; a reload silent for a whole lease is stuck, not slow."""
        return cls(store_check=lease_duration / 3, reload=max(lease_duration, MIN_RELOAD_LIMIT))


class Readiness:
    """Evaluates this node's readiness, logging each change once the node has started."""

    def __init__(
        self, node_id: str, store: Store, engine: Engine, reconciler: Reconciler | None, limits: ReadinessLimits,
        watchdog: Watchdog | None = None,
    ) -> None:
        self._node_id = node_id
        self._watchdog = watchdog
        self._store = store
        self._engine = engine
        self._reconciler = reconciler
        self._limits = limits
        # The store check in flight, shared by the evaluations that overlap it: a store
        # that hangs gets one pending check, not one more per probe.
        self._check: asyncio.Future[None] | None = None
        self._last: tuple[str, ...] = ()  # the problems last recorded, numbers left out
        self._logging = False

    async def problems(self) -> list[str]:
        """Why this node cannot do its job now, one sentence each; empty when it is ready."""
        store_problem = await self._check_store()
        # Read after the check: overlapping evaluations that end together agree on the state.
        problems = self._reconciler.problems(self._limits.reload) if self._reconciler is not None else []
        problems += self._engine.health()
        if self._watchdog is not None and not self._watchdog.running:  # starting, or replaced after it died (logged)
            problems.append("the watchdog that stops commands whose lease ran out is not running")
        if store_problem is not None:
            problems.append(store_problem)
        self._record(problems)
        return problems

    async def watch(self, interval: timedelta) -> None:
        """Evaluate every ``interval`` and log each change (runs until cancelled).

        Started once the node has logged that it is ready: during start-up the
        node is not ready by design, which is not worth a log line.
        """
        self._last, self._logging = (), True
        while True:
            try:
                await self.problems()
            except Exception:  # a bug here must not end the watch
                log.exception("node %s: readiness evaluation failed", self._node_id)
            await asyncio.sleep(interval.total_seconds())

    async def _check_store(self) -> str | None:
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self._store.check())
            # Its error is read here or by no one: never reported as "never retrieved".
            self._check.add_done_callback(lambda done: done.cancelled() or done.exception())
        check, limit = self._check, self._limits.store_check.total_seconds()
        # Not asyncio.wait_for: on Python 3.11 it drops a cancel that lands as the check answers,
        # and the node's stop, which cancels the watch and waits for it, would wait for ever.
        # asyncio.wait leaves the check running when the limit passes, for the next evaluation.
        await asyncio.wait({check}, timeout=limit)
        if not check.done():
            return f"the store did not answer a check within {round(limit, 3):g}s"
        try:
            check.result()
        except StoreError as exc:
            return str(exc)
        return None

    def _record(self, problems: list[str]) -> None:
        state = tuple(_NUMBER.sub("#", problem) for problem in problems)
        if state == self._last:
            return
        previous, self._last = self._last, state
        if not self._logging:
            return
        if problems:
            log.error("node %s not ready: %s", self._node_id, "; ".join(problems))
        elif previous:
            log.info("node %s ready again", self._node_id)
