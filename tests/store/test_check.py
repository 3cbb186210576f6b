"""Contract: ``check`` passes on a store that serves, fails with a ``StoreError`` on one that cannot."""

from __future__ import annotations

import pytest

from scheduler.errors import StoreError


async def test_a_started_store_passes_its_check(store):
    await store.check()


async def test_a_closed_store_fails_its_check(store):
    await store.close()

    with pytest.raises(StoreError):
        await store.check()
