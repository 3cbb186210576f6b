"""Fixtures and rules for the whole suite."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from tests.support import mongo


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With a MongoDB server given, a ``mongodb`` test that skips is a failure: CI proves nothing
    about MongoDB by skipping its cases (an expected failure, ``xfail``, still reports as one)."""
    report = yield
    if (report.skipped and not hasattr(report, "wasxfail") and os.environ.get(mongo.MONGO_URI_ENV)
            and item.get_closest_marker("mongodb") is not None):
        report.outcome = "failed"
        report.longrepr = f"skipped although {mongo.MONGO_URI_ENV} is set: {report.longrepr}"
    return report


@pytest.fixture
def mongo_url() -> Iterator[str]:
    """A URL of a fresh database on the test server (dropped afterwards); a skip without a server."""
    base = mongo.server_uri()
    database = mongo.new_database_name("scheduler_test")
    yield mongo.database_url(base, database)
    mongo.drop_database(base, database)
