"""What the engine tells the rest of the node (metrics, logs): a base class of no-op hooks."""

from __future__ import annotations

from .model import Claim, RunResult, Task


class EngineListener:
    """Override the hooks you need. Hooks run on the event loop and must not block."""

    def run_started(self, claim: Claim) -> None:
        """A claimed run is about to execute."""

    def run_finished(self, claim: Claim, result: RunResult, applied: bool) -> None:
        """A run ended; ``applied`` is False when its result was fenced out."""

    def lease_lost(self, claim: Claim) -> None:
        """A renewal matched nothing: the run is being stopped."""

    def recovered(self, task: Task) -> None:
        """This node marked another node's expired run CRASHED."""

    def stuck_changed(self, count: int) -> None:
        """The number of stopped runs whose code has not ended changed (``Engine.stuck_count``)."""

    def loop_error(self, loop: str) -> None:
        """One of the engine's loops (main, keepalive, purge) failed unexpectedly and goes on after a backoff."""
