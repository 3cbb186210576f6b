"""Task stores: the contract (``base``) and its backends (``sqlite``, ``mongo``).

``open_store(url)`` picks the backend from a URL; the store it returns is not
started yet (``await store.start()`` or ``async with``).
"""

from __future__ import annotations

import importlib

from ..errors import StoreError
from ..model import Clock, system_clock
from ..redact import redact_url
from .base import Store

ACCEPTED_URLS = (
    "sqlite:///absolute/path.db, sqlite:///:memory: (or sqlite://:memory: or memory:), "
    "mongodb://... or mongodb+srv://..."
)
_MEMORY_URLS = {"sqlite:///:memory:", "sqlite://:memory:", "memory:"}


def open_store(url: str, clock: Clock = system_clock) -> Store:
    """The store named by ``url`` (not started). ``StoreError`` for a URL no backend accepts."""
    from .sqlite import SQLiteStore  # stdlib only: always available

    if url in _MEMORY_URLS:
        return SQLiteStore(":memory:", clock=clock)
    if url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
        if not path.startswith("/") or path == "/":
            raise StoreError(f"store URL {url!r} needs an absolute file path; accepted forms: {ACCEPTED_URLS}")
        return SQLiteStore(path, clock=clock)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        try:
            mongo = importlib.import_module("scheduler.store.mongo")
        except ImportError as exc:
            raise StoreError(f"the MongoDB store backend is not available: {exc}") from exc
        return mongo.MongoStore(url, clock=clock)
    raise StoreError(f"unsupported store URL {redact_url(url)!r}; accepted forms: {ACCEPTED_URLS}")
