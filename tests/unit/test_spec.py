from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from scheduler.errors import SpecError
from scheduler.spec import KeepRuns, RetryPolicy, TaskSpec, parse_duration, utc_iso


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("250ms", timedelta(milliseconds=250)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        (45, timedelta(seconds=45)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m", "1h 30m", "-5s", "5x", "1m1h", True, None, -1, float("inf"), "99999999999d", 10**20])
def test_parse_duration_rejects(text):
    with pytest.raises(SpecError):
        parse_duration(text, "/x")


FULL = {
    "name": "data-sync",
    "type": "dataSync",
    "description": "Sync CRM records",
    "labels": {"team": "crm"},
    "schedule": {"cron": "0 * * * *", "timezone": "Europe/Paris", "jitter": "30s", "missedRuns": "skip",
                 "missedRunGrace": "5m"},
    "run": {"command": ["/bin/echo", "hi"], "env": {"A": "1"}, "workingDir": "/tmp", "timeout": "10m"},
    "parameters": {"targetSystem": "CRM", "nested": {"list": [1, 2]}},
    "retry": {"maxRetries": 5, "retryDelay": "2m", "backoff": "exponential", "maxDelay": "1h"},
    "concurrency": "replace",
    "persistent": False,
    "runOn": "all",
    "nodes": ["a", "b"],
    "onCrash": "manual",
    "keepRuns": {"successful": 3, "failed": 10},
}


def test_round_trip_through_canonical_document():
    spec = TaskSpec.from_dict(FULL)
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["run"]["timeout"] == 600
    assert spec.to_dict()["schedule"]["missedRunGrace"] == 300 and spec.to_dict()["keepRuns"] == {"successful": 3, "failed": 10}
    assert spec.schedule.missed_run_grace == timedelta(minutes=5) and spec.keep_runs == KeepRuns(3, 10)
    assert spec.spec_hash() == TaskSpec.from_dict(spec.to_dict()).spec_hash()


def test_defaults_follow_unomi():
    spec = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}})
    assert spec.type == "t"
    assert spec.retry == RetryPolicy(max_retries=3, retry_delay=timedelta(seconds=60), backoff="fixed")
    assert (spec.persistent, spec.run_on, spec.concurrency, spec.on_crash) == (True, "any", "forbid", "resume")
    assert spec.schedule.fixed_rate is True and spec.schedule.missed_runs == "runOnce"
    assert spec.schedule.missed_run_grace is None and spec.keep_runs is None


def test_settings_left_out_stay_out_of_the_canonical_document():
    """A spec written before missedRunGrace and keepRuns existed keeps its hash: nodes write nothing new."""
    doc = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h", "missedRuns": "skip"}}).to_dict()
    assert "missedRunGrace" not in doc["schedule"] and "keepRuns" not in doc
    only_failed = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}, "keepRuns": {"failed": 0}})
    assert only_failed.keep_runs == KeepRuns(successful=None, failed=0)
    assert only_failed.to_dict()["keepRuns"] == {"failed": 0}


def test_spec_is_immutable():
    spec = TaskSpec.from_dict(FULL)
    with pytest.raises(TypeError):
        spec.parameters["targetSystem"] = "x"
    with pytest.raises(AttributeError):
        spec.name = "other"


def test_at_is_normalised_to_utc():
    spec = TaskSpec.from_dict({"name": "t", "schedule": {"at": "2026-12-01T04:00:00+01:00"}})
    assert spec.schedule.at == datetime(2026, 12, 1, 3, tzinfo=timezone.utc)
    assert spec.to_dict()["schedule"]["at"] == "2026-12-01T03:00:00Z"


@pytest.mark.parametrize(
    ("doc", "pointer", "fragment"),
    [
        ({"name": "Bad", "schedule": {"every": "1h"}}, "/name", "name must match"),
        ({"name": "t"}, "", "needs a schedule"),
        ({"name": "t", "schedule": {}}, "/schedule", "exactly one of"),
        ({"name": "t", "schedule": {"every": "1h", "cron": "* * * * *"}}, "/schedule", "exactly one of"),
        ({"name": "t", "schedule": {"cron": "61 * * * *"}}, "/schedule/cron", "invalid cron"),
        ({"name": "t", "schedule": {"cron": "* * * * * *"}}, "/schedule/cron", "invalid cron"),
        ({"name": "t", "schedule": {"cron": "0 0 30 2 *"}}, "/schedule/cron", "never matches"),
        ({"name": "t", "schedule": {"cron": "0 * * * *", "timezone": "Mars/Base"}}, "/schedule/timezone", "unknown time zone"),
        ({"name": "t", "schedule": {"at": "2026-12-01T03:00:00"}}, "/schedule/at", "no time zone"),
        ({"name": "t", "schedule": {"every": "0s"}}, "/schedule/every", "positive"),
        ({"name": "t", "schedule": {"at": "2026-12-01T03:00:00Z", "fixedRate": True}}, "/schedule/fixedRate", "only applies"),
        ({"name": "t", "schedule": {"every": "1h"}, "run": {}}, "/run", "exactly one of"),
        ({"name": "t", "schedule": {"every": "1h"}, "run": {"python": "nocolon"}}, "/run/python", "module:function"),
        ({"name": "t", "schedule": {"every": "1h"}, "run": {"http": {"url": "ftp://x"}}}, "/run/http/url", "http://"),
        ({"name": "t", "schedule": {"every": "1h"}, "run": {"python": "m:f", "env": {}}}, "/run/env", "only applies"),
        ({"name": "t", "schedule": {"every": "1h"}, "retry": {"maxRetries": -1}}, "/retry/maxRetries", ">= 0"),
        ({"name": "t", "schedule": {"every": "1h"}, "onCrash": "retry"}, "/onCrash", "must be one of"),
        ({"name": "t", "schedule": {"every": "1h", "missedRunGrace": "5m"}}, "/schedule/missedRunGrace",
         "only applies with missedRuns: skip (missedRuns is runOnce"),
        ({"name": "t", "schedule": {"at": "2026-12-01T03:00:00Z", "missedRuns": "skip", "missedRunGrace": "5m"}},
         "/schedule/missedRunGrace", "a one-shot is never missed"),
        ({"name": "t", "schedule": {"afterSuccessOf": "a", "missedRuns": "skip", "missedRunGrace": "5m"}},
         "/schedule/missedRunGrace", "a chained run is never missed"),
        ({"name": "t", "schedule": {"every": "1h", "missedRuns": "skip", "missedRunGrace": "500ms"}},
         "/schedule/missedRunGrace", "between 1s and 7d, got '500ms'"),
        ({"name": "t", "schedule": {"every": "1h", "missedRuns": "skip", "missedRunGrace": "8d"}},
         "/schedule/missedRunGrace", "between 1s and 7d"),
        ({"name": "t", "schedule": {"every": "1h", "missedRuns": "skip", "missedRunGrace": "soon"}},
         "/schedule/missedRunGrace", "expected a duration"),
        ({"name": "t", "schedule": {"every": "1h"}, "keepRuns": {}}, "/keepRuns", "successful and/or failed"),
        ({"name": "t", "schedule": {"every": "1h"}, "keepRuns": {"failed": -1}}, "/keepRuns/failed", ">= 0"),
        ({"name": "t", "schedule": {"every": "1h"}, "keepRuns": {"failed": True}}, "/keepRuns/failed", ">= 0"),
        ({"name": "t", "schedule": {"every": "1h"}, "keepRuns": {"success": 1}}, "/keepRuns/success",
         "allowed: successful, failed"),
    ],
)
def test_semantic_errors_carry_a_pointer(doc, pointer, fragment):
    with pytest.raises(SpecError) as caught:
        TaskSpec.from_dict(doc)
    assert caught.value.pointer == pointer
    assert fragment in caught.value.message


def test_a_bad_url_is_quoted_without_its_secrets():
    # Specs built in a program (the builder) are checked here, not by the schema; the message may be shown.
    doc = {"name": "t", "schedule": {"every": "1h"}, "run": {"http": {"url": "ftp://user:pw@files.example.com/x?key=K3Y"}}}
    with pytest.raises(SpecError) as caught:
        TaskSpec.from_dict(doc)
    assert caught.value.message == "http.url must be an http:// or https:// URL, got 'ftp://user:***@files.example.com/x?key=***'"


@pytest.mark.parametrize(
    ("backoff", "failures", "expected"),
    [("fixed", 1, 60), ("fixed", 5, 60), ("exponential", 1, 60), ("exponential", 3, 240), ("exponential", 10, 3600)],
)
def test_retry_delay(backoff, failures, expected):
    policy = RetryPolicy(retry_delay=timedelta(seconds=60), backoff=backoff, max_delay=timedelta(hours=1))
    assert policy.delay(failures) == timedelta(seconds=expected)


@pytest.mark.parametrize("moment, text", [
    (datetime(2026, 12, 1, 18, 0, 0, 123456, tzinfo=timezone.utc), "2026-12-01T18:00:00.123Z"),
    (datetime(2026, 12, 1, 18, 0, 0, tzinfo=timezone.utc), "2026-12-01T18:00:00Z"),
    (datetime(2026, 12, 1, 18, 0, 0, 500, tzinfo=timezone.utc), "2026-12-01T18:00:00.000Z"),  # below the ms
    (datetime(2026, 12, 1, 19, 30, 5, 7000, tzinfo=ZoneInfo("Europe/Paris")), "2026-12-01T18:30:05.007Z"),
    (datetime(2026, 6, 1, 0, 0, tzinfo=timezone(timedelta(hours=-7))), "2026-06-01T07:00:00Z"),
])
def test_times_are_written_in_utc_with_a_z_to_the_millisecond_when_there_is_one(moment, text):
    assert utc_iso(moment) == text
