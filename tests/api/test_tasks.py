"""``/cxs/tasks``: what a Unomi client sees when it lists, shows and acts on tasks."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from scheduler.api.services import ApiServices
from scheduler.model import NodeInfo, Outcome, Status
from scheduler.schedule import first_slot
from scheduler.spec import Source, TaskSpec
from tests.api.conftest import ADMIN, VIEWER

CRM = {"targetSystem": "CRM", "batchSize": 1000}


async def get_json(client, path: str, status: int = 200, headers=VIEWER):
    response = await client.get(path, headers=headers)
    assert response.status == status, await response.text()
    return await response.json()


async def test_list_answers_the_unomi_shape(client, seed):
    await seed.task("data-sync", type="dataSync", parameters=CRM)
    await seed.run_all(Outcome.SUCCESS)

    body = await get_json(client, "/cxs/tasks")

    assert body == {
        "list": [
            {
                "itemId": "data-sync",
                "taskType": "dataSync",
                "status": "SCHEDULED",
                "nextScheduledExecution": "2024-03-20T15:00:00Z",
                "lastExecutionDate": "2024-03-20T14:00:00Z",
                "failureCount": 0,
                "persistent": True,
                "parameters": {"targetSystem": "CRM", "batchSize": 1000},
                "successCount": 1,
                "lastOutcome": "success",
                "node": None,
                "labels": {},
                "enabled": True,
                "suspended": False,
            }
        ],
        "offset": 0,
        "pageSize": 50,
        "totalSize": 1,
    }


async def test_list_filters_by_status_and_type(client, seed):
    await seed.task("sync-a", type="dataSync")
    await seed.task("sync-b", type="dataSync", schedule={"after": "0s"}, retry={"maxRetries": 0})
    await seed.task("purge", type="purge", schedule={"every": "2h", "initialDelay": "1h"})
    await seed.run_all(Outcome.FAILURE, error="boom")  # sync-a retries later, sync-b is FAILED

    failed = await get_json(client, "/cxs/tasks?status=FAILED")
    sync = await get_json(client, "/cxs/tasks?type=dataSync")
    both = await get_json(client, "/cxs/tasks?type=dataSync&status=SCHEDULED")

    assert [t["itemId"] for t in failed["list"]] == ["sync-b"] and failed["totalSize"] == 1
    assert [t["itemId"] for t in sync["list"]] == ["sync-a", "sync-b"] and sync["totalSize"] == 2
    assert [(t["itemId"], t["failureCount"]) for t in both["list"]] == [("sync-a", 1)]


async def test_list_filters_by_label_selector_with_paging_and_totals(client, seed, memory_store):
    await seed.task("etl-a", labels={"team": "data", "tier": "batch"})
    await seed.task("etl-b", labels={"team": "data", "tier": "stream"})
    await seed.task("etl-c", labels={"team": "data"})
    await seed.task("web", labels={"team": "web", "tier": "stream"})
    await seed.task("cache", persistent=False, store=memory_store, labels={"team": "data", "tier": "cache"})

    async def ids(selector: str, paging: str = "") -> tuple[list[str], int]:
        body = await get_json(client, f"/cxs/tasks?labelSelector={quote(selector)}{paging}")
        return [t["itemId"] for t in body["list"]], body["totalSize"]

    assert await ids("team=data,tier!=batch") == (["cache", "etl-b", "etl-c"], 3)
    assert await ids("team==data,tier!=batch", "&offset=1&limit=1") == (["etl-b"], 3)
    assert await ids("tier") == (["cache", "etl-a", "etl-b", "web"], 4)
    assert await ids("team, !tier") == (["etl-c"], 1)
    assert await ids("tier=stream", "&sortBy=itemId:desc") == (["web", "etl-b"], 2)
    with_type = await get_json(client, "/cxs/tasks?status=SCHEDULED&labelSelector=team%3Dweb")
    assert [t["itemId"] for t in with_type["list"]] == ["web"] and with_type["list"][0]["labels"] == {
        "team": "web", "tier": "stream"
    }


async def test_list_sorts_and_pages(client, seed, clock):
    for index, name in enumerate(["c", "a", "d", "b"]):
        await seed.task(name, schedule={"every": "1h", "initialDelay": f"{10 * (4 - index)}m"})

    by_next = await get_json(client, "/cxs/tasks?sortBy=nextScheduledExecution")
    by_next_desc = await get_json(client, "/cxs/tasks?sortBy=nextScheduledExecution:desc")
    by_id_asc = await get_json(client, "/cxs/tasks?sortBy=itemId:asc")
    page = await get_json(client, "/cxs/tasks?offset=1&limit=2")

    assert [t["itemId"] for t in by_next["list"]] == ["b", "d", "a", "c"]
    assert [t["itemId"] for t in by_next_desc["list"]] == ["c", "a", "d", "b"]
    assert [t["itemId"] for t in by_id_asc["list"]] == ["a", "b", "c", "d"]
    assert page == {"list": page["list"], "offset": 1, "pageSize": 2, "totalSize": 4}
    assert [t["itemId"] for t in page["list"]] == ["b", "c"]


async def test_list_merges_the_memory_store_with_totals(client, seed, memory_store):
    for name in ("a", "c", "e"):
        await seed.task(name)
    for name in ("b", "d"):
        await seed.task(name, persistent=False, store=memory_store)

    everything = await get_json(client, "/cxs/tasks")
    second_page = await get_json(client, "/cxs/tasks?offset=2&limit=2")

    assert [(t["itemId"], t["persistent"]) for t in everything["list"]] == [
        ("a", True), ("b", False), ("c", True), ("d", False), ("e", True)
    ]
    assert everything["totalSize"] == 5
    assert [t["itemId"] for t in second_page["list"]] == ["c", "d"] and second_page["totalSize"] == 5


async def test_merged_listing_follows_the_requested_order(client, seed, memory_store):
    for name, delay in (("a", "40m"), ("c", "10m"), ("e", "30m")):
        await seed.task(name, schedule={"every": "1h", "initialDelay": delay})
    for name, delay in (("b", "20m"), ("d", "50m")):
        await seed.task(name, persistent=False, store=memory_store, schedule={"every": "1h", "initialDelay": delay})

    everything = await get_json(client, "/cxs/tasks?sortBy=nextScheduledExecution:desc")
    middle = await get_json(client, "/cxs/tasks?sortBy=nextScheduledExecution:desc&offset=1&limit=3")

    assert [t["itemId"] for t in everything["list"]] == ["d", "a", "e", "b", "c"]
    assert [t["itemId"] for t in middle["list"]] == ["a", "e", "b"] and middle["totalSize"] == 5


async def test_show_gives_state_history_and_source(client, seed, store, clock):
    await seed.task("data-sync", type="dataSync", parameters=CRM, description="Sync CRM records", labels={"team": "crm"})
    await seed.run_all(Outcome.FAILURE, error="connection refused")
    clock.advance(timedelta(minutes=1))
    [claim] = await seed.claim()
    await store.save_progress(
        claim, checkpoint={"lastProcessedId": "12345", "progress": 50},
        step="Processing records", details={"processedCount": 500, "totalCount": 1000},
    )

    task = await get_json(client, "/cxs/tasks/data-sync")

    assert task["status"] == "RUNNING"
    assert task["currentStep"] == "Processing records"
    assert task["statusDetails"] == {"processedCount": 500, "totalCount": 1000}
    assert task["checkpointData"] == {"lastProcessedId": "12345", "progress": 50}
    assert (task["failureCount"], task["successCount"], task["lastError"]) == (1, 0, "connection refused")
    assert (task["maxRetries"], task["retryDelay"]) == (3, 60000)
    assert task["lastExecutionDate"] == "2024-03-20T14:01:05Z"
    assert task["lease"] == {"owner": "node-1", "until": "2024-03-20T14:01:35Z", "fence": 2}
    assert task["source"] == {"path": "/etc/scheduler/tasks.d/demo.yaml", "line": 3}
    assert (task["description"], task["labels"]) == ("Sync CRM records", {"team": "crm"})
    assert task["schedule"]["every"] == 3600
    assert "overrides" not in task
    [entry] = task["history"]
    assert (entry["outcome"], entry["error"], entry["node"]) == ("failure", "connection refused", "node-1")


async def test_runs_are_listed_newest_first_and_paged(client, seed, clock):
    await seed.task("data-sync")
    await seed.run_all(Outcome.FAILURE, error="boom")
    clock.advance(timedelta(minutes=1))
    await seed.run_all(Outcome.SUCCESS)

    runs = await get_json(client, "/cxs/tasks/data-sync/runs")
    first_only = await get_json(client, "/cxs/tasks/data-sync/runs?limit=1&offset=1")

    assert [(r["attempt"], r["outcome"], r["durationMs"]) for r in runs["list"]] == [(2, "success", 5000), (1, "failure", 5000)]
    assert runs["list"][1] == {
        "runId": runs["list"][1]["runId"],
        "taskId": "data-sync",
        "scheduledFor": "2024-03-20T14:00:00Z",
        "attempt": 1,
        "node": "node-1",
        "fence": 1,
        "startedAt": "2024-03-20T14:00:00Z",
        "finishedAt": "2024-03-20T14:00:05Z",
        "durationMs": 5000,
        "outcome": "failure",
        "exitCode": 1,
        "output": "done",
        "error": "boom",
    }
    assert (first_only["totalSize"], first_only["offset"], first_only["pageSize"]) == (2, 1, 1)
    assert [r["attempt"] for r in first_only["list"]] == [1]


async def test_a_run_is_shown_by_its_run_id(client, seed, clock):
    await seed.task("data-sync")
    await seed.task("other")
    await seed.run_all(Outcome.FAILURE, error="boom")
    clock.advance(timedelta(minutes=1))
    await seed.run_all(Outcome.SUCCESS)
    runs = (await get_json(client, "/cxs/tasks/data-sync/runs"))["list"]

    for run in runs:
        assert await get_json(client, f"/cxs/tasks/data-sync/runs/{run['runId']}") == run
    for run_id in (f"{runs[0]['runId']}0", "nope"):
        assert await get_json(client, f"/cxs/tasks/data-sync/runs/{run_id}", 404) == {
            "error": "Run not found", "code": "404", "message": f"No run {run_id} is recorded for task data-sync",
        }
    # A run of another task is not found under this one.
    other = (await get_json(client, "/cxs/tasks/other/runs"))["list"][0]["runId"]
    assert (await get_json(client, f"/cxs/tasks/data-sync/runs/{other}", 404))["error"] == "Run not found"


async def test_next_lists_the_slots_in_utc_and_in_the_tasks_zone(client, seed, clock):
    await seed.task("nightly", schedule={"cron": "30 2 * * *", "timezone": "Europe/Paris"})
    shown = await get_json(client, "/cxs/tasks/nightly/next?count=3&from=2024-03-30T12:00:00Z")
    assert shown == {
        "itemId": "nightly",
        "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Paris", "jitter": 0, "missedRuns": "runOnce"},
        "timezone": "Europe/Paris",
        "list": [
            {"slot": "2024-03-31T01:00:00Z", "fireTime": "2024-03-31T01:00:00Z", "local": "2024-03-31T03:00:00+02:00",
             "note": "02:30 does not exist that day (clocks go forward): runs at 03:00"},
            {"slot": "2024-04-01T00:30:00Z", "fireTime": "2024-04-01T00:30:00Z", "local": "2024-04-01T02:30:00+02:00",
             "note": None},
            {"slot": "2024-04-02T00:30:00Z", "fireTime": "2024-04-02T00:30:00Z", "local": "2024-04-02T02:30:00+02:00",
             "note": None},
        ],
        "reason": None,
    }
    first = (await get_json(client, "/cxs/tasks/nightly/next?count=1"))["list"]  # from the task's next run
    assert [entry["slot"] for entry in first] == ["2024-03-21T01:30:00Z"]  # START is 2024-03-20T14:00Z


async def test_next_follows_the_tasks_state(client, seed, clock):
    await seed.task("hourly", retry={"maxRetries": 1, "retryDelay": "10m"})
    await seed.task("off", enabled=False)
    await seed.task("once", schedule={"after": "0s"})
    clock.advance(timedelta(hours=1))
    [hourly, once] = await seed.claim()
    running = await get_json(client, "/cxs/tasks/hourly/next?count=2")  # the slot after the running one
    assert [e["slot"] for e in running["list"]] == ["2024-03-20T16:00:00Z", "2024-03-20T17:00:00Z"]
    assert await get_json(client, "/cxs/tasks/once/next") == {
        "itemId": "once", "schedule": {"after": 0, "jitter": 0, "missedRuns": "runOnce"}, "timezone": "UTC",
        "list": [], "reason": "a one-shot: nothing runs after the running one",
    }
    clock.advance(timedelta(seconds=5))
    await seed.finish(hourly, Outcome.FAILURE, "boom")
    await seed.finish(once, Outcome.SUCCESS)

    retry, following = (await get_json(client, "/cxs/tasks/hourly/next?count=2"))["list"]
    assert (retry["slot"], retry["fireTime"], retry["note"]) == (
        "2024-03-20T14:00:00Z", "2024-03-20T15:10:05Z", "attempt 2 (a retry)",
    )
    assert following["slot"] == "2024-03-20T16:00:00Z"
    assert (await get_json(client, "/cxs/tasks/once/next"))["reason"] == "the task is COMPLETED"
    assert (await get_json(client, "/cxs/tasks/off/next"))["reason"] == "the task is disabled"


async def test_next_shows_how_missed_slots_are_caught_up(client, seed, clock):
    await seed.task("every-slot", schedule={"every": "1h", "missedRuns": "runAll"})
    await seed.task("one-for-all", schedule={"every": "1h"})
    clock.advance(timedelta(hours=2, minutes=30))  # nobody ran the slots of 14:00, 15:00 and 16:00

    caught_up = (await get_json(client, "/cxs/tasks/every-slot/next?count=4"))["list"]
    collapsed = (await get_json(client, "/cxs/tasks/one-for-all/next?count=2"))["list"]
    assert [(e["slot"][11:16], e["note"]) for e in caught_up] == [
        ("14:00", "due now"), ("15:00", "due now"), ("16:00", "due now"), ("17:00", None),
    ]
    assert [(e["slot"][11:16], e["note"]) for e in collapsed] == [("14:00", "due now"), ("17:00", None)]
    later = (await get_json(client, "/cxs/tasks/every-slot/next?count=1&from=2024-03-21T10:30:00Z"))["list"]
    assert [e["slot"] for e in later] == ["2024-03-21T11:00:00Z"]  # the task's phase, after that time


async def test_next_refuses_bad_parameters(client, seed):
    await seed.task("hourly")
    for query, message in [
        ("count=0", "Invalid count: 0 (expected an integer from 1 to 1000)"),
        ("count=1001", "Invalid count: 1001 (expected an integer from 1 to 1000)"),
        ("from=tomorrow", "Invalid from: expected an ISO 8601 time such as 2027-03-28T00:00:00Z, got 'tomorrow'"),
        ("from=2027-03-28T00:00:00", "Invalid from: time '2027-03-28T00:00:00' has no time zone: add Z or an offset such as +01:00"),
    ]:
        assert await get_json(client, f"/cxs/tasks/hourly/next?{query}", 400) == {
            "error": "Bad Request", "code": "400", "message": message,
        }
    # Any date-time is taken; past the calendar's end there is simply no run.
    last = await get_json(client, "/cxs/tasks/hourly/next?from=9999-12-31T23:59:59-02:00")
    assert (last["list"], last["reason"]) == ([], "no run after that time")


async def test_a_url_quoted_in_an_error_or_output_is_shown_redacted(client, seed, clock):
    # Any executor's error may quote a URL (requests words an HTTPError so), and so may a command's output.
    error = "HTTPError: 401 Client Error: Unauthorized for url: https://bot:pa55word@api.example.com/v1/items?token=T0KEN&page=2"
    shown = "HTTPError: 401 Client Error: Unauthorized for url: https://bot:***@api.example.com/v1/items?token=***&page=***"
    await seed.task("crm-export", schedule={"after": "0s"}, retry={"maxRetries": 0})
    [claim] = await seed.claim()
    clock.advance(timedelta(seconds=5))
    await seed.finish(claim, Outcome.FAILURE, error, output="GET https://api.example.com/v1/items?token=T0KEN\n")

    task = await get_json(client, "/cxs/tasks/crm-export")
    [run] = (await get_json(client, "/cxs/tasks/crm-export/runs"))["list"]

    assert (task["status"], task["lastError"], task["history"][0]["error"]) == ("FAILED", shown, shown)
    assert (run["error"], run["output"]) == (shown, "GET https://api.example.com/v1/items?token=***\n")


async def test_cancel_answers_204_and_wakes_the_node(client, seed, node):
    await seed.task("data-sync")
    await seed.claim()

    response = await client.delete("/cxs/tasks/data-sync", headers=ADMIN)
    again = await client.delete("/cxs/tasks/data-sync", headers=ADMIN)

    assert (response.status, await response.read()) == (204, b"")
    assert (await get_json(client, "/cxs/tasks/data-sync"))["status"] == "CANCELLED"
    assert again.status == 409
    assert (await again.json())["message"] == "Task data-sync is already CANCELLED: a FAILED or CANCELLED task cannot be cancelled"
    assert node.wakes == 1


async def test_cancelling_a_completed_one_shot_disables_it_as_in_apache_unomi(client, seed):
    await seed.task("once", schedule={"after": "0s"})
    await seed.run_all(Outcome.SUCCESS)
    assert (await get_json(client, "/cxs/tasks/once"))["status"] == "COMPLETED"

    response = await client.delete("/cxs/tasks/once", headers=ADMIN)

    assert response.status == 204
    task = await get_json(client, "/cxs/tasks/once")
    assert (task["status"], task["nextScheduledExecution"]) == ("CANCELLED", None)


async def test_retry_a_failed_task_with_and_without_reset(client, seed, clock):
    await seed.task("one-shot", type="dataSync", schedule={"after": "0s"}, retry={"maxRetries": 0})
    await seed.run_all(Outcome.FAILURE, error="boom")

    kept = await client.post("/cxs/tasks/one-shot/retry", headers=ADMIN)
    kept_body = await kept.json()
    await seed.run_all(Outcome.FAILURE, error="boom again")
    reset = await client.post("/cxs/tasks/one-shot/retry?resetFailureCount=true", headers=ADMIN)
    reset_body = await reset.json()

    assert kept.status == 200
    assert {k: kept_body[k] for k in ("itemId", "taskType", "status", "nextScheduledExecution", "failureCount", "persistent")} == {
        "itemId": "one-shot", "taskType": "dataSync", "status": "SCHEDULED",
        "nextScheduledExecution": "2024-03-20T14:00:05Z", "failureCount": 1, "persistent": True,
    }
    assert reset.status == 200
    assert (reset_body["status"], reset_body["failureCount"]) == ("SCHEDULED", 0)
    assert "history" not in reset_body


async def test_retry_of_a_scheduled_task_is_a_conflict(client, seed):
    await seed.task("data-sync")

    response = await client.post("/cxs/tasks/data-sync/retry", headers=ADMIN)

    assert response.status == 409
    assert await response.json() == {
        "error": "Conflict",
        "code": "409",
        "message": "Task data-sync is SCHEDULED: only a FAILED or CANCELLED task can be retried",
    }


async def test_resume_a_crashed_task_keeps_its_checkpoint(client, seed):
    await seed.task("data-sync", type="dataSync", onCrash="manual")
    await seed.crash(checkpoint={"lastProcessedId": "12345", "progress": 50})
    crashed = await get_json(client, "/cxs/tasks/data-sync")

    response = await client.post("/cxs/tasks/data-sync/resume", headers=ADMIN)
    body = await response.json()
    again = await client.post("/cxs/tasks/data-sync/resume", headers=ADMIN)

    assert crashed["status"] == "CRASHED" and crashed["statusDetails"]["crashedNode"] == "node-1"
    assert response.status == 200
    assert (body["status"], body["checkpointData"]) == ("SCHEDULED", {"lastProcessedId": "12345", "progress": 50})
    assert body["nextScheduledExecution"] == "2024-03-20T14:00:31Z"
    assert again.status == 409


async def test_config_overrides_the_file_and_survives_its_reload(client, seed, store, clock):
    await seed.task("data-sync", type="dataSync", retry={"maxRetries": 1, "retryDelay": "10s"})

    response = await client.put("/cxs/tasks/data-sync/config?maxRetries=5&retryDelay=60000", headers=ADMIN)
    body = await response.json()
    edited = TaskSpec.from_dict(
        {"name": "data-sync", "type": "dataSync", "schedule": {"every": "1h"}, "retry": {"maxRetries": 2, "retryDelay": "20s"}},
        source=Source("/etc/scheduler/tasks.d/demo.yaml", 3),
    )
    await store.upsert_spec(edited, first_due=first_slot(edited.schedule, clock()), spec_version=2.0)
    after_reload = await get_json(client, "/cxs/tasks/data-sync")
    delay_only = await client.put("/cxs/tasks/data-sync/config?retryDelay=0", headers=ADMIN)

    assert response.status == 200
    assert (body["itemId"], body["status"], body["maxRetries"], body["retryDelay"], body["persistent"]) == (
        "data-sync", "SCHEDULED", 5, 60000, True
    )
    assert body["overrides"] == {"maxRetries": 5, "retryDelay": 60000}
    assert (after_reload["maxRetries"], after_reload["retryDelay"]) == (5, 60000)
    assert after_reload["overrides"] == {"maxRetries": 5, "retryDelay": 60000}
    assert (await delay_only.json())["overrides"] == {"maxRetries": 5, "retryDelay": 0}


async def test_config_without_parameters_shows_the_settings_in_force(client, seed, node):
    await seed.task("data-sync", retry={"maxRetries": 1, "retryDelay": "10s"})

    response = await client.put("/cxs/tasks/data-sync/config", headers=ADMIN)

    body = await response.json()
    assert response.status == 200
    assert (body["maxRetries"], body["retryDelay"], "overrides" in body) == (1, 10000, False)
    assert node.wakes == 0


async def test_deleting_the_config_brings_back_the_files_values(client, seed, store, node):
    await seed.task("data-sync", retry={"maxRetries": 1, "retryDelay": "10s"})
    await client.put("/cxs/tasks/data-sync/config?maxRetries=5&retryDelay=60000", headers=ADMIN)

    viewer = await client.delete("/cxs/tasks/data-sync/config", headers=VIEWER)
    assert viewer.status == 403 and (await store.get_task("data-sync")).max_retries_override == 5

    response = await client.delete("/cxs/tasks/data-sync/config", headers=ADMIN)
    body = await response.json()
    again = await client.delete("/cxs/tasks/data-sync/config", headers=ADMIN)

    assert response.status == 200
    assert (body["itemId"], body["maxRetries"], body["retryDelay"], "overrides" in body) == ("data-sync", 1, 10000, False)
    shown = await get_json(client, "/cxs/tasks/data-sync")
    assert (shown["maxRetries"], shown["retryDelay"], "overrides" in shown) == (1, 10000, False)
    assert again.status == 200 and "overrides" not in await again.json()


async def test_run_now_makes_the_task_due_and_refuses_while_running(client, seed, clock):
    await seed.task("nightly", schedule={"cron": "0 3 * * *"})
    await seed.task("busy")
    await seed.claim()  # "busy" is due now; "nightly" is not

    response = await client.post("/cxs/tasks/nightly/run", headers=ADMIN)
    busy = await client.post("/cxs/tasks/busy/run", headers=ADMIN)

    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["nextScheduledExecution"]) == ("SCHEDULED", "2024-03-20T14:00:00Z")
    assert busy.status == 409


async def test_suspend_holds_the_task_and_unsuspend_gives_back_its_slot(client, seed, store, node, clock):
    await seed.task("nightly", schedule={"cron": "0 3 * * *"})
    clock.advance(timedelta(minutes=5))

    response = await client.post("/cxs/tasks/nightly/suspend", headers=ADMIN)
    body = await response.json()
    assert response.status == 200 and node.wakes == 1
    assert (body["status"], body["suspended"], body["suspendedAt"]) == ("SCHEDULED", True, "2024-03-20T14:05:00Z")
    assert body["nextScheduledExecution"] is None  # nothing is planned while it is held
    listed = (await get_json(client, "/cxs/tasks"))["list"][0]
    assert (listed["suspended"], listed["enabled"], listed["nextScheduledExecution"]) == (True, True, None)
    again = await client.post("/cxs/tasks/nightly/suspend", headers=ADMIN)
    assert again.status == 409
    assert (await again.json())["message"] == "Task nightly is already suspended (since 2024-03-20T14:05:00Z)"
    refused = await client.post("/cxs/tasks/nightly/run", headers=ADMIN)
    assert refused.status == 409 and (await refused.json())["message"].startswith("Task nightly is suspended (since")
    assert (await store.get_task("nightly")).suspended_at == clock()

    response = await client.post("/cxs/tasks/nightly/unsuspend", headers=ADMIN)
    body = await response.json()
    assert response.status == 200 and node.wakes == 2
    assert (body["suspended"], body["suspendedAt"], body["nextScheduledExecution"]) == (
        False, None, "2024-03-21T03:00:00Z"
    )
    again = await client.post("/cxs/tasks/nightly/unsuspend", headers=ADMIN)
    assert again.status == 409 and (await again.json())["message"] == "Task nightly is not suspended"


async def test_suspend_needs_an_administrator_and_a_known_task(client, seed, store):
    await seed.task("nightly")
    for action in ("suspend", "unsuspend"):
        viewer = await client.post(f"/cxs/tasks/nightly/{action}", headers=VIEWER)
        unknown = await client.post(f"/cxs/tasks/nope/{action}", headers=ADMIN)
        assert (viewer.status, unknown.status) == (403, 404)
    assert not (await store.get_task("nightly")).suspended


async def test_a_disabled_task_shows_no_next_run_and_refuses_run_now(client, seed, store):
    await seed.task("off", enabled=False)

    listed = (await get_json(client, "/cxs/tasks"))["list"][0]
    refused = await client.post("/cxs/tasks/off/run", headers=ADMIN)

    assert (listed["enabled"], listed["suspended"], listed["nextScheduledExecution"]) == (False, False, None)
    assert refused.status == 409
    assert (await refused.json())["message"] == (
        "Task off is disabled (enabled: false in /etc/scheduler/tasks.d/demo.yaml:3): it runs nothing until its "
        "spec enables it"
    )
    assert (await store.get_task("off")).next_scheduled_execution is not None  # kept for when it is enabled


async def test_show_tells_whether_a_live_node_can_run_the_task(client, seed, store, memory_store, clock):
    await seed.task("shell-job", run={"shell": "true"})
    await seed.task("app-job", type="appJob")
    await seed.task("on-node-3", run={"shell": "true"}, nodes=["node-3"])
    await seed.task("local-app", type="appJob", persistent=False, store=memory_store)  # pinned to node-1
    await store.heartbeat(NodeInfo("node-1", True, clock(), task_types=("report",)))
    await store.heartbeat(NodeInfo("api-only", False, clock(), task_types=("appJob",)))  # runs nothing
    # Its last heartbeat is older than the node timeout: gone.
    node_timeout = ApiServices.__dataclass_fields__["node_timeout"].default
    await store.heartbeat(NodeInfo("node-3", True, clock() - node_timeout - timedelta(seconds=1),
                                   task_types=("appJob",)))

    async def shown() -> dict[str, tuple]:
        names = ("shell-job", "app-job", "on-node-3", "local-app")
        tasks = [await get_json(client, f"/cxs/tasks/{name}") for name in names]
        return {task["itemId"]: (task["executorType"], task["runnable"], task["status"]) for task in tasks}

    assert await shown() == {
        "shell-job": (None, True, "SCHEDULED"),
        "app-job": ("appJob", False, "SCHEDULED"),
        "on-node-3": (None, False, "SCHEDULED"),
        "local-app": ("appJob", False, "SCHEDULED"),
    }
    await store.heartbeat(NodeInfo("node-3", True, clock(), task_types=("appJob",)))
    assert await shown() == {
        "shell-job": (None, True, "SCHEDULED"),
        "app-job": ("appJob", True, "SCHEDULED"),
        "on-node-3": (None, True, "SCHEDULED"),
        "local-app": ("appJob", False, "SCHEDULED"),  # only node-1 may run it, and it has no appJob executor
    }
    answer = await client.post("/cxs/tasks/local-app/run", headers=ADMIN)
    assert ((await answer.json())["executorType"], (await answer.json())["runnable"]) == ("appJob", False)


async def test_actions_reach_tasks_of_the_memory_store(client, seed, memory_store, node):
    await seed.task("local-cache", persistent=False, store=memory_store)

    shown = await get_json(client, "/cxs/tasks/local-cache")
    cancelled = await client.delete("/cxs/tasks/local-cache", headers=ADMIN)

    assert (shown["persistent"], shown["node"]) == (False, "node-1")
    assert cancelled.status == 204
    assert (await memory_store.get_task("local-cache")).status == Status.CANCELLED
    assert node.wakes == 1


async def test_purge_deletes_what_ended_before_the_given_days(client, seed, memory_store, clock):
    await seed.task("old-failure", schedule={"after": "0s"}, retry={"maxRetries": 0})
    await seed.task("local-once", persistent=False, store=memory_store, schedule={"after": "0s"})
    await seed.run_all(Outcome.FAILURE, error="boom")
    await seed.run_all(Outcome.SUCCESS, store=memory_store)
    clock.advance(timedelta(days=3))
    await seed.task("recent-failure", schedule={"after": "0s"}, retry={"maxRetries": 0})
    await seed.task("periodic")
    await seed.run_all(Outcome.FAILURE, error="boom")

    kept = await client.post("/-/purge?days=7", headers=ADMIN)
    purged = await client.post("/-/purge?days=2", headers=ADMIN)
    remaining = await get_json(client, "/cxs/tasks")

    assert (kept.status, await kept.json()) == (200, {"tasks": 0, "runs": 0, "runsBeyondKeepRuns": 0})
    assert (purged.status, await purged.json()) == (200, {"tasks": 2, "runs": 2, "runsBeyondKeepRuns": 0})
    assert [t["itemId"] for t in remaining["list"]] == ["periodic", "recent-failure"]


async def test_an_unknown_name_with_copies_per_node_names_them(client, store, clock):
    spec = TaskSpec.from_dict({"name": "livez-check", "schedule": {"every": "1m"}, "runOn": "all"})
    nodes = [f"node-{i:02d}" for i in range(12)]
    for node_id in nodes:
        await store.upsert_spec(spec, item_id=f"livez-check@{node_id}", node=node_id, first_due=clock())

    for method, path in (("GET", "/cxs/tasks/livez-check"), ("POST", "/cxs/tasks/livez-check/run")):
        response = await client.request(method, path, headers=ADMIN)
        assert response.status == 404
        assert await response.json() == {
            "error": "Task not found", "code": "404",
            "message": "No task exists with ID: livez-check (it runs as one copy per node: "
            + ", ".join(f"livez-check@{n}" for n in nodes[:10]) + " and 2 more)",
        }
    for unrelated in ("livez", "livez-check@node-99"):
        response = await client.get(f"/cxs/tasks/{unrelated}", headers=VIEWER)
        assert (await response.json())["message"] == f"No task exists with ID: {unrelated}"


async def test_unknown_task_is_404_on_every_task_route(client):
    routes = [
        ("GET", "/cxs/tasks/123e4567"), ("GET", "/cxs/tasks/123e4567/runs"), ("DELETE", "/cxs/tasks/123e4567"),
        ("GET", "/cxs/tasks/123e4567/runs/123e4567:1710943200000:1"), ("GET", "/cxs/tasks/123e4567/next"),
        ("POST", "/cxs/tasks/123e4567/retry"), ("POST", "/cxs/tasks/123e4567/resume"),
        ("PUT", "/cxs/tasks/123e4567/config?maxRetries=1"), ("DELETE", "/cxs/tasks/123e4567/config"),
        ("POST", "/cxs/tasks/123e4567/run"),
    ]
    for method, path in routes:
        response = await client.request(method, path, headers=ADMIN)
        assert response.status == 404, (method, path)
        assert await response.json() == {
            "error": "Task not found", "code": "404", "message": "No task exists with ID: 123e4567"
        }
