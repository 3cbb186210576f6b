"""Every failure answers the one error format, with the right code and a message a user can act on."""

from __future__ import annotations

import io
import logging

import pytest

from tests.api.conftest import ADMIN, VIEWER


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=BOGUS", "Invalid status: BOGUS"),
        ("status=running", "Invalid status: running"),
        ("status=", "Invalid status: "),
        ("status=SCHEDULED&status=FAILED", "Parameter status given more than once"),
        ("type=" + "x" * 257, "Invalid type: expected 1 to 256 characters"),
        ("sortBy=password", "Invalid sortBy: password (fields: creationDate, failureCount, itemId, lastExecutionDate, "
                            "nextScheduledExecution, status, successCount, taskType)"),
        ("sortBy=itemId:sideways", "Invalid sortBy: itemId:sideways (direction must be asc or desc)"),
        ("sortBy=$where", "Invalid sortBy: $where (fields: creationDate, failureCount, itemId, lastExecutionDate, "
                          "nextScheduledExecution, status, successCount, taskType)"),
        ("offset=-1", "Invalid offset: -1 (expected an integer from 0 to 1000000)"),
        ("offset=1000001", "Invalid offset: 1000001 (expected an integer from 0 to 1000000)"),
        ("offset=ten", "Invalid offset: ten (expected an integer from 0 to 1000000)"),
        ("limit=0", "Invalid limit: 0 (expected an integer from 1 to 1000)"),
        ("limit=1001", "Invalid limit: 1001 (expected an integer from 1 to 1000)"),
        ("limit=99999999999999999999", "Invalid limit: 99999999999999999999 (expected an integer from 1 to 1000)"),
        ("limit=%2B5", "Invalid limit: +5 (expected an integer from 1 to 1000)"),
        ("limit=%D9%A5", "Invalid limit: \u0665 (expected an integer from 1 to 1000)"),  # an Arabic-Indic digit
        ("labelSelector=", "Invalid labelSelector: term 1 is empty "
                           "(expected key=value, key!=value, key or !key, separated by commas)"),
        ("labelSelector=team%3Ddata,", "Invalid labelSelector: term 2 is empty "
                                       "(expected key=value, key!=value, key or !key, separated by commas)"),
        ("labelSelector=a%3Db%3Dc", "Invalid labelSelector: term 1 'a=b=c': the label value 'b=c' contains = "
                                    "(expected key=value, key!=value, key or !key, separated by commas)"),
        ("labelSelector=tier+in+(a,b)", "Invalid labelSelector: term 1 'tier in (a': set-based selectors (in, notin) "
                                        "are not supported (expected key=value, key!=value, key or !key, separated by commas)"),
        ("labelSelector=a&labelSelector=b", "Parameter labelSelector given more than once"),
        ("labelSelector=" + "k," * 20 + "k", "Invalid labelSelector: 21 terms, at most 20"),
    ],
)
async def test_bad_list_parameters_are_400(client, query, message):
    response = await client.get(f"/cxs/tasks?{query}", headers=VIEWER)

    assert response.status == 400
    assert await response.json() == {"error": "Bad Request", "code": "400", "message": message}


async def test_unknown_parameters_are_ignored(client, seed):
    await seed.task("data-sync")

    response = await client.get("/cxs/tasks?_=1700000000&fields=all", headers=VIEWER)

    assert response.status == 200 and (await response.json())["totalSize"] == 1


async def test_query_values_are_data_not_operators(client, seed):
    await seed.task("data-sync", type="dataSync")

    for value in ("dataSync' OR '1'='1", "%", "*", '{"$ne": null}', "dataSync%00"):
        response = await client.get("/cxs/tasks", params={"type": value}, headers=VIEWER)
        assert response.status == 200
        assert (await response.json())["totalSize"] == 0, value
    for selector in ("team=x' OR 'a' <> 'b", "team=%", "team=*", "$ne", "team=.*", "team!=x' OR 'a' <> 'b"):
        response = await client.get("/cxs/tasks", params={"labelSelector": selector}, headers=VIEWER)
        assert response.status == 200
        assert (await response.json())["totalSize"] == (1 if "!=" in selector else 0), selector


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/cxs/tasks/data-sync/retry?resetFailureCount=yes", "Invalid resetFailureCount: yes (expected true or false)"),
        ("/cxs/tasks/data-sync/retry?resetFailureCount=1", "Invalid resetFailureCount: 1 (expected true or false)"),
        ("/cxs/tasks/data-sync/config?maxRetries=-1", "Invalid maxRetries: -1 (expected an integer from 0 to 1000)"),
        ("/cxs/tasks/data-sync/config?maxRetries=1001", "Invalid maxRetries: 1001 (expected an integer from 0 to 1000)"),
        ("/cxs/tasks/data-sync/config?retryDelay=1.5", "Invalid retryDelay: 1.5 (expected an integer from 0 to 2592000000)"),
        ("/cxs/tasks/data-sync/config?retryDelay=2592000001",
         "Invalid retryDelay: 2592000001 (expected an integer from 0 to 2592000000)"),
        ("/cxs/tasks/data-sync/runs?limit=0", "Invalid limit: 0 (expected an integer from 1 to 1000)"),
        ("/-/purge", "Give days: purge what ended more than that many days ago (0 to 36500)"),
        ("/-/purge?days=-7", "Invalid days: -7 (expected an integer from 0 to 36500)"),
    ],
)
async def test_bad_action_parameters_are_400(client, seed, path, message):
    await seed.task("data-sync")
    method = "PUT" if "/config" in path else "GET" if "/runs" in path else "POST"

    response = await client.request(method, path, headers=ADMIN)

    assert response.status == 400
    assert (await response.json())["message"] == message


async def test_bad_parameters_are_checked_before_the_id(client):
    response = await client.put("/cxs/tasks/missing/config?maxRetries=x", headers=ADMIN)

    assert response.status == 400


async def test_oversized_body_is_413(client, seed):
    await seed.task("data-sync")

    response = await client.put(
        "/cxs/tasks/data-sync/config?maxRetries=1", data=io.BytesIO(b"x" * (1024 * 1024 + 1)), headers=ADMIN
    )

    assert response.status == 413
    assert await response.json() == {
        "error": "Request Entity Too Large", "code": "413", "message": "The request body exceeds 1048576 bytes"
    }


async def test_a_failure_is_500_without_a_stack_trace(make_client, caplog):
    def broken() -> dict:
        raise RuntimeError("secret internals at /srv/app.py line 12")

    client = await make_client(config_status=broken)

    with caplog.at_level(logging.ERROR, logger="scheduler.api.middlewares"):
        response = await client.get("/cxs/config", headers=VIEWER)

    text = await response.text()
    assert response.status == 500
    assert await response.json() == {
        "error": "Internal Server Error", "code": "500", "message": "The server failed to answer; see its log"
    }
    assert "secret" not in text and "Traceback" not in text
    assert "RuntimeError: secret internals" in caplog.text  # the operator gets the traceback in the log


async def test_an_unreachable_store_is_503(make_client, store):
    client = await make_client()
    await store.close()

    response = await client.get("/cxs/tasks/data-sync", headers=VIEWER)

    body = await response.json()
    assert response.status == 503
    assert (body["error"], body["code"]) == ("Service Unavailable", "503")
    assert body["message"].startswith("The task store is unavailable: ")


async def test_unknown_routes_and_methods_answer_the_error_format(client):
    missing = await client.get("/cxs/nothing", headers=VIEWER)
    wrong_method = await client.patch("/cxs/tasks", headers=ADMIN)

    assert missing.status == 404
    assert await missing.json() == {"error": "Not Found", "code": "404", "message": "No route for /cxs/nothing"}
    assert wrong_method.status == 405
    assert await wrong_method.json() == {
        "error": "Method Not Allowed", "code": "405", "message": "Method PATCH not allowed on /cxs/tasks"
    }
    assert wrong_method.headers["Allow"] == "GET"
