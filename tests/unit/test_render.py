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


def task(item_id: str, persistent: bool = True, task_type: str = "dataSync", **fields) -> dict:
    return {
        "itemId": item_id, "taskType": task_type, "status": "SCHEDULED", "failureCount": 0, "persistent": persistent,
        "nextScheduledExecution": "2026-03-01T13:00:00Z", "lastExecutionDate": "2026-03-01T11:00:00Z", **fields,
    }


TASKS = [task("a-rather-long-task-name-for-a-table"), task("local-cache", persistent=False)]


def test_a_wide_table_keeps_absolute_dates_and_whole_ids():
    text = render.task_table(TASKS, width=None, now=NOW)
    assert "a-rather-long-task-name-for-a-table │" in text and "2026-03-01 13:00:00" in text
    assert text.splitlines()[-1] == "Showing 2 task(s) (1 in storage, 1 in memory)"


@pytest.mark.parametrize("width", [80, 100])
def test_a_narrow_table_turns_dates_relative_and_keeps_ids_whole(width):
    lines = render.task_table(TASKS, width=width, now=NOW).splitlines()
    assert max(len(line) for line in lines) <= width
    assert lines[2].startswith("a-rather-long-task-name-for-a-table │ dataSync │ SCHEDULED │ in 1h ")
    assert "…" not in "".join(lines) and lines[3].startswith("local-cache ")


def test_columns_are_left_out_in_order_and_the_id_never_cut():
    long_id = "a-task-name-so-long-that-it-fills-most-of-an-eighty-column-terminal@node-1"

    def headers(width: int) -> list[str]:
        return [cell.strip() for cell in render.task_table([task(long_id)], width=width, now=NOW).splitlines()[0].split("│")]

    assert headers(200) == ["ID", "Type", "Status", "Next Run", "Last Run", "Failures", "Persistent"]
    assert headers(142) == ["ID", "Type", "Status", "Next Run", "Last Run", "Failures"]
    assert headers(129) == ["ID", "Type", "Status", "Next Run", "Failures"]
    assert headers(118) == ["ID", "Type", "Status", "Next Run"]
    assert headers(107) == ["ID", "Status", "Next Run"]
    assert headers(96) == headers(20) == ["ID", "Status"]  # too narrow even so: wider than asked, the ID whole
    assert render.task_table([task(long_id)], width=20, now=NOW).splitlines()[2] == f"{long_id} │ SCHEDULED"


def test_the_type_is_cut_before_any_column_is_left_out():
    tasks = [task("t", task_type="aVeryLongTaskTypeNameIndeed")]
    width = len(render.task_table([task("t", task_type="short-type-x")], width=None).splitlines()[0])
    lines = render.task_table(tasks, width=width, now=NOW).splitlines()
    assert "2026-03-01 13:00:00" in lines[2] and lines[2].startswith("t  │ aVeryLongTa… │ SCHEDULED")


def test_the_wide_table_adds_outcome_node_and_labels_after_the_usual_columns():
    wide = task("web@node-1", successCount=3, lastOutcome="success", node="node-1", labels={"tier": "web", "team": "a"})
    header, row = [[c.strip() for c in line.split("│")] for line in render.task_table([wide], wide=True).splitlines()[:3:2]]
    assert header == [
        "ID", "Type", "Status", "Next Run", "Last Run", "Failures", "Persistent", "Successes", "Last Outcome", "Node", "Labels"
    ]
    assert row[7:] == ["3", "success", "node-1", "team=a,tier=web"]
    bare = render.task_table([task("t")], wide=True).splitlines()[2]
    assert [c.strip() for c in bare.split("│")][7:] == ["0", "-", "-", "-"]


def test_without_headers_the_lines_are_the_tasks_only():
    assert render.task_table(TASKS, total=5, with_headers=False).splitlines() == [
        line for line in render.task_table(TASKS, total=5).splitlines()[2:4]
    ]
    assert render.task_table([], with_headers=False) == ""


def test_the_footer_says_when_the_limit_hid_tasks():
    assert render.task_table(TASKS, total=5).splitlines()[-1] == (
        "3 more task(s) not shown: raise --limit or filter with -s, -t or -l"
    )


def test_node_ids_are_never_cut():
    node = {"nodeId": "node-with-a-rather-long-name.example.org", "executor": True, "listen": "127.0.0.1:8181",
            "version": "0.1.0", "taskTypes": ["aType", "anotherType"], "heartbeat": "2026-03-01T12:00:00Z"}
    lines = render.node_table([node], width=60).splitlines()
    assert lines[2].startswith("node-with-a-rather-long-name.example.org │ yes")
    assert render.node_table([node], with_headers=False).startswith("node-with-a-rather-long-name.example.org │")


@pytest.mark.parametrize(
    "task_fields, text",
    [
        ({"maxRetries": 3, "retryDelay": 60000}, "Task t: maxRetries 3, retryDelay 1m (as declared: no override)"),
        ({"maxRetries": 5, "retryDelay": 90000, "overrides": {"retryDelay": 90000}},
         "Task t: maxRetries 5, retryDelay 1m30s (set by task-config: retryDelay; kept when its file is reloaded)"),
    ],
)
def test_retry_settings_say_which_are_overrides(task_fields, text):
    assert render.retry_settings_text({"itemId": "t", **task_fields}) == text


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


def _unsuspended(schedule: dict, due: str | None, status: str = "SCHEDULED", **fields) -> str:
    task = {"itemId": "t", "status": status, "enabled": True, "suspended": False, "schedule": schedule,
            "nextScheduledExecution": due, "lastModified": "2026-03-01T12:00:00Z", **fields}
    return render.unsuspended_text(task)


EVERY = {"every": 60, "fixedRate": True, "initialDelay": 0, "jitter": 0}


@pytest.mark.parametrize(
    "schedule, due, status, text",
    [
        ({**EVERY, "missedRuns": "runOnce"}, "2026-03-01T12:05:00Z", "SCHEDULED", "next run 2026-03-01 12:05:00"),
        ({**EVERY, "missedRuns": "runOnce"}, "2026-03-01T11:00:00Z", "SCHEDULED",
         "the slot of 2026-03-01 11:00:00 runs now, once for all the slots missed (missedRuns: runOnce)"),
        ({**EVERY, "missedRuns": "runAll"}, "2026-03-01T11:00:00Z", "SCHEDULED",
         "every slot missed since 2026-03-01 11:00:00 runs now, oldest first (missedRuns: runAll)"),
        ({**EVERY, "missedRuns": "skip"}, "2026-03-01T11:00:00Z", "SCHEDULED",
         "the slot of 2026-03-01 11:00:00 is skipped, too late (missedRuns: skip); then it keeps to its schedule"),
        # Within its grace (missedRunGrace 2h) the late slot still runs.
        ({**EVERY, "missedRuns": "skip", "missedRunGrace": 7200}, "2026-03-01T11:00:00Z", "SCHEDULED",
         "the slot of 2026-03-01 11:00:00 runs now, once for all the slots missed (missedRuns: skip)"),
        ({"at": "2026-03-01T11:00:00Z", "jitter": 0, "missedRuns": "runOnce"}, "2026-03-01T11:00:00Z", "SCHEDULED",
         "it was due at 2026-03-01 11:00:00: it runs now"),
        ({**EVERY, "missedRuns": "runOnce"}, "2026-03-01T11:59:00Z", "CRASHED", "it was due at 2026-03-01 11:59:00: it runs now"),
        ({**EVERY, "missedRuns": "runOnce"}, None, "FAILED", "status FAILED, nothing to run"),
        ({"afterSuccessOf": "export", "jitter": 0, "missedRuns": "runOnce"}, "2026-03-01T11:00:00Z", "WAITING",
         "it runs once export has succeeded since its last run (at once if it has)"),
    ],
)
def test_unsuspended_text_says_what_becomes_of_the_missed_slots(schedule, due, status, text):
    assert _unsuspended(schedule, due, status) == text


def test_unsuspending_a_dependent_says_what_it_waits_for():
    text = _unsuspended({**EVERY, "missedRuns": "runOnce"}, "2026-03-01T11:00:00Z", "WAITING", waitingOnTasks=["a", "b"])
    assert text == "status WAITING: it waits for a, b (dependsOn), then runs"


def test_held_tasks_show_what_holds_them_instead_of_a_next_run():
    task = {"nextScheduledExecution": None, "enabled": False, "suspended": True}
    assert render.next_run_text(task) == "disabled, suspended"
    assert render.next_run_text({**task, "enabled": True}) == "suspended"
    assert render.next_run_text({"nextScheduledExecution": "2026-03-01T12:05:00Z"}) == "2026-03-01 12:05:00"
    assert _unsuspended(EVERY, None, enabled=False).startswith("it is still disabled (enabled: false in its spec)")


def test_missed_runs_text_says_past_which_lateness_a_slot_is_skipped():
    assert render.missed_runs_text({"every": 3600, "missedRuns": "skip", "missedRunGrace": 900}) == "skip, past 15m late"
    assert render.missed_runs_text({"every": 3600, "missedRuns": "runOnce"}) == "runOnce"
    assert render.missed_runs_text(None) is None
