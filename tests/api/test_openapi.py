"""The OpenAPI document tells the truth: every route is in it, and every answer matches it."""

from __future__ import annotations

import io

import pytest

from scheduler.api.routes import ROUTES
from scheduler.model import NodeInfo, Outcome
from tests.api.conftest import ADMIN, VIEWER
from tests.api.openapi_check import OpenApiDocument

DOCUMENT = OpenApiDocument()
NONE: dict[str, str] = {}


def test_every_route_is_documented_and_every_operation_routed():
    assert {(r.method, r.path) for r in ROUTES} == DOCUMENT.operations()


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_documented_error_answers_follow_the_route_role(route):
    responses = DOCUMENT.operation(route.method, route.path)["responses"]

    assert ("401" in responses) == (route.role is not None)
    assert ("403" in responses) == (route.role == "ADMINISTRATOR")
    if "{id}" in route.path:
        assert "404" in responses


# (method, path template, URL, headers, expected status): a tour of every operation and answer.
TOUR = [
    ("GET", "/cxs/tasks", "/cxs/tasks", VIEWER, 200),
    ("GET", "/cxs/tasks", "/cxs/tasks?status=FAILED&type=dataSync&sortBy=lastExecutionDate:desc&limit=1", VIEWER, 200),
    ("GET", "/cxs/tasks", "/cxs/tasks?status=NOPE", VIEWER, 400),
    ("GET", "/cxs/tasks", "/cxs/tasks", NONE, 401),
    ("GET", "/cxs/tasks/{id}", "/cxs/tasks/data-sync", VIEWER, 200),
    ("GET", "/cxs/tasks/{id}", "/cxs/tasks/local-cache", VIEWER, 200),
    ("GET", "/cxs/tasks/{id}", "/cxs/tasks/running", VIEWER, 200),
    ("GET", "/cxs/tasks/{id}", "/cxs/tasks/crashed", VIEWER, 200),
    ("GET", "/cxs/tasks/{id}", "/cxs/tasks/nope", VIEWER, 404),
    ("GET", "/cxs/tasks/{id}/runs", "/cxs/tasks/failed/runs", VIEWER, 200),
    ("GET", "/cxs/tasks/{id}/runs", "/cxs/tasks/running/runs", VIEWER, 200),
    ("GET", "/cxs/tasks/{id}/runs", "/cxs/tasks/failed/runs?offset=-1", VIEWER, 400),
    ("PUT", "/cxs/tasks/{id}/config", "/cxs/tasks/data-sync/config?maxRetries=5&retryDelay=60000", ADMIN, 200),
    ("PUT", "/cxs/tasks/{id}/config", "/cxs/tasks/data-sync/config?maxRetries=5", VIEWER, 403),
    ("PUT", "/cxs/tasks/{id}/config", "/cxs/tasks/data-sync/config?maxRetries=x", ADMIN, 400),
    ("GET", "/cxs/tasks/{id}", "/cxs/tasks/data-sync", VIEWER, 200),  # now with overrides
    ("POST", "/cxs/tasks/{id}/retry", "/cxs/tasks/failed/retry?resetFailureCount=true", ADMIN, 200),
    ("POST", "/cxs/tasks/{id}/retry", "/cxs/tasks/data-sync/retry", ADMIN, 409),
    ("POST", "/cxs/tasks/{id}/retry", "/cxs/tasks/failed/retry?resetFailureCount=maybe", ADMIN, 400),
    ("POST", "/cxs/tasks/{id}/resume", "/cxs/tasks/crashed/resume", ADMIN, 200),
    ("POST", "/cxs/tasks/{id}/resume", "/cxs/tasks/crashed/resume", ADMIN, 409),
    ("POST", "/cxs/tasks/{id}/run", "/cxs/tasks/data-sync/run", ADMIN, 200),
    ("POST", "/cxs/tasks/{id}/run", "/cxs/tasks/running/run", ADMIN, 409),
    ("POST", "/cxs/tasks/{id}/suspend", "/cxs/tasks/data-sync/suspend", ADMIN, 200),
    ("POST", "/cxs/tasks/{id}/suspend", "/cxs/tasks/data-sync/suspend", ADMIN, 409),
    ("POST", "/cxs/tasks/{id}/suspend", "/cxs/tasks/data-sync/suspend", VIEWER, 403),
    ("GET", "/cxs/tasks/{id}", "/cxs/tasks/data-sync", VIEWER, 200),  # now suspended
    ("GET", "/cxs/tasks", "/cxs/tasks", VIEWER, 200),
    ("POST", "/cxs/tasks/{id}/run", "/cxs/tasks/data-sync/run", ADMIN, 409),
    ("POST", "/cxs/tasks/{id}/unsuspend", "/cxs/tasks/data-sync/unsuspend", ADMIN, 200),
    ("POST", "/cxs/tasks/{id}/unsuspend", "/cxs/tasks/data-sync/unsuspend", ADMIN, 409),
    ("POST", "/cxs/tasks/{id}/unsuspend", "/cxs/tasks/nope/unsuspend", ADMIN, 404),
    ("DELETE", "/cxs/tasks/{id}", "/cxs/tasks/running", ADMIN, 204),
    ("DELETE", "/cxs/tasks/{id}", "/cxs/tasks/running", ADMIN, 409),
    ("DELETE", "/cxs/tasks/{id}", "/cxs/tasks/nope", ADMIN, 404),
    ("POST", "/-/purge", "/-/purge?days=0", ADMIN, 200),
    ("POST", "/-/purge", "/-/purge", ADMIN, 400),
    ("GET", "/cxs/tasks", "/cxs/tasks?idPrefix=data-", VIEWER, 200),
    ("GET", "/cxs/timeline", "/cxs/timeline", VIEWER, 200),
    ("GET", "/cxs/timeline", "/cxs/timeline?to=2024-03-20T15:00:00Z&span=7200000&runsPerTask=1", VIEWER, 200),
    ("GET", "/cxs/timeline", "/cxs/timeline?span=999", VIEWER, 400),
    ("GET", "/cxs/timeline", "/cxs/timeline", NONE, 401),
    ("GET", "/cxs/whoami", "/cxs/whoami", VIEWER, 200),
    ("GET", "/cxs/whoami", "/cxs/whoami", ADMIN, 200),
    ("GET", "/cxs/whoami", "/cxs/whoami", NONE, 401),
    ("GET", "/cxs/nodes", "/cxs/nodes", VIEWER, 200),
    ("GET", "/cxs/config", "/cxs/config", VIEWER, 200),
    ("POST", "/-/reload", "/-/reload", ADMIN, 200),
    ("POST", "/-/reload", "/-/reload", VIEWER, 403),
    ("GET", "/livez", "/livez", NONE, 200),
    ("GET", "/readyz", "/readyz", NONE, 200),
    ("GET", "/metrics", "/metrics", NONE, 200),
    ("GET", "/openapi.json", "/openapi.json", NONE, 200),
]


async def test_every_answer_of_a_tour_matches_the_document(client, seed, store, memory_store, node):
    await seed.task("failed", type="dataSync", schedule={"after": "0s"}, retry={"maxRetries": 0})
    await seed.run_all(Outcome.FAILURE, error="boom")
    await seed.task("crashed", onCrash="manual")
    await seed.crash(checkpoint={"lastProcessedId": "12345"})
    await seed.task("running")
    await seed.claim()
    await seed.task("data-sync", schedule={"cron": "0 * * * *"})
    await seed.task("local-cache", persistent=False, store=memory_store)
    await store.heartbeat(NodeInfo("node-1", True, store.now(), running=1))
    node.config = {"tasksDir": "/etc/scheduler/tasks.d", "lastReload": await node.reload(), "files": []}

    for method, template, url, headers, expected in TOUR:
        response = await client.request(method, url, headers=headers)
        body = await response.read()
        assert response.status == expected, (method, url, body)
        DOCUMENT.check(method, template, response.status, response.content_type, body)


async def test_rare_answers_match_the_document(make_client, store):
    unready = await make_client(readiness=_not_ready, config_status=None)
    too_large = await unready.put("/cxs/tasks/x/config?maxRetries=1", data=io.BytesIO(b"x" * (1024 * 1024 + 1)),
                                  headers=ADMIN)
    not_ready = await unready.get("/readyz")
    no_config = await unready.get("/cxs/config", headers=VIEWER)
    await store.close()
    store_down = await unready.get("/cxs/tasks", headers=VIEWER)

    for method, template, response in [
        ("PUT", "/cxs/tasks/{id}/config", too_large),
        ("GET", "/readyz", not_ready),
        ("GET", "/cxs/config", no_config),
        ("GET", "/cxs/tasks", store_down),
    ]:
        assert response.status in (413, 503)
        DOCUMENT.check(method, template, response.status, response.content_type, await response.read())


async def _not_ready() -> list[str]:
    return ["no heartbeat written to the store for more than 20s (one is due every 10s): database or disk is full"]
