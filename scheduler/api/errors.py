"""The API's one error format: ``{"error": "...", "code": "404", "message": "..."}``."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web


class ApiError(Exception):
    """An answer other than success; the error middleware renders it."""

    def __init__(self, status: int, message: str, error: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error = error or HTTPStatus(status).phrase
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def error_response(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"error": error, "code": str(status), "message": message}
    return web.json_response(body, status=status, headers=headers)
