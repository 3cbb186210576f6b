from datetime import datetime, timedelta, timezone

import pytest

from scheduler.errors import SpecError
from scheduler.spec import RetryPolicy, TaskSpec, parse_duration


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
    "schedule": {"cron": "0 * * * *", "timezone": "Europe/Paris", "jitter": "30s", "missedRuns": "skip"},
    "run": {"command": ["/bin/echo", "hi"], "env": {"A": "1"}, "workingDir": "/tmp", "timeout": "10m"},
    "parameters": {"targetSystem": "CRM", "nested": {"list": [1, 2]}},
    "retry": {"maxRetries": 5, "retryDelay": "2m", "backoff": "exponential", "maxDelay": "1h"},
    "concurrency": "replace",
    "persistent": False,
    "runOn": "all",
    "nodes": ["a", "b"],
    "onCrash": "manual",
}


def test_round_trip_through_canonical_document():
    spec = TaskSpec.from_dict(FULL)
    assert TaskSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["run"]["timeout"] == 600
    assert spec.spec_hash() == TaskSpec.from_dict(spec.to_dict()).spec_hash()


def test_defaults_follow_unomi():
    spec = TaskSpec.from_dict({"name": "t", "schedule": {"every": "1h"}})
    assert spec.type == "t"
    assert spec.retry == RetryPolicy(max_retries=3, retry_delay=timedelta(seconds=60), backoff="fixed")
    assert (spec.persistent, spec.run_on, spec.concurrency, spec.on_crash) == (True, "any", "forbid", "resume")
    assert spec.schedule.fixed_rate is True and spec.schedule.missed_runs == "runOnce"


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
