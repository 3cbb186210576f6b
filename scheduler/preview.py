"""The next fire times of a task, for people: ``scheduler next`` and ``GET /cxs/tasks/{id}/next``.

Pure functions over ``scheduler.schedule``: the slots are the ones the engine
will compute (daylight-saving rules included), each with its fire time (the
slot plus the task's jitter) and a note where a rule moved or merged it, so an
operator sees before the night of the change what will run when.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter

from .errors import SpecError
from .model import FINAL_STATUSES, Status, Task
from .schedule import fire_time, first_slot, next_slot, wall_to_utc
from .spec import Schedule

MAX_COUNT = 1000
FIXED_DELAY_NOTE = "at the earliest: a fixed delay counts from the end of the previous run"
_SECOND = timedelta(seconds=1)
_MAX_MERGED = 24 * 60 + 1  # wall-clock candidates a gap can merge (cron slots are at least a minute apart)
# Dates near year 1 or 9999 overflow datetime arithmetic, and croniter says so its own way.
_PAST_THE_CALENDAR = (OverflowError, ValueError, SpecError, CroniterError)


@dataclass(frozen=True)
class FireTime:
    """One upcoming run: its slot, when it may start (slot + jitter, or a retry's time), why it moved."""

    slot: datetime
    fire_time: datetime
    note: str | None = None


def parse_instant(text: str) -> datetime:
    """An ISO 8601 time with a zone (``2027-03-28T00:00:00Z``, ``...+01:00``); ``ValueError`` otherwise.

    Any year is taken: one whose offset leads out of the calendar is its first or last instant.
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected an ISO 8601 time such as 2027-03-28T00:00:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone: add Z or an offset such as +01:00")
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


def for_new_task(schedule: Schedule, key: str, registered_at: datetime, count: int) -> list[FireTime]:
    """The first ``count`` runs of a task registered at ``registered_at`` (a file's task, offline)."""
    try:
        first = first_slot(schedule, registered_at)
        due = fire_time(first, schedule.jitter, key)
    except _PAST_THE_CALENDAR:
        return []
    return _runs(schedule, key, first, due, count, registered_at)


def for_task(task: Task, count: int, after: datetime | None, now: datetime) -> tuple[list[FireTime], str | None]:
    """The next ``count`` runs of a task in force (those whose slot is after ``after`` when given), or why
    there are none.

    The first is the task's next run as stored: its slot, and when it is due (a retry or a resume may
    be due at another time than the slot's). While the task runs, the list starts with the slot after
    the running one, as the engine computes it when that run ends (now, at the earliest).
    """
    spec = task.spec
    schedule = spec.schedule
    if not spec.enabled:
        return [], "the task is disabled"
    if task.status in FINAL_STATUSES:
        return [], f"the task is {task.status.value}"
    slot = task.scheduled_for or task.next_scheduled_execution
    if slot is None:
        return [], "the task has no next run"
    note = None
    if task.status is Status.RUNNING:
        start = _bounded(lambda: next_slot(schedule, slot, finished_at=now))
        due = None
    else:
        start, due, note = slot, task.next_scheduled_execution or slot, _state_note(task)
    if after is not None and start is not None and start <= after:
        # Straight to the first slot after `after`: every missed-runs policy agrees on slots still to come.
        catch_up_none = replace(schedule, missed_runs="runOnce")
        start, due, note = _bounded(lambda: next_slot(catch_up_none, start, finished_at=after)), None, None
    if start is None:
        return [], "no run after that time" if after is not None else "a one-shot: nothing runs after the running one"
    due = due or _bounded(lambda: fire_time(start, schedule.jitter, task.item_id))
    entries = [] if due is None else _runs(schedule, task.item_id, start, due, count, now)
    if not entries:
        return [], "no run after that time"
    entries[0] = replace(entries[0], note=_joined(note, entries[0].note))
    return entries, None


def _runs(schedule: Schedule, key: str, slot: datetime, due: datetime, count: int, now: datetime) -> list[FireTime]:
    """``count`` runs from ``slot`` (due at ``due``) on, each taken as instant: from one slot to the next
    as the engine goes (``next_slot``, missed-runs policy included), each with its fire time and notes."""
    entries: list[FireTime] = []
    following: datetime | None = slot
    while following is not None and len(entries) < count:
        slot = following
        try:
            estimated = bool(entries) and schedule.every is not None and not schedule.fixed_rate
            notes = (dst_note(schedule, slot), FIXED_DELAY_NOTE if estimated else None, "due now" if due <= now else None)
            entries.append(FireTime(slot, due, _joined(*notes)))
            following = next_slot(schedule, slot, finished_at=max(due, now))
            if following is not None:
                due = fire_time(following, schedule.jitter, key)
        except _PAST_THE_CALENDAR:
            break
    return entries


def dst_note(schedule: Schedule, slot: datetime) -> str | None:
    """What the daylight-saving rules did to a cron slot, in words; None when nothing."""
    if schedule.kind != "cron":
        return None
    zone = schedule.zone
    wall = slot.astimezone(zone).replace(tzinfo=None)
    merged = wall_times(schedule, slot)
    skipped = [w for w in merged if w != wall]
    if skipped:
        one = len(skipped) == 1
        if wall in merged:  # the slot's own time matches too: they all run once, then
            outcome = f"{'runs' if one else 'run'} once with {_clock(wall)}"
        else:
            outcome = f"{'runs' if one else 'run once,'} at {_clock(wall)}"
        times = ", ".join(_clock(w) for w in skipped)
        return f"{times} {'does' if one else 'do'} not exist that day (clocks go forward): {outcome}"
    if wall.replace(tzinfo=zone, fold=0).utcoffset() != wall.replace(tzinfo=zone, fold=1).utcoffset():
        return f"{_clock(wall)} happens twice that day (clocks go back): runs once, the first time"
    return None


def wall_times(schedule: Schedule, slot: datetime) -> list[datetime]:
    """The wall-clock times of a cron expression (naive, in its zone) that run at ``slot``, oldest first:
    the slot's own, or the ones a spring-forward gap shifted (and merged) to it."""
    zone: ZoneInfo = schedule.zone
    wall = slot.astimezone(zone).replace(tzinfo=None)
    candidates = croniter(schedule.cron, wall + _SECOND)
    found: list[datetime] = []
    for _ in range(_MAX_MERGED):
        candidate = candidates.get_prev(datetime)
        if wall_to_utc(candidate, zone) != slot:
            break
        found.append(candidate)
    return found[::-1]


def _state_note(task: Task) -> str | None:
    if task.status is Status.CRASHED:
        return "resumes after a crash"
    return f"attempt {task.attempt} (a retry)" if task.attempt > 1 else None


def _bounded(compute: Callable[[], datetime | None]) -> datetime | None:
    """A slot or a time, or None past the calendar's ends (a ``from`` in year 1 or 9999)."""
    try:
        return compute()
    except _PAST_THE_CALENDAR:
        return None


def _joined(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


def _clock(wall: datetime) -> str:
    return wall.strftime("%H:%M:%S" if wall.second else "%H:%M")
