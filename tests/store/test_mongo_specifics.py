"""What only the MongoDB store has: indexes, TTL fields, the server clock, error
wrapping, literal query values, on mongomock. The contract itself is tested by the
suite parametrized over every backend (``conftest.py``); mutual exclusion between
processes on a real server by ``test_mongo_processes.py``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable

import mongomock
import pytest
from pymongo.errors import OperationFailure, PyMongoError, ServerSelectionTimeoutError

from scheduler.errors import ConfigError, StoreError
from scheduler.model import Status, TaskQuery
from scheduler.store.mongo import MongoStore, protocol
from scheduler.store.mongo.clock import RESYNC_INTERVAL, ServerClock
from scheduler.store.mongo.store import database_from_url, hosts_of

from .helpers import LEASE, add_task, claim_one, final, make_spec


class ServerWithClock:
    """A mongomock client that answers ``hello`` like a server whose clock reads ``local_time()``."""

    def __init__(self, local_time: Callable[[], datetime]) -> None:
        self._client = mongomock.MongoClient(tz_aware=True)
        self._local_time = local_time
        self.admin = self  # the store runs commands as ``client.admin.command(name)``
        self.commands: list[str] = []

    def command(self, name: str) -> dict[str, Any]:
        self.commands.append(name)
        if name == "hello":
            return {"isWritablePrimary": True, "localTime": self._local_time()}
        raise OperationFailure(f"no such command: {name}", code=59)

    def __getitem__(self, name: str) -> Any:
        return self._client[name]

    def close(self) -> None:
        self._client.close()


def factory_of(client: Any) -> Callable[..., Any]:
    """A ``client_factory`` handing the same client to every store."""
    return lambda url, **options: client


@pytest.fixture
def shared() -> mongomock.MongoClient:
    """One mongomock server for the test, so that it can read the raw documents."""
    return mongomock.MongoClient(tz_aware=True)


@pytest.fixture
async def mongo(shared, clock):
    store = MongoStore("mongodb://127.0.0.1/specifics", clock=clock, client_factory=factory_of(shared))
    async with store:
        yield store


@pytest.fixture
def raw(shared, mongo):
    """The database behind ``mongo``, to check what is actually stored."""
    return shared["specifics"]


# -- indexes -------------------------------------------------------------------


def _keys(collection) -> dict[str, list[tuple[str, int]]]:
    return {name: list(info["key"]) for name, info in collection.index_information().items()}


async def test_start_creates_the_claim_lease_and_query_indexes(raw):
    keys = _keys(raw["tasks"])
    assert keys["claim_by_type"] == [("status", 1), ("enabled", 1), ("executorType", 1), ("nextScheduledExecution", 1)]
    assert "claim" not in keys  # schema 1's claim index, without the executor type
    assert keys["leases"] == [("lease.until", 1)]
    assert "recover" not in keys  # RUNNING tasks' leases only: a cancelled run's lease outlives its status
    assert keys["status_nextScheduledExecution"] == [("status", 1), ("nextScheduledExecution", 1), ("_id", 1)]
    assert keys["status_itemId"] == [("status", 1), ("_id", 1)]
    assert keys["taskType"] == [("taskType", 1), ("_id", 1)]
    for field in ("lastExecutionDate", "creationDate", "taskType", "failureCount", "successCount"):
        assert keys[f"status_{field}"] == [("status", 1), (field, 1), ("_id", 1)]


async def test_start_creates_the_unique_run_key_and_the_runs_by_task_index(raw):
    info = raw["runs"].index_information()
    assert list(info["run_key"]["key"]) == [("taskId", 1), ("scheduledFor", 1), ("attempt", 1)]
    assert info["run_key"]["unique"] is True
    assert list(info["runs_by_task"]["key"]) == [("taskId", 1), ("startedAt", -1)]


@pytest.mark.parametrize("collection", ["tasks", "runs"])
async def test_expire_at_has_a_ttl_index_expiring_at_the_stored_time(raw, collection):
    ttl = raw[collection].index_information()["expireAt_ttl"]
    assert list(ttl["key"]) == [("expireAt", 1)]
    assert ttl["expireAfterSeconds"] == 0


async def test_a_second_node_starting_on_the_same_database_keeps_the_indexes(shared, clock, raw):
    before = raw["tasks"].index_information()
    async with MongoStore("mongodb://127.0.0.1/specifics", clock=clock, client_factory=factory_of(shared)):
        pass
    assert raw["tasks"].index_information() == before


async def test_a_schema_1_database_gets_executor_types_and_loses_its_old_claim_index(shared, clock):
    old = shared["old"]
    async with MongoStore("mongodb://127.0.0.1/old", clock=clock, client_factory=factory_of(shared)) as store:
        await add_task(store, clock(), "app-job", type="appJob")
        await add_task(store, clock(), "backup", run={"command": ["/usr/local/bin/backup"]})
    # Back to what schema 1 had: no executorType, the claim index without it.
    old["tasks"].update_many({}, {"$unset": {"executorType": ""}})
    old["meta"].update_one({"_id": "schema"}, {"$set": {"version": 1}})
    old["tasks"].create_index([("status", 1), ("enabled", 1), ("nextScheduledExecution", 1)], name="claim")
    old["tasks"].drop_index("leases")
    old["tasks"].create_index([("status", 1), ("lease.until", 1)], name="recover")

    async with MongoStore("mongodb://127.0.0.1/old", clock=clock, client_factory=factory_of(shared)) as store:
        assert [claim.item_id for claim in await store.claim_due("a", 10, LEASE, task_types=())] == ["backup"]
        assert [claim.item_id for claim in await store.claim_due("b", 10, LEASE, task_types={"appJob"})] == [
            "app-job"
        ]

    assert {doc["_id"]: doc["executorType"] for doc in old["tasks"].find()} == {"app-job": "appJob", "backup": None}
    assert old["meta"].find_one({"_id": "schema"})["version"] == 2
    assert "claim" not in old["tasks"].index_information()
    assert "recover" not in old["tasks"].index_information() and "leases" in old["tasks"].index_information()

    # A schema 1 node still running writes a task without its executor type: the next start fills it in.
    old["tasks"].update_one({"_id": "app-job"}, {"$unset": {"executorType": ""}})
    async with MongoStore("mongodb://127.0.0.1/old", clock=clock, client_factory=factory_of(shared)):
        pass
    assert old["tasks"].find_one({"_id": "app-job"})["executorType"] == "appJob"


async def test_a_database_of_a_newer_schema_is_refused_at_start(shared, clock):
    shared["newer"]["meta"].insert_one({"_id": "schema", "version": 99})
    store = MongoStore("mongodb://127.0.0.1/newer", clock=clock, client_factory=factory_of(shared))
    with pytest.raises(StoreError, match="schema version 99.*upgrade the scheduler"):
        await store.start()


# -- TTL fields --------------------------------------------------------------


async def test_a_finished_one_shot_and_its_run_carry_the_ttl_field(mongo, raw, clock):
    await add_task(mongo, clock(), "once", schedule={"at": "2030-01-01T00:00:00Z"})
    claim = await claim_one(mongo)
    assert raw["tasks"].find_one({"_id": "once"})["expireAt"] is None
    expires = clock() + timedelta(days=7)
    result, transition = final(claim, clock(), Status.COMPLETED, expires_at=expires, run_expires_at=expires)
    assert await mongo.finish_run(claim, result, transition)
    assert raw["tasks"].find_one({"_id": "once"})["expireAt"] == expires
    assert raw["runs"].find_one({"_id": claim.run_id})["expireAt"] == expires


async def test_retrying_a_failed_one_shot_removes_its_ttl_field(mongo, raw, clock):
    await add_task(mongo, clock(), "once", schedule={"at": "2030-01-01T00:00:00Z"})
    claim = await claim_one(mongo)
    expires = clock() + timedelta(days=7)
    await mongo.finish_run(claim, *final(claim, clock(), Status.FAILED, expires_at=expires))
    await mongo.retry("once")
    # Otherwise MongoDB's TTL monitor would delete a task that is scheduled again.
    assert raw["tasks"].find_one({"_id": "once"})["expireAt"] is None


# -- the run key -------------------------------------------------------------


async def test_a_slot_whose_run_record_exists_is_released_and_moved_to_the_next_attempt(mongo, raw, clock):
    await add_task(mongo, clock(), "t")
    claim = await claim_one(mongo)
    # A confused node leaves the same slot and attempt due again.
    raw["tasks"].update_one(
        {"_id": "t"},
        {"$set": {"status": "SCHEDULED", "lease.owner": None, "lease.until": None}},
    )

    assert await mongo.claim_due("a", 5, LEASE) == []
    task = await mongo.get_task("t")
    assert (task.status, task.attempt, task.lease_owner) == (Status.SCHEDULED, 2, None)
    retried = await claim_one(mongo)
    assert (retried.scheduled_for, retried.attempt) == (claim.scheduled_for, 2)
    assert raw["runs"].count_documents({"taskId": "t"}) == 2


# -- the server clock --------------------------------------------------------


async def test_now_follows_the_server_clock_from_the_hello_reply(clock):
    server = ServerWithClock(local_time=lambda: clock() + timedelta(seconds=5))
    store = MongoStore("mongodb://127.0.0.1/clock", clock=clock, client_factory=factory_of(server), server_clock=True)
    async with store:
        assert store.now() == clock() + timedelta(seconds=5)
        await add_task(store, clock(), "t")
        claim = await claim_one(store)
    # Leases are computed on the server's time, not on this node's.
    assert claim.started_at == clock() + timedelta(seconds=5)
    assert claim.lease_until == clock() + timedelta(seconds=5) + LEASE
    assert server.commands == ["hello"]


def test_the_offset_assumes_the_reply_was_made_halfway_through_the_round_trip(clock):
    server_clock = ServerClock(clock)
    sent = clock()

    def hello(name: str) -> dict[str, Any]:
        clock.advance(timedelta(milliseconds=100))  # a 100 ms round trip
        return {"localTime": sent + timedelta(seconds=2)}

    server_clock.sync(hello)
    assert server_clock.offset == timedelta(seconds=2) - timedelta(milliseconds=50)


def test_servers_without_hello_are_asked_with_is_master(clock):
    asked = []

    def command(name: str) -> dict[str, Any]:
        asked.append(name)
        if name == "hello":
            raise OperationFailure("no such command: 'hello'", code=59)
        return {"ismaster": True, "localTime": clock() - timedelta(seconds=3)}

    server_clock = ServerClock(clock)
    server_clock.sync(command)
    assert asked == ["hello", "isMaster"]
    assert server_clock.offset == timedelta(seconds=-3)


def test_other_command_failures_are_not_taken_for_an_old_server(clock):
    def command(name: str) -> dict[str, Any]:
        raise OperationFailure("not authorized", code=13)

    with pytest.raises(OperationFailure):
        ServerClock(clock).sync(command)


def test_the_offset_is_refreshed_once_the_resync_interval_has_passed(clock):
    elapsed = [0.0]
    server_clock = ServerClock(clock, monotonic=lambda: elapsed[0])
    assert server_clock.stale()
    server_clock.sync(lambda name: {"localTime": clock() + timedelta(seconds=1)})
    elapsed[0] = RESYNC_INTERVAL - 1
    assert not server_clock.stale()
    elapsed[0] = RESYNC_INTERVAL
    assert server_clock.stale()


def test_a_reply_without_local_time_leaves_the_local_clock(clock):
    server_clock = ServerClock(clock)
    server_clock.sync(lambda name: {"isWritablePrimary": True})
    assert server_clock.now() == clock()


async def test_mongomock_which_runs_no_commands_uses_the_local_clock(shared, clock):
    store = MongoStore("mongodb://127.0.0.1/clock", clock=clock, client_factory=factory_of(shared), server_clock=True)
    async with store:
        assert store.now() == clock()


# -- errors ------------------------------------------------------------------


async def test_an_unreachable_server_is_a_store_error_naming_the_hosts_but_not_the_password(clock):
    url = "mongodb://scheduler:s3cret-pw@127.0.0.1:1/prod?serverSelectionTimeoutMS=100&connectTimeoutMS=100"
    store = MongoStore(url, clock=clock)
    with pytest.raises(StoreError) as caught:
        await store.start()
    message = str(caught.value)
    assert "MongoDB unreachable at 127.0.0.1:1 (database prod)" in message
    assert "s3cret-pw" not in message and "s3cret-pw" not in repr(store)
    assert isinstance(caught.value.__cause__, PyMongoError)


async def test_a_driver_error_during_a_verb_is_a_store_error_naming_the_operation(mongo, monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OperationFailure("not authorized on specifics to execute command", code=13)

    monkeypatch.setattr(mongomock.collection.Collection, "find_one", refuse)
    with pytest.raises(StoreError, match=r"cannot read task t: MongoDB at 127\.0\.0\.1 .*not authorized") as caught:
        await mongo.get_task("t")
    assert isinstance(caught.value.__cause__, OperationFailure)


async def test_the_check_is_a_ping_and_a_lost_server_fails_it_naming_the_hosts(mongo, monkeypatch):
    await mongo.check()

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ServerSelectionTimeoutError("127.0.0.1:27017: connection refused")

    monkeypatch.setattr(mongomock.database.Database, "command", unreachable)
    with pytest.raises(StoreError, match=r"cannot check the connection: MongoDB unreachable at 127\.0\.0\.1"):
        await mongo.check()


async def test_a_verb_before_start_is_a_store_error(clock):
    store = MongoStore("mongodb://127.0.0.1/x", clock=clock)
    with pytest.raises(StoreError, match="not started"):
        await store.get_task("t")


@pytest.mark.parametrize("url", ["sqlite:///tmp/x.db", "localhost:27017", "http://mongo"])
def test_a_url_that_is_not_mongodb_is_a_config_error(url):
    with pytest.raises(ConfigError, match="mongodb://"):
        MongoStore(url)


@pytest.mark.parametrize(
    ("url", "database", "hosts"),
    [
        ("mongodb://127.0.0.1", "scheduler", "127.0.0.1"),
        ("mongodb://127.0.0.1:27017/", "scheduler", "127.0.0.1:27017"),
        ("mongodb://u:p%40ss@h1:1,h2:2/tasks?replicaSet=rs0", "tasks", "h1:1,h2:2"),
        ("mongodb+srv://u:p@cluster.example.com/sched", "sched", "cluster.example.com"),
    ],
)
def test_the_database_and_hosts_come_from_the_url_without_credentials(url, database, hosts):
    assert (database_from_url(url), hosts_of(url)) == (database, hosts)


def test_a_bad_url_is_reported_without_its_password():
    with pytest.raises(ConfigError) as caught:
        MongoStore("mongo://admin:hunter2@db1/scheduler")
    assert "hunter2" not in str(caught.value)
    assert "mongo://admin:***@db1/scheduler" in str(caught.value)


# -- user values stay values --------------------------------------------------


@pytest.mark.parametrize("value", ['{"$ne": null}', "$where", "$gt", "{'$regex': '.*'}"])
async def test_an_operator_like_status_or_type_is_compared_literally(mongo, clock, value):
    await add_task(mongo, clock(), "plain")
    await add_task(mongo, clock(), "odd", type=value)
    by_type = await mongo.query_tasks(TaskQuery(task_type=value))
    assert [task.item_id for task in by_type.items] == ["odd"]
    by_status = await mongo.query_tasks(TaskQuery(status=value))
    assert (by_status.items, by_status.total) == ([], 0)


@pytest.mark.parametrize("value", [{"$ne": None}, ["SCHEDULED"], 1])
async def test_a_filter_value_that_is_not_a_string_is_refused(mongo, value):
    with pytest.raises(ValueError, match="must be a string"):
        await mongo.query_tasks(TaskQuery(task_type=value))


async def test_labels_with_dots_and_dollars_match_exactly(mongo, clock):
    await add_task(mongo, clock(), "k8s", labels={"app.kubernetes.io/name": "crm", "$team": "a"})
    await add_task(mongo, clock(), "nested", labels={"app": "crm"})
    found = await mongo.query_tasks(TaskQuery(labels={"app.kubernetes.io/name": "crm", "$team": "a"}))
    assert [task.item_id for task in found.items] == ["k8s"]
    with pytest.raises(ValueError, match="must be a string"):
        await mongo.query_tasks(TaskQuery(labels={"$team": {"$ne": None}}))


async def test_user_dicts_with_dollar_and_dotted_keys_round_trip(mongo, clock):
    odd = {"$set": {"a.b": 1}, "x.y": ["$where", {"$gt": 2}]}
    await add_task(mongo, clock(), "t", parameters=odd)
    claim = await claim_one(mongo)
    assert await mongo.save_progress(claim, checkpoint=odd, step="$inc", details=odd)
    task = await mongo.get_task("t")
    assert task.checkpoint_data == odd
    assert task.status_details == odd
    assert task.current_step == "$inc"
    assert dict(task.spec.parameters)["x.y"] == ("$where", {"$gt": 2})
    assert task.spec.spec_hash() == make_spec("t", parameters=odd).spec_hash()


@pytest.mark.parametrize("checkpoint", [{"rows": 2**70}, {1: "not a string key"}, {"when": object()}])
async def test_a_checkpoint_bson_cannot_hold_is_a_value_error_and_writes_nothing(mongo, clock, checkpoint):
    await add_task(mongo, clock(), "t")
    claim = await claim_one(mongo)
    assert await mongo.save_progress(claim, checkpoint={"rows": 1})
    with pytest.raises(ValueError, match="cannot save progress of run .*: a value cannot be stored in MongoDB"):
        await mongo.save_progress(claim, checkpoint=checkpoint)
    assert (await mongo.get_task("t")).checkpoint_data == {"rows": 1}


# -- leases of deleted tasks -------------------------------------------------------


async def test_a_task_created_again_as_the_old_run_releases_its_lease_does_not_keep_it(mongo, raw, clock, monkeypatch):
    """The creation reads the deleted task's lease; the old run's node releases it; the task is inserted."""
    await add_task(mongo, clock(), "t")
    claim = await claim_one(mongo, "a")
    assert await mongo.remove_spec("t")
    clock.advance(timedelta(seconds=1))  # a new slot: the old one's run record stays
    insert = mongomock.collection.Collection.insert_one

    def released_first(collection, document, *args, **kwargs):
        if collection.name == "tasks":
            monkeypatch.undo()
            assert protocol.release_lease(raw, claim, clock())  # no task yet: the lease kept apart goes
        return insert(collection, document, *args, **kwargs)

    monkeypatch.setattr(mongomock.collection.Collection, "insert_one", released_first)
    await add_task(mongo, clock(), "t")
    task = await mongo.get_task("t")
    assert (task.lease_owner, task.lease_until, task.fence) == (None, None, claim.fence)
    assert (await claim_one(mongo, "b")).fence == claim.fence + 1
