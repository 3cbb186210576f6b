"""Pure helpers every store backend shares: run ids, history entries, crash details.

Nothing here touches a database; each function builds the plain values the
contract in ``base`` asks a backend to write, so that both backends write the
same documents.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Sequence

from ..model import HISTORY_LIMIT, Outcome
from ..spec import Source, TaskSpec, utc_iso

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime (sub-millisecond part dropped)."""
    if moment.tzinfo is None:
        raise ValueError(f"expected an aware datetime, got naive {moment.isoformat()}")
    return (moment - EPOCH) // ONE_MS


def from_epoch_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def make_run_id(item_id: str, scheduled_for: datetime, attempt: int) -> str:
    """``<taskId>:<scheduledFor ms>:<attempt>``: the same slot always gets the same id."""
    return f"{item_id}:{epoch_ms(scheduled_for)}:{attempt}"


def history_entry(
    *,
    run_id: str,
    scheduled_for: datetime,
    attempt: int,
    node: str,
    started_at: datetime | None,
    finished_at: datetime,
    outcome: Outcome,
    exit_code: int | None = None,
    error: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One entry of ``Task.history``: plain JSON, times in ISO 8601 UTC."""
    entry: dict[str, Any] = {
        "runId": run_id,
        "scheduledFor": utc_iso(scheduled_for),
        "attempt": attempt,
        "node": node,
        "startedAt": None if started_at is None else utc_iso(started_at),
        "finishedAt": utc_iso(finished_at),
        "outcome": str(outcome),
        "exitCode": exit_code,
        "error": error,
    }
    entry.update(extra)
    return entry


def push_history(
    history: Sequence[Mapping[str, Any]], entry: Mapping[str, Any], limit: int = HISTORY_LIMIT
) -> list[dict[str, Any]]:
    """The history with ``entry`` first, bounded to ``limit`` newest entries."""
    return [dict(entry), *(dict(old) for old in history)][:limit]


def crash_details(details: Mapping[str, Any], crash_time: datetime, crashed_node: str) -> dict[str, Any]:
    """``statusDetails`` after a crash: the previous details plus when and where it crashed."""
    return {**details, "crashTime": utc_iso(crash_time), "crashedNode": crashed_node}


def lease_expired_error(owner: str, until: datetime) -> str:
    return f"Node {owner} stopped renewing its lease, which expired at {utc_iso(until)}"


CANCELLED_ERROR = "Cancelled by an operator"
REMOVED_ERROR = "Task deleted while running"


_parsed_specs: dict[tuple[str, Source | None], TaskSpec] = {}
_PARSED_SPECS_MAX = 4096


def stored_spec(spec_hash: str, load: Callable[[], Mapping[str, Any]], source: Source | None) -> TaskSpec:
    """The ``TaskSpec`` of a stored canonical document, parsed once per (hash, source).

    Parsing checks cron expressions and time zones; claims and listings read the
    same specs again and again, and specs are immutable. ``load`` gives the
    document, called only on a miss (a hit does not even decode stored JSON).
    """
    key = (spec_hash, source)
    spec = _parsed_specs.get(key)
    if spec is None:
        if len(_parsed_specs) >= _PARSED_SPECS_MAX:
            _parsed_specs.clear()  # a bound, not a policy: misses only cost a parse
        spec = TaskSpec.from_dict(load(), source=source)
        _parsed_specs[key] = spec
    return spec
