"""When tasks fire: pure functions from a ``Schedule`` and the last slot to the next one.

A *slot* is the nominal time a run is due (``scheduledFor`` of its run record). Every function takes
and returns aware datetimes; results are in UTC. Nothing here reads the clock: the caller passes
``now`` / ``finished_at``.

Kinds
    ``cron``   slots are the wall-clock times the expression matches in ``schedule.timezone``.
    ``every``  fixed rate (default): slots are ``first + k * every``, phase-aligned for ever, whatever
               the run durations. Fixed delay (``fixedRate: false``): the next slot is ``every`` after
               the previous run *finished*. The first slot is registration + ``initialDelay``.
    ``at``     one run at that instant; if it passed while nobody ran it, it still runs once.
    ``after``  one run that long after the task was first registered.
    ``afterSuccessOf``  a chain: always due, and waiting (a dependency, see ``policy``) for a success of
               that task since its last run; one run per success, or per several that came meanwhile.

Daylight-saving changes (cron only; ``every`` counts real elapsed time and ignores them)
    Cron slots are wall-clock slots: each wall-clock time the expression matches runs at most once.
    * Spring forward, a slot in the skipped hour (02:30 in Europe/Paris on the last Sunday of March)
      is shifted, not dropped: it runs at the first instant after the gap (03:00 local). Slots that
      land on the same instant run once: ``*/30 * * * *`` runs at 01:30, then once at 03:00 (for
      02:00, 02:30 and 03:00), then 03:30.
    * Fall back, a slot in the repeated hour runs once, at its first occurrence (summer time). The
      second pass through that hour runs nothing: ``0 * * * *`` runs at 02:00 summer time and next at
      03:00 winter time (two real hours later); ``*/15 * * * *`` has a gap of 1h15 there. Use
      ``every: 15m`` for a task that must run at a steady real-time rate.
    Consequences: slots strictly increase, never repeat a wall-clock time, and a schedule never stops.

Missed runs (``missedRuns``: what happens to slots that passed while no node ran the task)
    ``runOnce`` (default) the overdue slot runs once as soon as possible; the next slot is the first
                one after that run finished, so any number of missed slots collapse into one run.
    ``skip``    a slot later than its grace period is not run: it is recorded as skipped and the task
                moves to the first slot after now. Grace: ``missedRunGrace`` when the task sets it, else
                60 s for cron and ``min(60 s, every)`` for ``every``; plus the ``jitter``. Slots on time
                (within the grace) run normally.
    ``runAll``  every missed slot runs, oldest first, one after the other (a fixed-rate task down for a
                day with ``every: 1m`` runs 1,440 times to catch up).
    One-shots are never missed: an ``at`` or ``after`` task whose time passed runs once when a node
    sees it. Fixed-delay tasks have no nominal slots to catch up: every policy runs the overdue slot
    once and continues ``every`` after it finished (``skip`` skips it when past its grace).

Jitter
    A slot becomes claimable at ``fire_time``: the slot plus an offset in ``[0, jitter)`` (whole
    milliseconds) derived from a hash of the task key and the slot, so every node computes the same
    value. Jitter delays a run; it never changes the slots themselves.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from .errors import SpecError
from .spec import Schedule

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MISSED_GRACE = timedelta(seconds=60)
_MILLISECOND = timedelta(milliseconds=1)
# A repeated (fall-back) period never lasts more than a day and cron slots are at least a minute
# apart, so a search that skips this many candidates has a bug, not a long wait.
_MAX_SKIPPED_CANDIDATES = 24 * 60 + 1


def first_slot(schedule: Schedule, registered_at: datetime) -> datetime | None:
    """The first nominal slot of a newly registered task.

    cron: the first cron time strictly after ``registered_at``; every: ``registered_at + initialDelay``;
    at: ``schedule.at``, even if already past (a one-shot that nobody ran still runs once);
    after: ``registered_at + after``.
    """
    registered_at = _utc(registered_at, "registered_at")
    kind = schedule.kind
    if kind == "cron":
        return cron_after(schedule, registered_at)
    if kind == "every":
        return registered_at + schedule.initial_delay
    if kind == "at":
        return _utc(schedule.at, "schedule.at")
    if kind == "afterSuccessOf":
        return registered_at
    return registered_at + schedule.after


def next_slot(schedule: Schedule, slot: datetime, *, finished_at: datetime) -> datetime | None:
    """The slot after a run of ``slot`` that finished at ``finished_at``; None for a one-shot.

    Fixed delay: ``finished_at + every``. runAll: the slot right after ``slot``, even if already past.
    runOnce and skip: the first slot strictly after both ``slot`` and ``finished_at`` (missed slots in
    between collapse). Fixed rate stays phase-aligned: ``slot + k * every``, computed in O(1).
    """
    slot = _utc(slot, "slot")
    finished_at = _utc(finished_at, "finished_at")
    kind = schedule.kind
    if kind in ("at", "after"):
        return None
    if kind == "afterSuccessOf":
        # Due at once, waiting for the next success; a slot of its own even when the run took no time.
        return max(finished_at, slot + _MILLISECOND)
    if kind == "every":
        every = schedule.every
        if not schedule.fixed_rate:
            return finished_at + every
        if schedule.missed_runs == "runAll" or finished_at < slot:
            return slot + every
        # Floor division of timedeltas is exact (integer microseconds): no drift, no iteration.
        return slot + ((finished_at - slot) // every + 1) * every
    if schedule.missed_runs == "runAll":
        return cron_after(schedule, slot)
    return cron_after(schedule, max(slot, finished_at))


def is_missed(schedule: Schedule, slot: datetime, now: datetime) -> bool:
    """Whether a ``missedRuns: skip`` slot is too late at ``now`` to run (it is recorded as skipped).

    Late means ``now - slot > grace + jitter`` with the schedule's ``missedRunGrace``, or by default a
    grace of 60 s for cron (cron slots are at least a minute apart) and ``min(60 s, every)`` for every.
    Always False for one-shots and for the runOnce and runAll policies, whose late slots still run.
    """
    slot = _utc(slot, "slot")
    now = _utc(now, "now")
    if schedule.missed_runs != "skip" or schedule.one_shot or schedule.kind == "afterSuccessOf":
        return False
    return now - slot > missed_grace(schedule) + schedule.jitter


def missed_grace(schedule: Schedule) -> timedelta:
    """How late a ``missedRuns: skip`` slot may start, jitter apart (see ``is_missed``)."""
    if schedule.missed_run_grace is not None:
        return schedule.missed_run_grace
    return MISSED_GRACE if schedule.every is None else min(MISSED_GRACE, schedule.every)


def fire_time(slot: datetime, jitter: timedelta, key: str) -> datetime:
    """When ``slot`` becomes claimable: ``slot`` plus a deterministic offset in ``[0, jitter)``.

    The offset is whole milliseconds, taken from a hash of ``key`` and the slot's instant to the
    millisecond (the precision the store keeps), so every node and every recomputation agree.
    """
    slot = _utc(slot, "slot")
    if jitter < timedelta(0):
        raise ValueError(f"jitter must not be negative, got {jitter}")
    span = jitter // _MILLISECOND
    if span == 0:
        return slot
    slot_ms = (slot - EPOCH) // _MILLISECOND
    digest = hashlib.blake2b(f"{key}\x00{slot_ms}".encode(), digest_size=8).digest()
    return slot + (int.from_bytes(digest, "big") % span) * _MILLISECOND


def upcoming(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    """Up to ``count`` slots after ``after``, for previews (``scheduler validate``, ``task-show``).

    cron: the next cron times strictly after ``after``. every: ``after`` is taken as a slot (the
    phase), giving ``after + every, after + 2 * every, ...``; pass the task's current slot to see its
    real phase. at: ``[at]`` while it is still ahead, else ``[]``. after: ``after`` is taken as the
    registration time, giving ``[after + delay]``.
    """
    after = _utc(after, "after")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r}")
    if count == 0:
        return []
    kind = schedule.kind
    if kind == "at":
        at = _utc(schedule.at, "schedule.at")
        return [at] if at > after else []
    if kind == "after":
        return [after + schedule.after]
    if kind == "every":
        return [after + k * schedule.every for k in range(1, count + 1)]
    slots: list[datetime] = []
    moment = after
    for _ in range(count):
        moment = cron_after(schedule, moment)
        slots.append(moment)
    return slots


def cron_after(schedule: Schedule, moment: datetime) -> datetime:
    """The first cron slot strictly after ``moment`` (UTC), following the DST rules above.

    Candidates are searched in naive wall-clock time of ``schedule.timezone`` (croniter only does
    calendar arithmetic there) and each is mapped to UTC by ``wall_to_utc``. That mapping never goes
    backwards, and wall-clock times merged by a gap all lie before the wall-clock time of their
    shared instant, so the first candidate after ``moment`` is the answer. The one exception: when
    ``moment`` lies in the second pass of a repeated hour, the rest of that hour's candidates map to
    its first pass, before ``moment``, and are skipped.
    """
    zone = schedule.zone
    wall = moment.astimezone(zone).replace(tzinfo=None, fold=0)
    iterator = _croniter(schedule.cron, threading.get_ident())
    for _ in range(_MAX_SKIPPED_CANDIDATES):
        try:
            wall = iterator.get_next(datetime, start_time=wall, update_current=False)
        except CroniterBadDateError:
            raise SpecError(f"cron expression {schedule.cron!r} never matches a date", "/schedule/cron") from None
        candidate = wall_to_utc(wall, zone)
        if candidate > moment:
            return candidate
    raise RuntimeError(f"no slot of cron {schedule.cron!r} in {schedule.timezone} found after {moment}")


def wall_to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a naive wall-clock time runs at: its first occurrence when the time repeats
    (fall back), the first instant after the gap when it does not exist (spring forward)."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == wall:
        return instant
    return _end_of_gap(wall, zone)


def _end_of_gap(wall: datetime, zone: ZoneInfo) -> datetime:
    """The transition instant that skipped over ``wall``.

    PEP 495: in a gap, fold=0 reads ``wall`` with the offset before the transition and fold=1 with
    the one after, which brackets the transition instant. zoneinfo exposes no transition table, so
    bisect to the second (transitions fall on whole seconds; about 13 steps for a one-hour gap).
    """
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    offset_before = datetime.fromtimestamp(low, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset_before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


@lru_cache(maxsize=1024)
def _croniter(expression: str, thread_id: int) -> croniter:
    """A parsed expression, reused (parsing costs twice the search). croniter keeps its current time
    in the instance, so each thread gets its own; ``get_next`` is always given ``start_time``."""
    return croniter(expression, EPOCH.replace(tzinfo=None))


def _utc(moment: datetime | None, name: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {moment!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return moment.astimezone(UTC)
