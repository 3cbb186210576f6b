"""A small HTTP client for the admin commands: where the node is, who we are, what it answered.

The URL comes from ``--url``, else ``SCHEDULER_URL``, else the local node's
default ``http://127.0.0.1:8181``. The token comes from ``--token``, else
``SCHEDULER_TOKEN``, else the node's admin token file on this machine (in
``SCHEDULER_STATE_DIR``, else the state directory of ``SCHEDULER_CONFIG``'s
config, else the default one), so an operator on the node needs no flag at all.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote, urlsplit

import aiohttp
from yarl import URL

from .config import DEFAULT_LISTEN, load_config
from .errors import ConfigError, SchedulerError
from .redact import redact_text, redact_url

log = logging.getLogger(__name__)

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # Ctrl-C: what a shell reports for a command ended by SIGINT


class ClientError(SchedulerError):
    """The node could not be asked, or refused."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_url(url: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The node's base URL; anything but ``http(s)://host[:port]`` is a usage error."""
    chosen = (url or env.get("SCHEDULER_URL") or f"http://{DEFAULT_LISTEN}").rstrip("/")
    parts = urlsplit(chosen)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"invalid URL {redact_url(chosen)!r}: expected http://HOST:PORT, e.g. http://{DEFAULT_LISTEN}", EXIT_USAGE)
    return chosen


@dataclass(frozen=True)
class Credentials:
    """A token, or None, and where it came from (or why there is none): said when a node refuses it."""

    token: str | None
    origin: str


def resolve_token(token: str | None, env: Mapping[str, str] = os.environ) -> Credentials:
    if token:
        return Credentials(token, "--token")
    if env.get("SCHEDULER_TOKEN"):
        return Credentials(env["SCHEDULER_TOKEN"], "SCHEDULER_TOKEN")
    try:
        path = load_config(None, env).admin_token_path
    except ConfigError as exc:
        # Not fatal: the node may need no token for what is asked; if it does, its 401 says why we had none.
        log.debug("no admin token file: %s", exc)
        return Credentials(None, f"no admin token file: {exc}")
    try:
        text = path.read_text().strip()
    except OSError as exc:
        return Credentials(None, f"no readable admin token file at {path}: {exc.strerror}")
    if not text:
        return Credentials(None, f"the admin token file {path} is empty")
    return Credentials(text, f"the admin token file {path}")


def task_path(item_id: str, action: str = "") -> str:
    """``/cxs/tasks/{id}[/action]`` with the id percent-encoded, dots too: ``..`` must stay an id, not a step up."""
    return f"/cxs/tasks/{_segment(item_id)}" + (f"/{action}" if action else "")


def run_path(item_id: str, run_id: str) -> str:
    """``/cxs/tasks/{id}/runs/{runId}``, both percent-encoded as ``task_path`` does."""
    return task_path(item_id, f"runs/{_segment(run_id)}")


def _segment(text: str) -> str:
    return quote(text, safe="@").replace(".", "%2E")


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


class ApiClient:
    def __init__(self, url: str, credentials: Credentials, timeout: float = 30) -> None:
        self.url = url
        self.credentials = credentials
        self.timeout = timeout

    async def call(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Reply:
        """One request to ``path`` (already percent-encoded); errors become ``ClientError`` with the exit code of their kind."""
        headers = {"Accept": "application/json"}
        # Credentials written in --url are the most specific the operator gave: they win over a token
        # (sending both is refused by the HTTP client, and a node's token file is found on its own).
        if self.credentials.token and urlsplit(self.url).username is None:
            headers["Authorization"] = f"Bearer {self.credentials.token}"
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (params or {}).items() if v is not None}
        shown = redact_url(self.url)  # a --url may carry Basic credentials: errors do not repeat them
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                async with session.request(method, URL(self.url + path, encoded=True), params=query, headers=headers) as response:
                    text = await response.text()
        except aiohttp.ClientConnectorError as exc:
            error = exc.os_error
            # asyncio puts "Connect call failed (...)" in strerror; the errno's own text says more.
            reason = os.strerror(error.errno).lower() if (error.errno or 0) > 0 else error.strerror or str(error)
            raise ClientError(f"cannot connect to {shown} ({reason}): is `scheduler run` up? set --url or SCHEDULER_URL", EXIT_UNREACHABLE) from None
        except TimeoutError:
            raise ClientError(f"cannot connect to {shown}: no answer within {self.timeout:g}s", EXIT_UNREACHABLE) from None
        except aiohttp.ClientError as exc:
            raise ClientError(f"cannot connect to {shown}: {type(exc).__name__}: {redact_text(str(exc))}", EXIT_UNREACHABLE) from None
        if response.status >= 400:
            raise self._refusal(response.status, response.reason or "", text)
        try:
            return Reply(response.status, json.loads(text) if text else None)
        except ValueError:
            raise ClientError(f"{shown} answered {method} {path} with something other than JSON: is it a scheduler node?", EXIT_UNREACHABLE) from None

    def _refusal(self, status: int, reason: str, text: str) -> ClientError:
        body = _json(text)
        message = (body.get("message") if isinstance(body, dict) else None) or text.strip() or reason
        if status == 401:
            if self.credentials.token is None:
                return ClientError(
                    f"unauthorized: no token ({self.credentials.origin}); give --token or SCHEDULER_TOKEN", EXIT_AUTH
                )
            return ClientError(f"unauthorized: the node does not accept the token from {self.credentials.origin}", EXIT_AUTH)
        if status == 403:
            return ClientError(f"forbidden: the token from {self.credentials.origin} may not do that ({message})", EXIT_AUTH)
        if status == 404 and isinstance(body, dict) and body.get("error") == "Task not found":
            return ClientError(f"Task not found: {message.removeprefix('No task exists with ID: ')}", EXIT_REFUSED)
        if status == 404 and isinstance(body, dict) and body.get("error") == "Run not found":
            return ClientError(message, EXIT_REFUSED)
        if status == 409:  # wrong state: the node's message says which state and what would be allowed
            return ClientError(message, EXIT_REFUSED)
        return ClientError(f"the node answered {status} {reason}: {message}", EXIT_REFUSED)


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
