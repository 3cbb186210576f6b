"""CORS: off by default; with ``api.cors.allowOrigins``, browsers of those origins only."""

from __future__ import annotations

import pytest

from tests.api.conftest import VIEWER

ALLOWED = "https://console.example.com"
PREFLIGHT = {"Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "authorization"}


@pytest.fixture
async def cors_client(make_client):
    return await make_client(cors_origins=(ALLOWED,))


async def test_without_configured_origins_there_are_no_cors_headers(client):
    preflight = await client.options("/cxs/tasks/x", headers={"Origin": ALLOWED, **PREFLIGHT})
    simple = await client.get("/cxs/tasks", headers={"Origin": ALLOWED, **VIEWER})

    assert preflight.status == 405
    assert "Access-Control-Allow-Origin" not in preflight.headers
    assert simple.status == 200 and "Access-Control-Allow-Origin" not in simple.headers


async def test_preflight_of_an_allowed_origin(cors_client):
    response = await cors_client.options("/cxs/tasks/data-sync", headers={"Origin": ALLOWED, **PREFLIGHT})

    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert response.headers["Access-Control-Allow-Methods"] == "DELETE, GET"
    assert response.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert response.headers["Vary"] == "Origin"


async def test_preflight_of_another_origin_is_refused(cors_client):
    response = await cors_client.options("/cxs/tasks", headers={"Origin": "https://evil.example", **PREFLIGHT})

    assert response.status == 403
    assert "Access-Control-Allow-Origin" not in response.headers
    assert (await response.json())["message"] == "Origin not allowed: https://evil.example"


async def test_answers_name_only_the_allowed_origin(cors_client):
    allowed = await cors_client.get("/cxs/tasks", headers={"Origin": ALLOWED, **VIEWER})
    other = await cors_client.get("/cxs/tasks", headers={"Origin": "https://evil.example", **VIEWER})
    refused = await cors_client.get("/cxs/tasks", headers={"Origin": ALLOWED})

    assert allowed.headers["Access-Control-Allow-Origin"] == ALLOWED and allowed.headers["Vary"] == "Origin"
    assert "Access-Control-Allow-Origin" not in other.headers and other.headers["Vary"] == "Origin"
    # A browser page can read why it was refused.
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == ALLOWED
    assert refused.headers["Access-Control-Expose-Headers"] == "WWW-Authenticate"


async def test_a_wildcard_allows_any_origin(make_client):
    client = await make_client(cors_origins=("*",))

    response = await client.options("/cxs/tasks", headers={"Origin": "https://any.example", **PREFLIGHT})

    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://any.example"
    assert response.headers["Access-Control-Allow-Methods"] == "GET"
