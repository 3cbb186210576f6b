"""``GET /metrics``: what Prometheus scrapes after the engine has run tasks on this node."""

from __future__ import annotations

import asyncio
import gc
import weakref
from datetime import datetime, timedelta, timezone

from prometheus_client.parser import text_string_to_metric_families

from scheduler.api.metrics import Metrics
from scheduler.api.services import ApiServices
from scheduler.engine import Engine, EngineConfig
from scheduler.executors import executor_from_callable
from scheduler.model import NodeInfo, Outcome, TaskQuery
from tests.api.conftest import LEASE, VIEWER


async def scrape(client, headers=None) -> dict[tuple[str, tuple], float]:
    response = await client.get("/metrics", headers=headers or {})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return samples_of(await response.text())


def samples_of(text: str) -> dict[tuple[str, tuple], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def at(*fields: int) -> float:
    return datetime(*fields, tzinfo=timezone.utc).timestamp()


def job(ctx) -> None:
    if ctx.parameters.get("fail"):
        raise RuntimeError("boom")


async def test_runs_claims_and_durations_by_task_and_outcome(client, services, seed, store, clock):
    await seed.task("good", type="job")
    await seed.task("bad", type="job", parameters={"fail": True})
    engine = Engine(EngineConfig(node_id="node-1"), [store], {"job": executor_from_callable(job)}, services.metrics)

    await engine.run_until_idle()
    samples = await scrape(client)

    assert samples[("scheduler_runs_total", (("outcome", "success"), ("task", "good")))] == 1
    assert samples[("scheduler_runs_total", (("outcome", "failure"), ("task", "bad")))] == 1
    assert samples[("scheduler_claims_total", ())] == 2
    assert samples[("scheduler_run_duration_seconds_count", (("outcome", "success"),))] == 1
    assert samples[("scheduler_run_duration_seconds_count", (("outcome", "failure"),))] == 1
    assert samples[("scheduler_runs_fenced_total", ())] == 0
    assert [name for name, _ in samples if name.endswith("_created")] == []


async def test_a_removed_task_leaves_no_series(client, services, seed, store, monkeypatch):
    # "gone-2" is beyond the snapshot of per-task timestamps: whether it exists is looked up.
    monkeypatch.setattr("scheduler.api.system.METRICS_TASK_LIMIT", 1)
    for name in ("gone-1", "gone-2", "kept"):
        await seed.task(name, type="job", parameters={"fail": name == "gone-1"})
    engine = Engine(EngineConfig(node_id="node-1"), [store], {"job": executor_from_callable(job)}, services.metrics)
    await engine.run_until_idle()
    assert {labels for name, labels in await scrape(client) if name == "scheduler_runs_total"} == {
        (("outcome", "failure"), ("task", "gone-1")), (("outcome", "success"), ("task", "gone-2")),
        (("outcome", "success"), ("task", "kept")),
    }

    for name in ("gone-1", "gone-2"):
        assert await store.remove_spec(name)
    samples = await scrape(client)

    assert [labels for name, labels in samples if dict(labels).get("task", "kept") != "kept"] == []
    assert samples[("scheduler_runs_total", (("outcome", "success"), ("task", "kept")))] == 1


async def test_next_and_last_run_timestamps_per_task(client, seed, memory_store):
    await seed.task("data-sync")
    await seed.task("local-cache", persistent=False, store=memory_store, schedule={"every": "5m", "initialDelay": "5m"})
    await seed.run_all(Outcome.SUCCESS)

    samples = await scrape(client)

    assert samples[("scheduler_task_last_run_timestamp_seconds", (("task", "data-sync"),))] == at(2024, 3, 20, 14)
    assert samples[("scheduler_task_last_success_timestamp_seconds", (("task", "data-sync"),))] == at(2024, 3, 20, 14, 0, 5)
    assert samples[("scheduler_task_next_run_timestamp_seconds", (("task", "data-sync"),))] == at(2024, 3, 20, 15)
    assert samples[("scheduler_task_next_run_timestamp_seconds", (("task", "local-cache"),))] == at(2024, 3, 20, 14, 5)
    assert ("scheduler_task_last_run_timestamp_seconds", (("task", "local-cache"),)) not in samples
    assert samples[("scheduler_tasks", ())] == 2


async def test_held_tasks_are_counted_and_show_no_next_run(client, seed, store, memory_store, monkeypatch):
    monkeypatch.setattr("scheduler.api.system.METRICS_TASK_LIMIT", 2)  # per store: c-both is left out of the snapshot
    await seed.task("a-plain")
    await seed.task("b-off", enabled=False)
    await seed.task("c-both", enabled=False)
    await seed.task("d-held", persistent=False, store=memory_store)
    await store.suspend("c-both")
    await memory_store.suspend("d-held")

    samples = await scrape(client)

    assert samples[("scheduler_tasks_held", (("reason", "disabled"),))] == 2
    assert samples[("scheduler_tasks_held", (("reason", "suspended"),))] == 2
    held = {(dict(labels)["task"], dict(labels)["reason"]) for name, labels in samples if name == "scheduler_task_held"}
    assert held == {("b-off", "disabled"), ("d-held", "suspended")}
    next_runs = {dict(labels)["task"] for name, labels in samples if name == "scheduler_task_next_run_timestamp_seconds"}
    assert next_runs == {"a-plain"}

    await memory_store.unsuspend("d-held")
    samples = await scrape(client)
    assert samples[("scheduler_tasks_held", (("reason", "suspended"),))] == 1
    assert ("scheduler_task_held", (("reason", "suspended"), ("task", "d-held"))) not in samples
    assert ("scheduler_task_next_run_timestamp_seconds", (("task", "d-held"),)) in samples


NODE_TIMEOUT = ApiServices.__dataclass_fields__["node_timeout"].default  # a node silent for longer is gone


async def test_tasks_no_live_node_can_run(client, seed, store, memory_store, clock):
    await seed.task("shell-job", run={"shell": "true"})
    await seed.task("app-1", type="appJob")
    await seed.task("app-2", type="appJob", schedule={"every": "1h", "initialDelay": "1h"})  # not due yet: counted
    await seed.task("local-app", type="appJob", persistent=False, store=memory_store)  # pinned to node-1
    await seed.task("off", type="appJob", enabled=False)  # never runs: not waiting
    await store.heartbeat(NodeInfo("node-1", True, clock()))

    assert (await scrape(client))[("scheduler_tasks_unrunnable", ())] == 3

    await store.heartbeat(NodeInfo("app", True, clock(), task_types=("appJob",)))
    assert (await scrape(client))[("scheduler_tasks_unrunnable", ())] == 1  # local-app: node-1 has no appJob executor

    clock.advance(NODE_TIMEOUT + timedelta(milliseconds=1))  # no heartbeat since: no live node at all
    assert (await scrape(client))[("scheduler_tasks_unrunnable", ())] == 4


async def test_per_task_timestamps_are_bounded(client, seed, monkeypatch):
    monkeypatch.setattr("scheduler.api.system.METRICS_TASK_LIMIT", 2)
    for name in ("c", "a", "b"):
        await seed.task(name)

    samples = await scrape(client)

    shown = sorted(dict(labels)["task"] for name, labels in samples if name == "scheduler_task_next_run_timestamp_seconds")
    assert shown == ["a", "b"]
    assert samples[("scheduler_tasks", ())] == 3


async def test_the_snapshot_of_task_timestamps_keeps_no_task(seed, store):
    await seed.task("t")
    metrics = Metrics()
    tasks = (await store.query_tasks(TaskQuery())).items
    metrics.set_task_times(tasks, len(tasks))
    kept = [weakref.ref(task) for task in tasks]
    due = tasks[0].next_scheduled_execution.timestamp()
    del tasks
    await asyncio.sleep(0)  # leave this step: the loop's handle that resumed it holds the query's result
    gc.collect()
    # The snapshot lives until the next scrape: a thousand tasks, their state and specs, would stay with it.
    assert [ref for ref in kept if ref() is not None] == []
    assert samples_of(metrics.render().decode())[("scheduler_task_next_run_timestamp_seconds", (("task", "t"),))] == due


async def test_recoveries_lease_losses_and_reloads(client, services, seed, store, clock):
    await seed.task("data-sync", type="job")
    [claim] = await store.claim_due("node-9", 1, LEASE)  # a node that then dies
    clock.advance(LEASE + timedelta(seconds=1))
    engine = Engine(EngineConfig(node_id="node-1"), [store], {"job": executor_from_callable(job)}, services.metrics)

    await engine.run_until_idle()  # sees the lease expired
    clock.advance(engine.config.recovery_grace)
    await engine.run_until_idle()  # recovers, then runs the resumed task
    services.metrics.lease_lost(claim)
    services.metrics.reload_finished(False, 2, datetime(2024, 3, 20, 14, 0, 31, tzinfo=timezone.utc))
    samples = await scrape(client)

    assert samples[("scheduler_recoveries_total", ())] == 1
    assert samples[("scheduler_lease_losses_total", ())] == 1
    assert samples[("scheduler_config_last_reload_successful", ())] == 0
    assert samples[("scheduler_files_rejected", ())] == 2
    assert samples[("scheduler_config_last_reload_success_timestamp_seconds", ())] == 0  # none succeeded yet
    services.metrics.reload_finished(True, 0, datetime(2024, 3, 20, 14, 1, tzinfo=timezone.utc))
    samples = await scrape(client)
    assert samples[("scheduler_config_last_reload_successful", ())] == 1
    assert samples[("scheduler_config_last_reload_success_timestamp_seconds", ())] == at(2024, 3, 20, 14, 1)
    assert samples[("scheduler_runs_total", (("outcome", "success"), ("task", "data-sync")))] == 1


async def test_apps_keep_their_own_registries(make_client):
    first, second = Metrics(), Metrics()
    first.claims.inc(3)
    client_one = await make_client(metrics=first)
    client_two = await make_client(metrics=second)

    assert (await scrape(client_one))[("scheduler_claims_total", ())] == 3
    assert (await scrape(client_two))[("scheduler_claims_total", ())] == 0


async def test_private_metrics_scrape_with_a_viewer_token(make_client):
    client = await make_client(metrics_public=False)

    samples = await scrape(client, headers=VIEWER)

    assert ("scheduler_claims_total", ()) in samples
