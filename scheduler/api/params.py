"""Strict parsing of query parameters: every bad value is a 400 naming it.

Values are data only: they become plain Python values (enum members, ints,
strings) compared by the store, never query operators. Unknown parameters are
ignored (Unomi clients send extras); a known one given twice is an error.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from aiohttp import web

from .. import preview
from ..model import SORT_FIELDS, Status, TaskQuery
from ..selectors import SelectorError, parse_selector
from .errors import bad_request

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000
MAX_TEXT = 256  # longest task type accepted as a filter
MAX_RETRIES = 1000
MAX_RETRY_DELAY_MS = 30 * 24 * 3600 * 1000  # 30 days
MAX_PURGE_DAYS = 36500
DEFAULT_NEXT_COUNT = 10


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad_request(f"Parameter {name} given more than once")
    return values[0] if values else None


def int_param(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = _one(request, name)
    if raw is None:
        return default
    # int() would also take "+5", " 5" and "5_000": accept plain digits only.
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise bad_request(f"Invalid {name}: {raw} (expected an integer from {low} to {high})")
    value = int(raw)
    if not low <= value <= high:
        raise bad_request(f"Invalid {name}: {raw} (expected an integer from {low} to {high})")
    return value


def bool_param(request: web.Request, name: str) -> bool:
    raw = _one(request, name)
    if raw is None:
        return False
    if raw not in ("true", "false"):
        raise bad_request(f"Invalid {name}: {raw} (expected true or false)")
    return raw == "true"


def paging(request: web.Request) -> tuple[int, int]:
    offset = int_param(request, "offset", 0, 0, MAX_OFFSET)
    limit = int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    assert offset is not None and limit is not None
    return offset, limit


def task_query(request: web.Request) -> TaskQuery:
    """``GET /cxs/tasks`` parameters: status, type, labelSelector, idPrefix, offset, limit, sortBy=field[:asc|desc]."""
    status = _one(request, "status")
    if status is not None and status not in Status.__members__:
        raise bad_request(f"Invalid status: {status}")
    task_type = _one(request, "type")
    if task_type is not None and not 0 < len(task_type) <= MAX_TEXT:
        raise bad_request(f"Invalid type: expected 1 to {MAX_TEXT} characters")
    sort_by, descending = "itemId", False
    raw_sort = _one(request, "sortBy")
    if raw_sort is not None:
        field, colon, direction = raw_sort.partition(":")
        if field not in SORT_FIELDS:
            raise bad_request(f"Invalid sortBy: {raw_sort} (fields: {', '.join(sorted(SORT_FIELDS))})")
        if colon and direction not in ("asc", "desc"):
            raise bad_request(f"Invalid sortBy: {raw_sort} (direction must be asc or desc)")
        sort_by, descending = field, direction == "desc"
    selector = _one(request, "labelSelector")
    try:
        requirements = () if selector is None else parse_selector(selector)
    except SelectorError as exc:
        raise bad_request(f"Invalid labelSelector: {exc}") from None
    id_prefix = _one(request, "idPrefix")
    if id_prefix is not None and len(id_prefix) > MAX_TEXT:
        raise bad_request(f"Invalid idPrefix: expected at most {MAX_TEXT} characters")
    offset, limit = paging(request)
    return TaskQuery(
        status=None if status is None else Status(status),
        task_type=task_type,
        id_prefix=id_prefix or None,  # an empty prefix matches every id: no filter
        label_selector=requirements,
        sort_by=sort_by,
        descending=descending,
        offset=offset,
        limit=limit,
    )


def next_runs(request: web.Request) -> tuple[int, datetime | None]:
    """``GET /cxs/tasks/{id}/next`` parameters: count (default 10) and from (an ISO 8601 time with a zone)."""
    count = int_param(request, "count", DEFAULT_NEXT_COUNT, 1, preview.MAX_COUNT)
    assert count is not None
    raw = _one(request, "from")
    if raw is None:
        return count, None
    try:
        return count, preview.parse_instant(raw)
    except ValueError as exc:
        raise bad_request(f"Invalid from: {exc}") from None


def retry_config(request: web.Request) -> tuple[int | None, timedelta | None]:
    """``PUT /cxs/tasks/{id}/config`` parameters: maxRetries and retryDelay (milliseconds); None if absent."""
    max_retries = int_param(request, "maxRetries", None, 0, MAX_RETRIES)
    delay_ms = int_param(request, "retryDelay", None, 0, MAX_RETRY_DELAY_MS)
    return max_retries, None if delay_ms is None else timedelta(milliseconds=delay_ms)


def purge_days(request: web.Request) -> int:
    """``POST /-/purge`` parameter: days (required)."""
    days = int_param(request, "days", None, 0, MAX_PURGE_DAYS)
    if days is None:
        raise bad_request(f"Give days: purge what ended more than that many days ago (0 to {MAX_PURGE_DAYS})")
    return days


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MAX_SPAN_MS = 7 * 24 * 3600 * 1000
DEFAULT_SPAN_MS = 3600 * 1000
DEFAULT_RUNS_PER_TASK = 500
MAX_RUNS_PER_TASK = 1000


def time_window(request: web.Request, now: datetime) -> tuple[datetime, datetime, int]:
    """``GET /cxs/timeline`` parameters: ``to`` (ISO 8601 with a zone; default now), ``span`` in ms before
    it (1 s to 7 days; default one hour) and ``runsPerTask`` (default 500)."""
    end = now
    raw = _one(request, "to")
    if raw is not None:
        try:
            end = preview.parse_instant(raw)
        except ValueError as exc:
            raise bad_request(f"Invalid to: {exc}") from None
    span = int_param(request, "span", DEFAULT_SPAN_MS, 1000, MAX_SPAN_MS)
    per_task = int_param(request, "runsPerTask", DEFAULT_RUNS_PER_TASK, 1, MAX_RUNS_PER_TASK)
    assert span is not None and per_task is not None
    # No run is older than the Unix epoch: a window reaching before it is cut there (and so never
    # goes out of the calendar, nor out of the four-digit years dates are written with).
    end = max(end, EPOCH)
    start = max(end - timedelta(milliseconds=span), EPOCH)
    return start, end, per_task
