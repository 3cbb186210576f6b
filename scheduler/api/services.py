"""What the API needs from the node: built by the node's composition root (or a test)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable

from ..store.base import Store
from .auth import ApiAuth
from .metrics import Metrics

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def _nothing() -> None:
    """Default ``wake``: no engine to tell."""


async def _no_problems() -> list[str]:
    """Default ``readiness``: nothing keeps the node from working."""
    return []


@dataclass(frozen=True)
class ApiServices:
    """Everything the handlers use; built by the node's composition root (or a test)."""

    store: Store  # the shared store
    auth: ApiAuth
    metrics: Metrics
    memory_store: Store | None = None  # this node's non-persistent tasks
    cors_origins: tuple[str, ...] = ()
    metrics_public: bool = True
    wake: Callable[[], None] = _nothing  # engine.wake: act at once after a state change
    check_leases: Callable[[], None] = _nothing  # engine.check_leases: stop a cancelled run here at once
    reload: Callable[[], Awaitable[dict[str, Any]]] | None = None
    config_status: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None
    # Why the node cannot do its job now, one sentence each; empty when it is ready (GET /readyz).
    readiness: Callable[[], Awaitable[list[str]]] = _no_problems
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # A node whose last heartbeat is older does not count: it runs nothing (a task no live node can
    # run is shown so) and declares nothing (a task only it declared goes). At least the lease duration.
    node_timeout: timedelta = timedelta(seconds=60)
