"""Middlewares, outermost first: CORS, errors, body size, authentication.

CORS is outermost so that error answers carry its headers too (a browser can
then read a 401). The error middleware turns every failure into the one error
format; nothing else builds error bodies.
"""

from __future__ import annotations

import logging
from typing import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..errors import InvalidState, StoreError, TaskNotFound
from .errors import ApiError, error_response
from .keys import ACCESS, SERVICES

log = logging.getLogger(__name__)

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="scheduler"'}
CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE = "600"


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.error, exc.message, exc.headers)
    except TaskNotFound as exc:
        return error_response(404, "Task not found", exc.message)
    except InvalidState as exc:
        return error_response(409, "Conflict", exc.message)
    except StoreError as exc:
        log.error("store error on %s %s: %s", request.method, request.path, exc.message)
        return error_response(503, "Service Unavailable", f"The task store is unavailable: {exc.message}")
    except web.HTTPException as exc:  # the router's 404/405, aiohttp's 413...
        if exc.status < 400:
            raise
        message = {404: f"No route for {request.path}", 405: f"Method {request.method} not allowed on {request.path}"}
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, exc.reason, message.get(exc.status, exc.reason), headers)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(500, "Internal Server Error", "The server failed to answer; see its log")


@web.middleware
async def body_size(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse an oversized body before anything reads it (no route takes a large one)."""
    limit = request.app[SERVICES].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, f"The request body exceeds {limit} bytes")
    return await handler(request)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    if request.match_info.http_exception is not None:
        raise request.match_info.http_exception  # unknown path or method: nothing to protect
    role = request.app[ACCESS].get(route)
    if role is None:
        return await handler(request)
    principal = request.app[SERVICES].auth.authenticate(request.headers.get("Authorization"))
    if principal is None:
        raise ApiError(401, "Missing or unknown credentials (use Authorization: Bearer <token>)", headers=CHALLENGE)
    if not principal.may(role):
        raise ApiError(403, f"This action needs the {role.value} role")
    return await handler(request)


def cors(origins: Iterable[str]) -> Middleware:
    """Answer preflights and mark answers for the configured origins ("*" allows any)."""
    allowed = frozenset(origins)

    def origin_allowed(origin: str | None) -> bool:
        return origin is not None and ("*" in allowed or origin in allowed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
        if preflight and isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed):
            if not origin_allowed(origin):
                response: web.StreamResponse = error_response(403, "Forbidden", f"Origin not allowed: {origin}")
            else:
                methods = sorted(request.match_info.http_exception.allowed_methods)
                response = web.Response(
                    status=204,
                    headers={
                        "Access-Control-Allow-Origin": origin,
                        "Access-Control-Allow-Methods": ", ".join(methods),
                        "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                        "Access-Control-Max-Age": CORS_MAX_AGE,
                    },
                )
        else:
            response = await handler(request)
        if origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate"
        response.headers.add("Vary", "Origin")
        return response

    return middleware
