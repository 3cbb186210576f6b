"""Credentials and roles: who may call what, and what a refused caller is told."""

from __future__ import annotations

import hashlib

import pytest

from scheduler.api.auth import ApiAuth, Role
from scheduler.api.routes import ROUTES
from scheduler.errors import ConfigError
from scheduler.model import Outcome
from tests.api.conftest import ADMIN, ADMIN_TOKEN, VIEWER, VIEWER_TOKEN, basic

# A request for each route; paths name a task that exists, so an allowed call is not a 4xx.
REQUESTS = {
    ("GET", "/cxs/tasks"): "/cxs/tasks",
    ("POST", "/-/purge"): "/-/purge?days=30",
    ("GET", "/cxs/tasks/{id}"): "/cxs/tasks/data-sync",
    ("DELETE", "/cxs/tasks/{id}"): "/cxs/tasks/data-sync",
    ("GET", "/cxs/tasks/{id}/runs"): "/cxs/tasks/data-sync/runs",
    ("GET", "/cxs/tasks/{id}/runs/{runId}"): "/cxs/tasks/failed/runs/failed:1710943200000:1",  # its slot: START
    ("GET", "/cxs/tasks/{id}/declarations"): "/cxs/tasks/data-sync/declarations",
    ("GET", "/cxs/tasks/{id}/next"): "/cxs/tasks/data-sync/next",
    ("POST", "/cxs/tasks/{id}/retry"): "/cxs/tasks/failed/retry",
    ("POST", "/cxs/tasks/{id}/resume"): "/cxs/tasks/crashed/resume",
    ("PUT", "/cxs/tasks/{id}/config"): "/cxs/tasks/data-sync/config?maxRetries=2",
    ("DELETE", "/cxs/tasks/{id}/config"): "/cxs/tasks/data-sync/config",
    ("POST", "/cxs/tasks/{id}/run"): "/cxs/tasks/data-sync/run",
    ("POST", "/cxs/tasks/{id}/suspend"): "/cxs/tasks/data-sync/suspend",
    ("POST", "/cxs/tasks/{id}/unsuspend"): "/cxs/tasks/suspended/unsuspend",
    ("GET", "/cxs/nodes"): "/cxs/nodes",
    ("GET", "/cxs/config"): "/cxs/config",
    ("POST", "/-/reload"): "/-/reload",
    ("GET", "/livez"): "/livez",
    ("GET", "/readyz"): "/readyz",
    ("GET", "/cxs/timeline"): "/cxs/timeline",
    ("GET", "/cxs/whoami"): "/cxs/whoami",
    ("GET", "/metrics"): "/metrics",
    ("GET", "/openapi.json"): "/openapi.json",
}
EXPECTED_ROLE = {
    ("GET", "/cxs/tasks"): Role.VIEWER,
    ("POST", "/-/purge"): Role.ADMINISTRATOR,
    ("GET", "/cxs/tasks/{id}"): Role.VIEWER,
    ("DELETE", "/cxs/tasks/{id}"): Role.ADMINISTRATOR,
    ("GET", "/cxs/tasks/{id}/runs"): Role.VIEWER,
    ("GET", "/cxs/tasks/{id}/runs/{runId}"): Role.VIEWER,
    ("GET", "/cxs/tasks/{id}/declarations"): Role.VIEWER,
    ("GET", "/cxs/tasks/{id}/next"): Role.VIEWER,
    ("POST", "/cxs/tasks/{id}/retry"): Role.ADMINISTRATOR,
    ("POST", "/cxs/tasks/{id}/resume"): Role.ADMINISTRATOR,
    ("PUT", "/cxs/tasks/{id}/config"): Role.ADMINISTRATOR,
    ("DELETE", "/cxs/tasks/{id}/config"): Role.ADMINISTRATOR,
    ("POST", "/cxs/tasks/{id}/run"): Role.ADMINISTRATOR,
    ("POST", "/cxs/tasks/{id}/suspend"): Role.ADMINISTRATOR,
    ("POST", "/cxs/tasks/{id}/unsuspend"): Role.ADMINISTRATOR,
    ("GET", "/cxs/timeline"): Role.VIEWER,
    ("GET", "/cxs/whoami"): Role.VIEWER,
    ("GET", "/cxs/nodes"): Role.VIEWER,
    ("GET", "/cxs/config"): Role.VIEWER,
    ("POST", "/-/reload"): Role.ADMINISTRATOR,
    ("GET", "/livez"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): None,  # api.metrics.public defaults to true
    ("GET", "/openapi.json"): None,
}


def test_the_role_table_covers_every_route():
    assert sorted((r.method, r.path) for r in ROUTES) == sorted(EXPECTED_ROLE) == sorted(REQUESTS)


@pytest.fixture
async def states(seed):
    """Tasks in the states the actions of ``REQUESTS`` need."""
    await seed.task("failed", schedule={"after": "0s"}, retry={"maxRetries": 0})
    await seed.run_all(Outcome.FAILURE, error="boom")
    await seed.task("crashed", onCrash="manual")
    await seed.crash()
    await seed.task("data-sync")
    await seed.store.suspend(await seed.task("suspended"))


@pytest.mark.parametrize("route", sorted(EXPECTED_ROLE), ids=lambda r: f"{r[0]} {r[1]}")
@pytest.mark.parametrize("who", ["nobody", "viewer", "admin"])
async def test_each_route_admits_exactly_its_roles(client, states, route, who):
    method, _ = route
    headers = {"nobody": {}, "viewer": VIEWER, "admin": ADMIN}[who]
    required = EXPECTED_ROLE[route]

    response = await client.request(method, REQUESTS[route], headers=headers)

    if required is None or who == "admin" or (who == "viewer" and required is Role.VIEWER):
        assert response.status < 400, await response.text()
    elif who == "nobody":
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="scheduler"'
        assert await response.json() == {
            "error": "Unauthorized", "code": "401",
            "message": "Missing or unknown credentials (use Authorization: Bearer <token>)",
        }
    else:
        assert response.status == 403
        assert await response.json() == {
            "error": "Forbidden", "code": "403", "message": "This action needs the ADMINISTRATOR role"
        }


async def test_metrics_need_a_viewer_when_not_public(make_client):
    client = await make_client(metrics_public=False)

    anonymous = await client.get("/metrics")
    viewer = await client.get("/metrics", headers=VIEWER)

    assert anonymous.status == 401
    assert viewer.status == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-token",
        f"Bearer {ADMIN_TOKEN}x",
        f"bearer{ADMIN_TOKEN}",
        f"Token {ADMIN_TOKEN}",
        basic("grafana", ADMIN_TOKEN)["Authorization"],  # right token, wrong name
        basic("admin", "")["Authorization"],
        "Basic not-base64!",
        "Basic " + "x" * 10,
        "",
    ],
)
async def test_wrong_credentials_are_401(client, header):
    response = await client.get("/cxs/tasks", headers={"Authorization": header})

    assert response.status == 401


async def test_basic_auth_uses_the_token_name_and_the_token(client):
    admin = await client.post("/-/reload", headers=basic("admin", ADMIN_TOKEN))
    viewer = await client.get("/cxs/tasks", headers=basic("grafana", VIEWER_TOKEN))

    assert admin.status == 200 and viewer.status == 200


def test_tokens_from_a_file_and_from_a_hash(tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text("from-a-file\n")
    auth = ApiAuth.from_config([
        {"name": "ops", "tokenFile": str(token_file), "roles": ["ADMINISTRATOR"]},
        {"name": "ci", "sha256": hashlib.sha256(b"hashed").hexdigest().upper(), "roles": ["VIEWER"]},
    ])

    ops = auth.authenticate("Bearer from-a-file")
    ci = auth.authenticate("Bearer hashed")

    assert ops is not None and (ops.name, ops.may(Role.ADMINISTRATOR), ops.may(Role.VIEWER)) == ("ops", True, True)
    assert ci is not None and (ci.name, ci.may(Role.ADMINISTRATOR), ci.may(Role.VIEWER)) == ("ci", False, True)
    assert auth.authenticate("Bearer from-a-file\n") is not None  # the header value is trimmed
    assert auth.authenticate("Bearer nothing") is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"token": "t", "roles": ["VIEWER"]}, "api.auth.tokens[0]: a token needs a non-empty name"),
        ({"name": "a", "roles": ["VIEWER"]},
         "api.auth.tokens[0] (a): give exactly one of token, tokenFile, sha256 (found: none)"),
        ({"name": "a", "token": "t", "sha256": "00" * 32, "roles": ["VIEWER"]},
         "api.auth.tokens[0] (a): give exactly one of token, tokenFile, sha256 (found: token, sha256)"),
        ({"name": "a", "token": "", "roles": ["VIEWER"]}, "api.auth.tokens[0] (a): the token is empty"),
        ({"name": "a", "sha256": "abc", "roles": ["VIEWER"]},
         "api.auth.tokens[0] (a): sha256 must be 64 hexadecimal digits (the SHA-256 of the token)"),
        ({"name": "a", "token": "t", "roles": []},
         "api.auth.tokens[0] (a): roles must list at least one of ADMINISTRATOR, VIEWER"),
        ({"name": "a", "token": "t", "roles": ["ROOT"]},
         "api.auth.tokens[0] (a): unknown role(s) ROOT (expected ADMINISTRATOR, VIEWER)"),
        ({"name": "a", "tokenFile": "/nonexistent/admin.token", "roles": ["VIEWER"]},
         "api.auth.tokens[0] (a): cannot read tokenFile /nonexistent/admin.token: No such file or directory"),
    ],
)
def test_bad_token_configuration_is_a_config_error(entry, message):
    with pytest.raises(ConfigError) as raised:
        ApiAuth.from_config([entry])

    assert raised.value.message == message


def test_duplicate_token_names_are_refused():
    entries = [{"name": "a", "token": "one", "roles": ["VIEWER"]}, {"name": "a", "token": "two", "roles": ["VIEWER"]}]

    with pytest.raises(ConfigError, match="duplicate token name"):
        ApiAuth.from_config(entries)


def test_only_digests_are_kept_in_memory():
    auth = ApiAuth.from_config([{"name": "a", "token": "plain-secret", "roles": ["VIEWER"]}])

    assert "plain-secret" not in repr(vars(auth))
