"""The MongoDB server the tests may use, and a throwaway database on it per test.

``SCHEDULER_TEST_MONGO_URI`` names the server (``scripts/with-mongo`` starts a
stand-in and sets it). Without it the tests that need a server are skipped; with
it, none may be skipped (``tests/conftest.py`` turns such a skip into a failure).
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

MONGO_URI_ENV = "SCHEDULER_TEST_MONGO_URI"


def server_uri(why: str = "to run it against one") -> str:
    """The server's URI, or a skip saying how to give one."""
    base = os.environ.get(MONGO_URI_ENV)
    if not base:
        pytest.skip(f"no MongoDB server: set {MONGO_URI_ENV}=mongodb://host:port {why}")
    return base


def new_database_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def database_url(base: str, database: str) -> str:
    """``base`` pointing at ``database``: the path replaced, the query options (replicaSet, w...) kept."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def drop_database(base: str, database: str) -> None:
    import pymongo

    with pymongo.MongoClient(base) as client:
        client.drop_database(database)
