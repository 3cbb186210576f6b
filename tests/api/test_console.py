"""The console's files as the node serves them, its two endpoints (whoami, timeline) and idPrefix."""

from __future__ import annotations

import re
from datetime import timedelta
from importlib import resources

import pytest
from yarl import URL

from scheduler.api.console import CONTENT_SECURITY_POLICY, load_assets
from scheduler.model import Outcome
from tests.api.conftest import ADMIN, VIEWER

CONSOLE = resources.files("scheduler.console")


def _secured(response) -> None:
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_the_root_leads_to_the_console(client):
    for path in ("/", "/ui"):
        response = await client.get(path, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (302, "/ui/")
        _secured(response)


async def test_the_console_page_is_served_open_with_a_strict_policy(client):
    response = await client.get("/ui/")  # no credentials: the page holds no data
    text = await response.text()
    assert response.status == 200 and response.content_type == "text/html"
    assert '<script type="module" src="app.js"></script>' in text
    _secured(response)
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["script-src"] == policy["style-src"] == "'self'"  # no 'unsafe-inline', no other origin
    assert policy["frame-ancestors"] == "'none'" and policy["base-uri"] == "'none'"


@pytest.mark.parametrize("name, content_type", [
    ("app.js", "text/javascript"), ("console.css", "text/css"), ("favicon.svg", "image/svg+xml"),
    ("index.html", "text/html"),
])
async def test_each_file_is_served_with_its_type_and_the_headers(client, name, content_type):
    response = await client.get(f"/ui/{name}")
    assert response.status == 200 and response.content_type == content_type
    assert await response.read() == CONSOLE.joinpath(name).read_bytes()
    _secured(response)


@pytest.mark.parametrize("path", [
    "/ui/nope.js",
    "/ui/__init__.py",  # in the folder, not a console file
    "/ui/../../etc/passwd",
    "/ui/%2e%2e/%2e%2e/etc/passwd",
    "/ui/..%2f..%2fetc%2fpasswd",
    "/ui/%2e%2e%2fapi%2fopenapi.yaml",
    "/ui/app.js%00.css",
    "/ui//etc/passwd",
])
async def test_no_path_outside_the_console_files_is_served(client, path):
    response = await client.get(URL(path, encoded=True))
    body = await response.text()
    assert response.status == 404, body
    assert "root:" not in body and "openapi" not in body


def test_every_file_the_page_names_is_shipped_and_no_script_or_style_is_inline():
    assets = load_assets()
    names = set(re.findall(r'(?:src|href)="([^"#:]+)"', assets["index.html"].body.decode()))
    for name, asset in assets.items():
        if name.endswith(".js"):
            names |= set(re.findall(r'from "\./([^"]+)"', asset.body.decode()))
    assert names and names <= set(assets), names - set(assets)
    html = assets["index.html"].body.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html) and " style=" not in html and "<style" not in html


def test_no_script_writes_markup():
    """The pages are built with textContent: markup from data could otherwise run."""
    for name, asset in load_assets().items():
        if name.endswith(".js"):
            text = asset.body.decode()
            for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
                assert sink not in text, f"{name} uses {sink}"


async def test_whoami_names_the_token_and_its_roles(client):
    assert await (await client.get("/cxs/whoami", headers=VIEWER)).json() == {"name": "grafana", "roles": ["VIEWER"]}
    assert await (await client.get("/cxs/whoami", headers=ADMIN)).json() == {"name": "admin", "roles": ["ADMINISTRATOR"]}
    assert (await client.get("/cxs/whoami")).status == 401


async def test_list_by_id_prefix(client, seed):
    for name in ("web-a", "web-b", "webhook", "db"):
        await seed.task(name)
    page = await (await client.get("/cxs/tasks?idPrefix=web-", headers=VIEWER)).json()
    assert ([t["itemId"] for t in page["list"]], page["totalSize"]) == (["web-a", "web-b"], 2)
    assert (await client.get("/cxs/tasks?idPrefix=" + "x" * 257, headers=VIEWER)).status == 400


async def test_timeline_gives_a_page_of_tasks_with_their_runs_in_the_window_without_output(client, seed, clock):
    start = clock()
    await seed.task("a")
    await seed.task("b")
    await seed.task("c")
    await seed.run_all(Outcome.FAILURE, error="boom")  # each claimed at start, finished 5 s later
    clock.advance(timedelta(minutes=10))
    url = "/cxs/timeline?sortBy=itemId:desc&limit=2&span=120000&to=2024-03-20T14:01:00Z"

    answer = await (await client.get(url, headers=VIEWER)).json()

    assert [task["itemId"] for task in answer["list"]] == ["c", "b"] and answer["totalSize"] == 3
    run = answer["list"][0]["runs"][0]
    assert (run["outcome"], run["durationMs"], run["startedAt"]) == ("failure", 5000, "2024-03-20T14:00:00Z")
    assert "output" not in run and "error" not in run
    assert (answer["from"], answer["to"]) == ("2024-03-20T13:59:00Z", "2024-03-20T14:01:00Z")
    assert start.isoformat().startswith("2024-03-20T14:00")
    later = await (await client.get("/cxs/timeline?span=240000", headers=VIEWER)).json()
    assert [task["runs"] for task in later["list"]] == [[], [], []]  # 14:06 to now (14:10): after the runs
    early = await (await client.get("/cxs/timeline?to=0001-01-01T00:00:01Z&span=604800000", headers=VIEWER)).json()
    assert (early["from"], early["to"]) == ("1970-01-01T00:00:00Z",) * 2 and [task["runs"] for task in early["list"]] == [[], [], []]


@pytest.mark.parametrize("query, message", [
    ("span=999", "Invalid span"),
    ("span=604800001", "Invalid span"),
    ("to=yesterday", "Invalid to"),
    ("to=2024-03-20T14:00:00", "no time zone"),
    ("runsPerTask=0", "runsPerTask"),
    ("runsPerTask=1001", "runsPerTask"),
    ("limit=101", "at most 100 tasks"),
    ("status=NOPE", "status"),
])
async def test_timeline_refuses_a_bad_window_with_a_clear_error(client, query, message):
    response = await client.get(f"/cxs/timeline?{query}", headers=VIEWER)
    assert response.status == 400 and message in (await response.json())["message"]
