from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from scheduler.errors import SpecError
from scheduler.schedule import fire_time, first_slot, is_missed, next_slot, upcoming
from scheduler.spec import Schedule

UTC = timezone.utc


def t(text: str) -> datetime:
    """An instant written as local time with its offset, e.g. 2024-03-31T03:00+02:00."""
    return datetime.fromisoformat(text)


def cron(expression: str, zone: str = "UTC", missed: str = "runOnce") -> Schedule:
    return Schedule(cron=expression, timezone=zone, missed_runs=missed)


def every(period: timedelta, missed: str = "runOnce", fixed_rate: bool = True, **options) -> Schedule:
    return Schedule(every=period, missed_runs=missed, fixed_rate=fixed_rate, **options)


HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("schedule", "registered_at", "expected"),
    [
        (cron("0 * * * *"), t("2024-05-01T10:00:00+00:00"), t("2024-05-01T11:00+00:00")),
        (cron("0 * * * *"), t("2024-05-01T10:00:00.5+00:00"), t("2024-05-01T11:00+00:00")),
        (cron("0 * * * *"), t("2024-05-01T09:59:59+00:00"), t("2024-05-01T10:00+00:00")),
        (cron("@hourly"), t("2024-05-01T10:20+00:00"), t("2024-05-01T11:00+00:00")),
        (cron("@daily", "Europe/Paris"), t("2024-06-01T12:00+00:00"), t("2024-06-02T00:00+02:00")),
        (cron("@midnight", "America/New_York"), t("2024-01-10T12:00+00:00"), t("2024-01-11T00:00-05:00")),
        (cron("@weekly"), t("2024-05-01T10:00+00:00"), t("2024-05-05T00:00+00:00")),  # a Sunday
        (cron("@monthly"), t("2024-05-01T10:00+00:00"), t("2024-06-01T00:00+00:00")),
        (cron("@yearly"), t("2024-05-01T10:00+00:00"), t("2025-01-01T00:00+00:00")),
        (cron("@annually", "Asia/Kolkata"), t("2024-05-01T10:00+00:00"), t("2025-01-01T00:00+05:30")),
        (cron("0 9 * * 1-5", "Europe/Paris"), t("2024-05-03T08:00+00:00"), t("2024-05-06T09:00+02:00")),
        (every(HOUR), t("2024-05-01T10:00:07+00:00"), t("2024-05-01T10:00:07+00:00")),
        (every(HOUR, initial_delay=30 * SECOND), t("2024-05-01T10:00+00:00"), t("2024-05-01T10:00:30+00:00")),
        (Schedule(at=t("2026-12-01T03:00+00:00")), t("2024-05-01T10:00+00:00"), t("2026-12-01T03:00+00:00")),
        (Schedule(at=t("2020-01-01T00:00+00:00")), t("2024-05-01T10:00+00:00"), t("2020-01-01T00:00+00:00")),
        (Schedule(after=5 * MINUTE), t("2024-05-01T10:00+00:00"), t("2024-05-01T10:05+00:00")),
        (Schedule(after=timedelta(0)), t("2024-05-01T10:00+00:00"), t("2024-05-01T10:00+00:00")),
    ],
)
def test_first_slot(schedule, registered_at, expected):
    slot = first_slot(schedule, registered_at)
    assert slot == expected
    assert slot.tzinfo is UTC


# Spring forward: Europe/Paris 2024-03-31 02:00 CET -> 03:00 CEST; America/New_York 2024-03-10 02:00 EST -> 03:00 EDT.
# Fall back: Europe/Paris 2024-10-27 03:00 CEST -> 02:00 CET; America/New_York 2024-11-03 02:00 EDT -> 01:00 EST.
DST_CASES = [
    # A daily slot in the skipped hour is shifted to the end of the gap, then back to 02:30 the next day.
    ("Europe/Paris", "30 2 * * *", "2024-03-30T03:00+01:00", ["2024-03-31T03:00+02:00", "2024-04-01T02:30+02:00"]),
    ("Europe/Paris", "0 * * * *", "2024-03-31T00:30+01:00",
     ["2024-03-31T01:00+01:00", "2024-03-31T03:00+02:00", "2024-03-31T04:00+02:00"]),
    # 02:00, 02:30 and 03:00 all map to 03:00 CEST: one run.
    ("Europe/Paris", "*/30 * * * *", "2024-03-31T01:00+01:00",
     ["2024-03-31T01:30+01:00", "2024-03-31T03:00+02:00", "2024-03-31T03:30+02:00"]),
    # A daily slot in the repeated hour runs once, at its first (summer time) occurrence.
    ("Europe/Paris", "30 2 * * *", "2024-10-26T03:00+02:00", ["2024-10-27T02:30+02:00", "2024-10-28T02:30+01:00"]),
    ("Europe/Paris", "0 * * * *", "2024-10-27T00:30+02:00",
     ["2024-10-27T01:00+02:00", "2024-10-27T02:00+02:00", "2024-10-27T03:00+01:00", "2024-10-27T04:00+01:00"]),
    ("Europe/Paris", "*/30 * * * *", "2024-10-27T01:45+02:00",
     ["2024-10-27T02:00+02:00", "2024-10-27T02:30+02:00", "2024-10-27T03:00+01:00", "2024-10-27T03:30+01:00"]),
    ("America/New_York", "30 2 * * *", "2024-03-09T03:00-05:00", ["2024-03-10T03:00-04:00", "2024-03-11T02:30-04:00"]),
    ("America/New_York", "0 * * * *", "2024-03-10T00:30-05:00",
     ["2024-03-10T01:00-05:00", "2024-03-10T03:00-04:00", "2024-03-10T04:00-04:00"]),
    ("America/New_York", "*/30 * * * *", "2024-03-10T01:00-05:00",
     ["2024-03-10T01:30-05:00", "2024-03-10T03:00-04:00", "2024-03-10T03:30-04:00"]),
    # New York repeats 01:00-02:00, so 02:30 is unaffected by fall back and 01:30 runs once.
    ("America/New_York", "30 2 * * *", "2024-11-02T03:00-04:00", ["2024-11-03T02:30-05:00", "2024-11-04T02:30-05:00"]),
    ("America/New_York", "30 1 * * *", "2024-11-02T02:00-04:00", ["2024-11-03T01:30-04:00", "2024-11-04T01:30-05:00"]),
    ("America/New_York", "0 * * * *", "2024-11-03T00:30-04:00",
     ["2024-11-03T01:00-04:00", "2024-11-03T02:00-05:00", "2024-11-03T03:00-05:00"]),
    ("America/New_York", "*/30 * * * *", "2024-11-03T00:45-04:00",
     ["2024-11-03T01:00-04:00", "2024-11-03T01:30-04:00", "2024-11-03T02:00-05:00", "2024-11-03T02:30-05:00"]),
    # Lord Howe moves by 30 minutes: 02:00 and 02:15 land on 02:30 (+11:00).
    ("Australia/Lord_Howe", "*/15 * * * *", "2024-10-06T01:40+10:30",
     ["2024-10-06T01:45+10:30", "2024-10-06T02:30+11:00", "2024-10-06T02:45+11:00"]),
    # Santiago springs forward at midnight: the daily midnight run happens at 01:00.
    ("America/Santiago", "0 0 * * *", "2024-09-07T12:00-04:00", ["2024-09-08T01:00-03:00", "2024-09-09T00:00-03:00"]),
]


@pytest.mark.parametrize(("zone", "expression", "after", "expected"), DST_CASES)
def test_cron_across_dst(zone, expression, after, expected):
    assert upcoming(cron(expression, zone), t(after), len(expected)) == [t(s) for s in expected]


@pytest.mark.parametrize(("zone", "expression", "after", "expected"), DST_CASES)
@pytest.mark.parametrize("missed", ["runOnce", "runAll", "skip"])
def test_next_slot_walks_the_same_dst_slots(zone, expression, after, expected, missed):
    schedule = cron(expression, zone, missed)
    slots = [first_slot(schedule, t(after))]
    while len(slots) < len(expected):
        slots.append(next_slot(schedule, slots[-1], finished_at=slots[-1] + SECOND))
    assert slots == [t(s) for s in expected]


@pytest.mark.parametrize(
    ("expression", "slot", "finished_at", "missed", "expected"),
    [
        # Finished during the second pass of the repeated hour: nothing more runs until the hour is over.
        ("*/15 * * * *", "2024-10-27T02:45+02:00", "2024-10-27T02:10+01:00", "runOnce", "2024-10-27T03:00+01:00"),
        ("*/15 * * * *", "2024-10-27T02:45+02:00", "2024-10-27T02:50+01:00", "runOnce", "2024-10-27T03:00+01:00"),
        ("*/15 * * * *", "2024-10-27T02:45+02:00", "2024-10-27T02:50+01:00", "runAll", "2024-10-27T03:00+01:00"),
        ("30 2 * * *", "2024-10-27T02:30+02:00", "2024-10-27T02:40+01:00", "runOnce", "2024-10-28T02:30+01:00"),
        # The shifted spring slot is not run a second time by the slots merged into it.
        ("*/30 * * * *", "2024-03-31T03:00+02:00", "2024-03-31T03:00:01+02:00", "runAll", "2024-03-31T03:30+02:00"),
    ],
)
def test_next_slot_inside_a_dst_change(expression, slot, finished_at, missed, expected):
    schedule = cron(expression, "Europe/Paris", missed)
    result = next_slot(schedule, t(slot), finished_at=t(finished_at))
    assert result == t(expected)


def test_wall_clock_time_in_second_pass_is_not_a_slot():
    # 02:15 CET (second pass) is not a slot: the "0" and "15" above were reached from 03:00 CEST on.
    schedule = cron("*/15 * * * *", "Europe/Paris")
    slots = upcoming(schedule, t("2024-10-27T01:50+02:00"), 6)
    walls = [s.astimezone(ZoneInfo("Europe/Paris")).strftime("%H:%M%z") for s in slots]
    assert walls == ["02:00+0200", "02:15+0200", "02:30+0200", "02:45+0200", "03:00+0100", "03:15+0100"]


@pytest.mark.parametrize(
    ("schedule", "slot", "finished_at", "expected"),
    [
        # Down two days, then the overdue slot ran once: runOnce and skip continue with the first future slot.
        (every(HOUR), "2024-01-01T00:00Z", "2024-01-03T05:30Z", "2024-01-03T06:00Z"),
        (every(HOUR, "skip"), "2024-01-01T00:00Z", "2024-01-03T05:30Z", "2024-01-03T06:00Z"),
        (every(HOUR, "runAll"), "2024-01-01T00:00Z", "2024-01-03T05:30Z", "2024-01-01T01:00Z"),
        (cron("0 * * * *"), "2024-01-01T00:00Z", "2024-01-03T05:30Z", "2024-01-03T06:00Z"),
        (cron("0 * * * *", missed="skip"), "2024-01-01T00:00Z", "2024-01-03T05:30Z", "2024-01-03T06:00Z"),
        (cron("0 * * * *", missed="runAll"), "2024-01-01T00:00Z", "2024-01-03T05:30Z", "2024-01-01T01:00Z"),
        (cron("30 2 * * *", "Europe/Paris", "skip"), "2024-03-01T02:30+01:00", "2024-04-15T12:00+02:00",
         "2024-04-16T02:30+02:00"),
        # Fixed delay has no nominal slots to catch up: every policy waits `every` after the run.
        (every(HOUR, fixed_rate=False), "2024-01-01T00:00Z", "2024-01-03T05:30Z", "2024-01-03T06:30Z"),
        (every(HOUR, "runAll", fixed_rate=False), "2024-01-01T00:00Z", "2024-01-03T05:30Z", "2024-01-03T06:30Z"),
        # A run shorter than the period; one finishing exactly on a slot; a clock behind the slot.
        (every(HOUR), "2024-01-01T00:00Z", "2024-01-01T00:00:03Z", "2024-01-01T01:00Z"),
        (every(MINUTE), "2024-01-01T00:00:10Z", "2024-01-01T00:05:10Z", "2024-01-01T00:06:10Z"),
        (every(MINUTE), "2024-01-01T00:00:10Z", "2024-01-01T00:00:05Z", "2024-01-01T00:01:10Z"),
        (cron("0 * * * *"), "2024-01-01T00:00Z", "2024-01-01T01:00Z", "2024-01-01T02:00Z"),
    ],
)
def test_next_slot_after_a_run(schedule, slot, finished_at, expected):
    assert next_slot(schedule, t(slot), finished_at=t(finished_at)) == t(expected)


@pytest.mark.parametrize(
    "schedule",
    [Schedule(at=t("2024-01-01T00:00Z")), Schedule(after=MINUTE), Schedule(after=MINUTE, missed_runs="runAll")],
)
def test_one_shot_has_no_next_slot(schedule):
    assert next_slot(schedule, t("2024-01-01T00:00Z"), finished_at=t("2024-01-01T00:00:01Z")) is None


@pytest.mark.parametrize(("fixed_rate", "expected_minutes"), [(True, [0, 60, 120, 180]), (False, [0, 80, 160, 240])])
def test_fixed_rate_keeps_phase_fixed_delay_follows_the_run(fixed_rate, expected_minutes):
    start = t("2024-01-01T00:00Z")
    schedule = every(HOUR, fixed_rate=fixed_rate)
    slots = [first_slot(schedule, start)]
    while len(slots) < 4:
        slots.append(next_slot(schedule, slots[-1], finished_at=slots[-1] + 20 * MINUTE))
    assert [(s - start) // MINUTE for s in slots] == expected_minutes


def test_fixed_rate_after_years_of_downtime_stays_aligned():
    slot = t("2015-03-01T00:00:00.250+00:00")
    period = timedelta(seconds=7, milliseconds=3)
    finished_at = t("2025-07-14T09:26:53.123+00:00")
    result = next_slot(every(period), slot, finished_at=finished_at)
    assert (result - slot) % period == timedelta(0)
    assert finished_at < result <= finished_at + period


@pytest.mark.parametrize(
    ("schedule", "late_by", "missed"),
    [
        (every(HOUR, "skip"), 59 * SECOND, False),
        (every(HOUR, "skip"), 60 * SECOND, False),
        (every(HOUR, "skip"), 61 * SECOND, True),
        (every(HOUR, "skip"), 3 * 24 * HOUR, True),
        (every(10 * SECOND, "skip"), 10 * SECOND, False),
        (every(10 * SECOND, "skip"), 11 * SECOND, True),
        (every(10 * SECOND, "skip", jitter=30 * SECOND), 39 * SECOND, False),
        (every(10 * SECOND, "skip", jitter=30 * SECOND), 41 * SECOND, True),
        (every(HOUR, "skip", fixed_rate=False), 61 * SECOND, True),
        (cron("* * * * *", missed="skip"), 30 * SECOND, False),
        (cron("0 0 * * *", missed="skip"), 61 * SECOND, True),
        (cron("0 0 * * *", missed="skip"), -HOUR, False),
        (cron("0 0 * * *"), 3 * 24 * HOUR, False),
        (cron("0 0 * * *", missed="runAll"), 3 * 24 * HOUR, False),
        (every(HOUR), 3 * 24 * HOUR, False),
        (Schedule(at=t("2024-01-01T00:00Z"), missed_runs="skip"), 3 * 24 * HOUR, False),
        (Schedule(after=MINUTE, missed_runs="skip"), 3 * 24 * HOUR, False),
        # missedRunGrace replaces the default grace, longer or shorter; the jitter still adds to it.
        (every(HOUR, "skip", missed_run_grace=5 * MINUTE), 5 * MINUTE, False),
        (every(HOUR, "skip", missed_run_grace=5 * MINUTE), 5 * MINUTE + SECOND, True),
        (every(10 * SECOND, "skip", missed_run_grace=MINUTE), 59 * SECOND, False),
        (Schedule(cron="0 0 * * *", missed_runs="skip", missed_run_grace=2 * HOUR), 2 * HOUR, False),
        (Schedule(cron="0 0 * * *", missed_runs="skip", missed_run_grace=2 * SECOND), 3 * SECOND, True),
        (every(HOUR, "skip", missed_run_grace=MINUTE, jitter=30 * SECOND), 89 * SECOND, False),
        (every(HOUR, "skip", missed_run_grace=MINUTE, jitter=30 * SECOND), 91 * SECOND, True),
    ],
)
def test_is_missed(schedule, late_by, missed):
    slot = t("2024-01-01T00:00Z")
    assert is_missed(schedule, slot, slot + late_by) is missed


SLOTS = [t("2024-01-01T00:00Z") + k * 7 * MINUTE for k in range(500)]


def test_fire_time_without_jitter_is_the_slot():
    assert fire_time(SLOTS[3], timedelta(0), "task") == SLOTS[3]


def test_fire_time_is_deterministic_and_independent_of_the_offset_written():
    slot = t("2024-03-31T03:00+02:00")
    first = fire_time(slot, 30 * SECOND, "data-sync")
    assert fire_time(slot.astimezone(UTC), 30 * SECOND, "data-sync") == first
    assert fire_time(slot, 30 * SECOND, "data-sync") == first
    assert first.tzinfo is UTC


def test_fire_time_stays_within_jitter_and_spreads():
    offsets = [fire_time(slot, 30 * SECOND, "data-sync") - slot for slot in SLOTS]
    assert all(timedelta(0) <= offset < 30 * SECOND for offset in offsets)
    assert all(offset.microseconds % 1000 == 0 for offset in offsets)
    assert min(offsets) < 3 * SECOND and max(offsets) > 27 * SECOND
    assert len(set(offsets)) > 490


def test_fire_time_differs_between_tasks_of_the_same_slot():
    offsets = {fire_time(SLOTS[0], HOUR, f"task-{n}") for n in range(100)}
    assert len(offsets) > 95


def test_fire_time_of_a_slot_with_microseconds_matches_its_stored_millisecond_form():
    precise = t("2024-01-01T00:00:00.123456+00:00")
    stored = t("2024-01-01T00:00:00.123+00:00")
    assert fire_time(precise, MINUTE, "t") - precise == fire_time(stored, MINUTE, "t") - stored


@pytest.mark.parametrize(
    ("schedule", "after", "count", "expected"),
    [
        (every(15 * MINUTE), "2024-01-01T10:00Z", 3, ["2024-01-01T10:15Z", "2024-01-01T10:30Z", "2024-01-01T10:45Z"]),
        (every(HOUR, fixed_rate=False), "2024-01-01T10:00Z", 2, ["2024-01-01T11:00Z", "2024-01-01T12:00Z"]),
        (cron("0 9 * * 1-5", "Europe/Paris"), "2024-05-03T10:00+02:00", 2, ["2024-05-06T09:00+02:00", "2024-05-07T09:00+02:00"]),
        (cron("@hourly"), "2024-01-01T10:00Z", 0, []),
        (Schedule(at=t("2026-12-01T03:00Z")), "2024-01-01T10:00Z", 5, ["2026-12-01T03:00Z"]),
        (Schedule(at=t("2020-12-01T03:00Z")), "2024-01-01T10:00Z", 5, []),
        (Schedule(at=t("2024-01-01T10:00Z")), "2024-01-01T10:00Z", 5, []),
        (Schedule(after=5 * MINUTE), "2024-01-01T10:00Z", 5, ["2024-01-01T10:05Z"]),
    ],
)
def test_upcoming(schedule, after, count, expected):
    assert upcoming(schedule, t(after), count) == [t(s) for s in expected]


NAIVE = datetime(2024, 1, 1)
AWARE = t("2024-01-01T00:00Z")


@pytest.mark.parametrize(
    "call",
    [
        lambda: first_slot(cron("@hourly"), NAIVE),
        lambda: next_slot(every(HOUR), NAIVE, finished_at=AWARE),
        lambda: next_slot(every(HOUR), AWARE, finished_at=NAIVE),
        lambda: is_missed(every(HOUR, "skip"), AWARE, NAIVE),
        lambda: fire_time(NAIVE, MINUTE, "t"),
        lambda: upcoming(cron("@hourly"), NAIVE, 3),
    ],
)
def test_naive_datetimes_are_refused(call):
    with pytest.raises(ValueError, match="timezone-aware"):
        call()


@pytest.mark.parametrize("count", [-1, 2.0, True])
def test_upcoming_refuses_a_bad_count(count):
    with pytest.raises(ValueError, match="count"):
        upcoming(cron("@hourly"), AWARE, count)


def test_negative_jitter_is_refused():
    with pytest.raises(ValueError, match="jitter"):
        fire_time(AWARE, -SECOND, "t")


def test_cron_that_never_matches_is_a_spec_error():
    with pytest.raises(SpecError, match="never matches") as error:
        first_slot(cron("0 0 30 2 *"), AWARE)
    assert error.value.pointer == "/schedule/cron"


DST_ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Santiago"]
# (zone, expression, nominal period); a DST change may add at most an hour to the period.
YEAR_CASES = [
    *((zone, "0 * * * *", HOUR) for zone in DST_ZONES),
    *((zone, "*/30 * * * *", 30 * MINUTE) for zone in ["Europe/Paris", "Australia/Lord_Howe"]),
    *((zone, "30 2 * * *", 24 * HOUR) for zone in [*DST_ZONES, "Asia/Kolkata"]),
    *((zone, "0 0 * * *", 24 * HOUR) for zone in DST_ZONES),
    *((zone, "@weekly", 7 * 24 * HOUR) for zone in DST_ZONES),
]


def _gap_end(slot: datetime, zone: ZoneInfo) -> bool:
    return (slot - SECOND).astimezone(zone).utcoffset() != slot.astimezone(zone).utcoffset()


def _exists(wall: datetime, zone: ZoneInfo) -> bool:
    return wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


@pytest.mark.parametrize(("zone_name", "expression", "period"), YEAR_CASES)
def test_a_year_of_cron_slots(zone_name, expression, period):
    zone = ZoneInfo(zone_name)
    schedule = cron(expression, zone_name, "runAll")
    start, end = t("2024-01-01T00:00Z"), t("2025-01-01T00:00Z")
    slots = [first_slot(schedule, start)]
    while slots[-1] < end:
        slots.append(next_slot(schedule, slots[-1], finished_at=slots[-1] + SECOND))

    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert all(timedelta(0) < gap <= period + HOUR for gap in gaps)
    walls = [slot.astimezone(zone).replace(tzinfo=None) for slot in slots]
    assert len(set(walls)) == len(walls), "a wall-clock time ran twice"
    named = []  # the wall-clock times the expression names over the same span, by croniter alone
    for wall in croniter(expression, walls[0] - MINUTE).all_next(datetime):
        if wall > walls[-1]:
            break
        named.append(wall)
    # Each slot is a wall-clock time the expression names, or the end of a gap that swallowed one.
    named_set = set(named)
    assert all(wall in named_set or _gap_end(slot, zone) for slot, wall in zip(slots, walls))
    # Each named wall-clock time that exists in the zone is a slot.
    wall_set = set(walls)
    missing = [wall for wall in named if wall not in wall_set and _exists(wall, zone)]
    assert missing == []


def test_a_year_of_fixed_rate_runs_with_varying_durations():
    schedule = every(timedelta(minutes=7, seconds=30))
    start = t("2024-01-01T00:00:05Z")
    slot, duration_seed = first_slot(schedule, start), 1
    for _ in range(20_000):
        duration_seed = (duration_seed * 1103515245 + 12345) % 2**31
        finished_at = slot + timedelta(seconds=duration_seed % 2000)
        following = next_slot(schedule, slot, finished_at=finished_at)
        assert following > max(slot, finished_at)
        assert following - max(slot, finished_at) <= schedule.every
        assert (following - start) % schedule.every == timedelta(0)
        slot = following
