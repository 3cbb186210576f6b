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


async def _always_ready() -> bool:
    return True


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
    reload: Callable[[], Awaitable[dict[str, Any]]] | None = None
    config_status: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]] | None = None
    ready: Callable[[], Awaitable[bool]] = _always_ready
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    node_timeout: timedelta = timedelta(seconds=60)  # nodes with an older heartbeat do not count (declarations)
