import asyncio
import base64
import socket

import pytest
from aiohttp import web

from scheduler.executors import HttpExecutor
from scheduler.model import Outcome

from executor_support import eventually


@pytest.fixture
async def server(aiohttp_server):
    """A local server recording each request; ``/status/{code}`` answers with that status."""
    seen = []
    hang = asyncio.Event()  # never set: a handler that waits on it never answers

    async def record(request):
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": dict(request.headers),
                "body": await request.text(),
            }
        )

    async def status(request):
        await record(request)
        return web.Response(status=int(request.match_info["code"]), text=f"answer {request.match_info['code']}")

    async def large(request):
        return web.Response(text="x" * 3000 + "END")

    async def slow(request):
        await record(request)
        await hang.wait()
        return web.Response(text="late")

    app = web.Application()
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/large", large)
    app.router.add_get("/slow", slow)
    srv = await aiohttp_server(app)
    srv.seen = seen
    srv.url = lambda path: str(srv.make_url(path))
    yield srv
    hang.set()


async def test_post_sends_method_headers_and_a_json_body(make_ctx, server):
    http = {
        "method": "POST",
        "url": server.url("/status/201"),
        "headers": {"X-Token": "abc"},
        "body": {"batch": [1, 2], "target": "CRM"},
    }
    result = await HttpExecutor().execute(make_ctx({"http": http}))
    assert (result.outcome, result.output, result.error) == (Outcome.SUCCESS, "answer 201", None)
    [request] = server.seen
    assert (request["method"], request["path"]) == ("POST", "/status/201")
    assert request["headers"]["X-Token"] == "abc"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == '{"batch": [1, 2], "target": "CRM"}'


async def test_a_string_body_is_sent_as_text(make_ctx, server):
    http = {"method": "PUT", "url": server.url("/status/204"), "body": "plain words"}
    result = await HttpExecutor().execute(make_ctx({"http": http}))
    assert result.outcome is Outcome.SUCCESS
    [request] = server.seen
    assert request["headers"]["Content-Type"].startswith("text/plain")
    assert request["body"] == "plain words"


@pytest.mark.parametrize(
    ("code", "expect", "outcome"),
    [
        (200, [], Outcome.SUCCESS),
        (299, [], Outcome.SUCCESS),
        (302, [], Outcome.FAILURE),
        (404, [404], Outcome.SUCCESS),
        (200, [204], Outcome.FAILURE),
        (503, [], Outcome.FAILURE),
    ],
)
async def test_expected_statuses(make_ctx, server, code, expect, outcome):
    url = server.url(f"/status/{code}")
    http = {"url": url, "expectStatus": expect} if expect else {"url": url}
    result = await HttpExecutor().execute(make_ctx({"http": http}))
    assert result.outcome is outcome
    assert result.output == f"answer {code}"
    assert result.error == (None if outcome is Outcome.SUCCESS else f"HTTP {code} from GET {url}")


async def test_only_the_beginning_of_the_body_is_kept(make_ctx, server):
    result = await HttpExecutor(body_limit=2048).execute(make_ctx({"http": {"url": server.url("/large")}}))
    assert result.output == "x" * 2048


async def test_the_request_timeout_is_a_timeout(make_ctx, server):
    url = server.url("/slow")
    result = await HttpExecutor().execute(make_ctx({"http": {"url": url, "timeout": "200ms"}}))
    assert (result.outcome, result.error) == (Outcome.TIMEOUT, f"no response within 0.2s from GET {url}")


async def test_the_run_timeout_is_a_timeout(make_ctx, server):
    url = server.url("/slow")
    result = await HttpExecutor().execute(make_ctx({"http": {"url": url}, "timeout": "200ms"}))
    assert (result.outcome, result.error) == (Outcome.TIMEOUT, f"timed out after 0.2s (GET {url})")


async def test_cancel_stops_a_request_in_flight(make_ctx, server):
    ctx = make_ctx({"http": {"url": server.url("/slow")}})
    execution = asyncio.ensure_future(HttpExecutor().execute(ctx))
    await eventually(lambda: server.seen)  # the request reached the server
    ctx.cancel(Outcome.CANCELLED)
    result = await execution
    assert (result.outcome, result.error) == (Outcome.CANCELLED, f"cancelled while running (GET {server.url('/slow')})")


async def test_connection_refused_is_a_failure(make_ctx):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    result = await HttpExecutor().execute(make_ctx({"http": {"url": url}}))
    assert result.outcome is Outcome.FAILURE
    assert result.error.startswith(f"GET {url} failed: ClientConnectorError: Cannot connect to host 127.0.0.1:{port}")


def with_secrets(url: str) -> str:
    """``url`` with a password and query values, as a webhook's URL often has."""
    return url.replace("http://", "http://user:s3cret@", 1) + "?api_key=K3Y&team=ops"


def redacted(url: str) -> str:
    return url.replace("http://", "http://user:***@", 1) + "?api_key=***&team=***"


async def test_errors_name_the_url_without_its_secrets_but_the_call_uses_them(make_ctx, server):
    url = server.url("/status/503")
    result = await HttpExecutor().execute(make_ctx({"http": {"url": with_secrets(url)}}))
    assert (result.outcome, result.error) == (Outcome.FAILURE, f"HTTP 503 from GET {redacted(url)}")
    [request] = server.seen
    assert request["query"] == "api_key=K3Y&team=ops"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"user:s3cret").decode()


async def test_a_stopped_call_names_the_url_without_its_secrets(make_ctx, server):
    url = server.url("/slow")
    result = await HttpExecutor().execute(make_ctx({"http": {"url": with_secrets(url)}, "timeout": "200ms"}))
    assert (result.outcome, result.error) == (Outcome.TIMEOUT, f"timed out after 0.2s (GET {redacted(url)})")


async def test_a_client_error_quoting_the_url_is_redacted(make_ctx):
    url = "http://127.0.0.1:99999/hook"  # no such port: aiohttp's InvalidURL error is the URL itself
    result = await HttpExecutor().execute(make_ctx({"http": {"url": with_secrets(url)}}))
    assert result.outcome is Outcome.FAILURE
    assert result.error.startswith(f"GET {redacted(url)} failed: ") and result.error.endswith(f"Error: {redacted(url)}")
