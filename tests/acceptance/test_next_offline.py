"""``scheduler next FILE``: the next fire times of a file's tasks, offline, as an operator checks them."""

from __future__ import annotations

import json

import pytest

from tests.support.admin_cli import scheduler, table_rows

pytestmark = pytest.mark.timeout(60)


def task(name: str, schedule: str) -> str:
    return f"apiVersion: scheduler/v1\nkind: Task\nname: {name}\nschedule: {schedule}\nrun: {{command: [backup]}}\n"


NIGHTLY = task("nightly", '{cron: "30 2 * * *", timezone: Europe/Paris}')
HOURLY = task("hourly", '{cron: "0 * * * *", timezone: Europe/Paris}')
TICKER = task("ticker", "{every: 90m, initialDelay: 10m}")


def listed(result) -> tuple[str, dict[str, list[str]]]:
    """The title line and the rows of one task's table."""
    assert result.returncode == 0 and result.stderr == "", (result.returncode, result.stderr)
    title, text = result.stdout.split("\n", 1)
    header, rows, rest = table_rows(text)
    assert rest == []
    return title, {number: row[1:] for number, row in rows.items()} | {"#": header[1:]}


def test_a_cron_across_the_change_to_summer_time(tmp_path):
    (tmp_path / "nightly.yaml").write_text(NIGHTLY)
    title, rows = listed(scheduler("next", str(tmp_path / "nightly.yaml"), "-n", "3", "--from", "2027-03-27T12:00:00Z"))
    assert title == "nightly: cron 30 2 * * * (Europe/Paris)"
    assert rows == {
        "#": ["Europe/Paris", "UTC", "Note"],
        "1": ["2027-03-28 03:00:00 CEST", "2027-03-28 01:00:00",
              "02:30 does not exist that day (clocks go forward): runs at 03:00"],
        "2": ["2027-03-29 02:30:00 CEST", "2027-03-29 00:30:00", ""],
        "3": ["2027-03-30 02:30:00 CEST", "2027-03-30 00:30:00", ""],
    }


def test_an_hourly_cron_across_the_change_to_winter_time(tmp_path):
    (tmp_path / "hourly.yaml").write_text(HOURLY)
    _, rows = listed(scheduler("next", str(tmp_path / "hourly.yaml"), "-n", "3", "--from", "2027-10-30T23:30:00Z"))
    assert rows == {
        "#": ["Europe/Paris", "UTC", "Note"],
        "1": ["2027-10-31 02:00:00 CEST", "2027-10-31 00:00:00",
              "02:00 happens twice that day (clocks go back): runs once, the first time"],
        "2": ["2027-10-31 03:00:00 CET", "2027-10-31 02:00:00", ""],  # two real hours later
        "3": ["2027-10-31 04:00:00 CET", "2027-10-31 03:00:00", ""],
    }


def test_a_directory_lists_each_task_and_name_picks_one(tmp_path):
    (tmp_path / "a.yaml").write_text(NIGHTLY + "---\n" + TICKER)
    (tmp_path / "b.yaml").write_text(HOURLY)
    everything = scheduler("next", str(tmp_path), "-n", "2", "--from", "2027-01-01T00:00:00Z")
    assert everything.returncode == 0
    blocks = everything.stdout.rstrip("\n").split("\n\n")
    assert [block.split(":", 1)[0] for block in blocks] == ["nightly", "ticker", "hourly"]
    assert blocks[1].splitlines()[0] == "ticker: every 1h30m (fixed rate), first after 10m"

    _, rows = listed(scheduler("next", str(tmp_path / "a.yaml"), "--name", "ticker", "-n", "3", "--from", "2027-01-01T00:00:00Z"))
    assert rows == {"#": ["UTC"], "1": ["2027-01-01 00:10:00"], "2": ["2027-01-01 01:40:00"], "3": ["2027-01-01 03:10:00"]}


def test_json_gives_the_apis_shape_for_each_task(tmp_path):
    result = scheduler("next", "-", "-n", "1", "--from", "2027-03-27T12:00:00Z", "-o", "json", input=NIGHTLY)
    assert result.returncode == 0
    assert json.loads(result.stdout) == [{
        "itemId": "nightly",
        "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Paris", "jitter": 0, "missedRuns": "runOnce"},
        "timezone": "Europe/Paris",
        "list": [{"slot": "2027-03-28T01:00:00Z", "fireTime": "2027-03-28T01:00:00Z", "local": "2027-03-28T03:00:00+02:00",
                  "note": "02:30 does not exist that day (clocks go forward): runs at 03:00"}],
        "reason": None,
    }]


def test_an_invalid_file_is_refused_with_its_problems(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(task("bad", "{cron: '61 * * * *'}"))
    result = scheduler("next", str(path))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [
        f"{path}:4:18: schedule.cron: invalid cron expression '61 * * * *': minute 61 is out of range 0-59",
        f"scheduler next: {path} is invalid (scheduler validate says the same)",
    ]


def test_an_unknown_name_or_path_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(NIGHTLY)
    unknown = scheduler("next", str(tmp_path / "a.yaml"), "--name", "nope")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == f"scheduler next: no task named nope in {tmp_path / 'a.yaml'} (its tasks: nightly)\n"
    missing = scheduler("next", str(tmp_path / "missing.yaml"))
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == f"scheduler next: {tmp_path / 'missing.yaml'}: no such file or directory\n"
