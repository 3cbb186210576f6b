"""A small HTTP client for the admin commands: where the node is, who we are, what it answered.

The URL comes from ``--url``, else ``SCHEDULER_URL``, else the local node's
default ``http://127.0.0.1:8181``. The token comes from ``--token``, else
``SCHEDULER_TOKEN``, else the node's admin token file on this machine (in the
state directory of ``SCHEDULER_CONFIG``'s config, or the default one), so an
operator on the node needs no flag at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import aiohttp

from .config import DEFAULT_LISTEN, load_config
from .errors import ConfigError, SchedulerError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH = 0, 1, 2, 3, 4


class ClientError(SchedulerError):
    """The node could not be asked, or refused."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def resolve_url(url: str | None, env: Mapping[str, str] = os.environ) -> str:
    return (url or env.get("SCHEDULER_URL") or f"http://{DEFAULT_LISTEN}").rstrip("/")


def resolve_token(token: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    if token:
        return token
    if env.get("SCHEDULER_TOKEN"):
        return env["SCHEDULER_TOKEN"]
    try:
        path = load_config(None, env).admin_token_path
    except ConfigError:
        return None
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


class ApiClient:
    def __init__(self, url: str, token: str | None, timeout: float = 30) -> None:
        self.url = url
        self.token = token
        self.timeout = timeout

    async def call(self, method: str, path: str, params: Mapping[str, Any] | None = None) -> Reply:
        """One request; errors become ``ClientError`` with the exit code of their kind."""
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
                async with session.request(method, self.url + path, params=query, headers=headers) as response:
                    text = await response.text()
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise ClientError(f"cannot connect to {self.url}: {exc or type(exc).__name__} (is `scheduler run` up? set --url or SCHEDULER_URL)", EXIT_UNREACHABLE) from None
        except aiohttp.InvalidURL:
            raise ClientError(f"invalid URL {self.url!r}", EXIT_USAGE) from None
        body = _json(text)
        if response.status < 400:
            return Reply(response.status, body)
        message = body.get("message") if isinstance(body, dict) else None
        message = message or text.strip() or response.reason or ""
        if response.status == 401:
            hint = "no token given and no admin token file found" if not self.token else "the token was not accepted"
            raise ClientError(f"unauthorized: {hint} (use --token or SCHEDULER_TOKEN)", EXIT_AUTH)
        if response.status == 403:
            raise ClientError(f"forbidden: this token's role may not do that ({message})", EXIT_AUTH)
        if response.status == 404 and isinstance(body, dict) and body.get("error") == "Task not found":
            raise ClientError(f"Task not found: {message.removeprefix('No task exists with ID: ')}", EXIT_REFUSED)
        raise ClientError(f"{response.status} {message}", EXIT_REFUSED)


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
