"""The admin commands' text: durations, dates, schedules and tables that fit the terminal."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from scheduler.client import task_path
from scheduler.commands import render

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "seconds, text",
    [(0, "0s"), (0.25, "250ms"), (1, "1s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"), (90061, "1d1h"), (604800, "7d")],
)
def test_duration_text(seconds, text):
    assert render.duration_text(seconds) == text


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "-"),
        ("2026-03-01T12:00:00.400Z", "now"),
        ("2026-03-01T12:00:05Z", "in 5s"),
        ("2026-03-01T12:59:59Z", "in 59m"),
        ("2026-03-01T09:30:00Z", "2h ago"),
        ("2030-01-01T08:00:00Z", "in 1401d"),
    ],
)
def test_relative_date(value, text):
    assert render.relative_date(value, NOW) == text


@pytest.mark.parametrize(
    "value, text",
    [(None, "-"), ("2026-03-01T12:00:05.123Z", "2026-03-01 12:00:05"), ("2026-03-01T13:00:00+01:00", "2026-03-01 12:00:00")],
)
def test_short_date_is_utc(value, text):
    assert render.short_date(value) == text


@pytest.mark.parametrize(
    "schedule, text",
    [
        ({"every": 3600, "fixedRate": True, "initialDelay": 0, "jitter": 0, "missedRuns": "runOnce"}, "every 1h (fixed rate)"),
        ({"every": 30, "fixedRate": False, "initialDelay": 10, "jitter": 0, "missedRuns": "runOnce"},
         "every 30s (fixed delay), first after 10s"),
        ({"cron": "30 7 * * 1-5", "timezone": "Europe/Paris", "jitter": 30, "missedRuns": "skip"},
         "cron 30 7 * * 1-5 (Europe/Paris), jitter 30s"),
        ({"at": "2030-01-01T08:00:00Z", "jitter": 0, "missedRuns": "runOnce"}, "once at 2030-01-01 08:00:00"),
        ({"after": 120, "jitter": 0, "missedRuns": "runOnce"}, "once, 2m after registration"),
    ],
)
def test_schedule_text(schedule, text):
    assert render.schedule_text(schedule) == text


def task(item_id: str, persistent: bool = True) -> dict:
    return {
        "itemId": item_id, "taskType": "dataSync", "status": "SCHEDULED", "failureCount": 0, "persistent": persistent,
        "nextScheduledExecution": "2026-03-01T13:00:00Z", "lastExecutionDate": "2026-03-01T11:00:00Z",
    }


TASKS = [task("a-rather-long-task-name-for-a-table"), task("local-cache", persistent=False)]


def test_a_wide_table_keeps_absolute_dates_and_whole_ids():
    text = render.task_table(TASKS, width=None, now=NOW)
    assert "a-rather-long-task-name-for-a-table │" in text and "2026-03-01 13:00:00" in text
    assert text.splitlines()[-1] == "Showing 2 task(s) (1 in storage, 1 in memory)"


@pytest.mark.parametrize("width", [80, 100])
def test_a_narrow_table_turns_dates_relative_and_cuts_ids(width):
    lines = render.task_table(TASKS, width=width, now=NOW).splitlines()
    assert max(len(line) for line in lines) <= width
    assert "in 1h" in lines[2] and "1h ago" in lines[2] and "…" in lines[2]
    assert lines[3].startswith("local-cache ")


def test_dates_stay_absolute_while_cutting_ids_is_enough():
    width = len(render.task_table([task("x" * 12)], width=None).splitlines()[0])
    lines = render.task_table([task("x" * 20)], width=width, now=NOW).splitlines()
    assert "2026-03-01 13:00:00" in lines[2] and lines[2].startswith("x" * 11 + "…")


def test_the_footer_says_when_the_limit_hid_tasks():
    assert render.task_table(TASKS, total=5).splitlines()[-1] == "3 more task(s) not shown: raise --limit or filter with -s / -t"


@pytest.mark.parametrize(
    "item_id, action, path",
    [
        ("data-sync", "", "/cxs/tasks/data-sync"),
        ("livez-check@node-a.example", "runs", "/cxs/tasks/livez-check@node-a%2Eexample/runs"),
        ("..", "", "/cxs/tasks/%2E%2E"),
        ("a b/c?d", "retry", "/cxs/tasks/a%20b%2Fc%3Fd/retry"),
    ],
)
def test_task_ids_are_one_path_segment(item_id, action, path):
    assert task_path(item_id, action) == path
