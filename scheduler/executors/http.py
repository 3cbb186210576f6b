"""The ``http`` executor: one request with aiohttp, judged by its status code.

Success is a status listed in ``expectStatus``, or any 2xx when the list is
empty. A mapping or list body is sent as JSON, a string as text. The request's
own ``timeout`` and the run's ``timeout`` both end in a TIMEOUT outcome. The
output is the beginning of the response body, where an API says what went wrong.
Errors name the request with its URL redacted (no password, no query values):
they end up in ``lastError``, run records and logs, which viewers read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from ..model import Outcome
from ..redact import redact_text, redact_url
from ..spec import HttpRequest, thaw
from .base import Execution, RunContext, run_timeout, stop_message, wait_or_stop

logger = logging.getLogger(__name__)

BODY_LIMIT = 2 * 1024  # bytes of the response body kept as output


class HttpExecutor:
    """Runs ``spec.run.http``; stateless, a client session is opened per run."""

    def __init__(self, *, body_limit: int = BODY_LIMIT) -> None:
        self.body_limit = body_limit

    async def execute(self, ctx: RunContext) -> Execution:
        request = ctx.spec.run.http if ctx.spec.run is not None else None
        if request is None:
            return Execution(Outcome.FAILURE, error=f"task {ctx.task_id!r} has no http request")
        work = asyncio.ensure_future(self._call(request))
        try:
            stopped = await wait_or_stop(ctx, work, run_timeout(ctx))
        finally:
            if not work.done():  # stopped, or this coroutine was cancelled
                work.cancel()
                await asyncio.wait({work})  # let the session close
        if stopped:
            return Execution(ctx.cancel_reason, error=f"{stop_message(ctx)} ({_target(request)})")
        return work.result()

    async def _call(self, request: HttpRequest) -> Execution:
        target = _target(request)
        seconds = request.timeout.total_seconds()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session:
                async with session.request(
                    request.method, request.url, headers=dict(request.headers), **_body(request.body)
                ) as response:
                    head = await _read_head(response.content, self.body_limit)
                    status, charset = response.status, response.charset
        except TimeoutError:  # aiohttp's timeouts derive from it
            return Execution(Outcome.TIMEOUT, error=f"no response within {seconds:g}s from {target}")
        except aiohttp.ClientError as exc:
            # aiohttp's messages may quote the URL (InvalidURL, TooManyRedirects' url='...').
            return Execution(Outcome.FAILURE, error=f"{target} failed: {type(exc).__name__}: {redact_text(str(exc))}")
        output = _decode(head, charset)
        if status in request.expect_status or (not request.expect_status and 200 <= status < 300):
            return Execution(Outcome.SUCCESS, output=output)
        return Execution(Outcome.FAILURE, output=output, error=f"HTTP {status} from {target}")


def _target(request: HttpRequest) -> str:
    """The request as errors name it: ``GET https://user:***@host/hook?api_key=***``."""
    return f"{request.method} {redact_url(request.url)}"


def _body(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if isinstance(body, str):
        return {"data": body}  # sent as text/plain; charset=utf-8
    return {"json": thaw(body)}


async def _read_head(stream: aiohttp.StreamReader, limit: int) -> bytes:
    head = bytearray()
    while len(head) < limit:
        chunk = await stream.read(limit - len(head))
        if not chunk:
            break
        head += chunk
    return bytes(head)


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return data.decode("utf-8", errors="replace")
