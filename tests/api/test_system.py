"""Nodes, config, reload and health: what an operator and a load balancer see."""

from __future__ import annotations

from datetime import datetime, timezone

from scheduler.model import NodeInfo
from tests.api.conftest import ADMIN, VIEWER

FILES = {
    "tasksDir": "/etc/scheduler/tasks.d",
    "lastReload": None,
    "files": [
        {"path": "/etc/scheduler/tasks.d/sync.yaml", "status": "applied", "sha256": "ab" * 32, "tasks": ["data-sync"],
         "errors": []},
        {"path": "/etc/scheduler/tasks.d/bad.yaml", "status": "rejected", "sha256": "cd" * 32, "tasks": [],
         "errors": [{"location": "/etc/scheduler/tasks.d/bad.yaml:4:3", "line": 4, "col": 3, "pointer": "/schedule",
                     "message": "a schedule needs exactly one of cron, every, at, after, afterSuccessOf (found: none)"}]},
    ],
}


async def test_nodes_lists_heartbeats(client, store):
    beat = datetime(2024, 3, 20, 14, 0, 5, tzinfo=timezone.utc)
    await store.heartbeat(NodeInfo("node-1", True, beat, running=2, stuck=1, started_at=beat, version="0.1.0",
                                   listen="127.0.0.1:8181", task_types=("appJob", "report")))
    await store.heartbeat(NodeInfo("api-only", False, beat))

    response = await client.get("/cxs/nodes", headers=VIEWER)

    assert response.status == 200
    assert await response.json() == {
        "list": [
            {"nodeId": "api-only", "executor": False, "heartbeat": "2024-03-20T14:00:05Z", "running": 0,
             "stuck": 0, "startedAt": None, "version": "", "listen": "", "taskTypes": []},
            {"nodeId": "node-1", "executor": True, "heartbeat": "2024-03-20T14:00:05Z", "running": 2,
             "stuck": 1, "startedAt": "2024-03-20T14:00:05Z", "version": "0.1.0", "listen": "127.0.0.1:8181",
             "taskTypes": ["appJob", "report"]},
        ],
        "totalSize": 2,
    }


async def test_config_shows_applied_and_rejected_files(client, node):
    node.config = FILES

    response = await client.get("/cxs/config", headers=VIEWER)

    assert response.status == 200
    assert await response.json() == FILES


async def test_config_and_reload_are_503_without_a_tasks_directory(make_client):
    client = await make_client(config_status=None, reload=None)

    config = await client.get("/cxs/config", headers=VIEWER)
    reload = await client.post("/-/reload", headers=ADMIN)

    assert config.status == 503
    assert await config.json() == {
        "error": "Service Unavailable", "code": "503", "message": "This node has no task directory configuration to show"
    }
    assert reload.status == 503


async def test_reload_answers_the_report_and_wakes_the_node(client, node):
    response = await client.post("/-/reload", headers=ADMIN)

    assert response.status == 200
    assert (await response.json())["ok"] is True
    assert (node.reloads, node.wakes) == (1, 1)


async def test_health_needs_no_credentials(client, node):
    live = await client.get("/livez")
    ready = await client.get("/readyz")
    node.problems = ["SQLite store file /var/lib/scheduler/scheduler.db was deleted: restart the node"]
    not_ready = await client.get("/readyz")
    still_live = await client.get("/livez")

    assert (live.status, await live.json()) == (200, {"status": "ok"})
    assert (ready.status, await ready.json()) == (200, {"status": "ready", "ready": True, "problems": []})
    assert (not_ready.status, await not_ready.json()) == (
        503, {"status": "not ready", "ready": False, "problems": node.problems}
    )
    assert still_live.status == 200


async def test_the_openapi_document_is_served(client):
    response = await client.get("/openapi.json")

    document = await response.json()
    assert response.status == 200
    assert document["openapi"].startswith("3.1")
    assert "/cxs/tasks/{id}/config" in document["paths"]
