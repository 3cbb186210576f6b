from datetime import datetime, timedelta, timezone

import pytest

from scheduler.builder import TaskBuilder
from scheduler.errors import SpecError
from scheduler.spec import KeepRuns, Schedule


def builder(task_type="dataSync"):
    return TaskBuilder(None, task_type)


def test_period_task_defaults():
    spec = builder().with_period(timedelta(hours=1)).build()
    assert (spec.name, spec.type) == ("data-sync", "dataSync")
    assert spec.schedule == Schedule(every=timedelta(hours=1))
    assert spec.persistent and spec.run_on == "any"
    assert (spec.retry.max_retries, spec.retry.retry_delay) == (3, timedelta(seconds=60))


@pytest.mark.parametrize(
    ("configure", "expected"),
    [
        (lambda b: b.with_period(timedelta(minutes=5)).with_fixed_delay(), Schedule(every=timedelta(minutes=5), fixed_rate=False)),
        (lambda b: b.with_fixed_delay(timedelta(minutes=5)), Schedule(every=timedelta(minutes=5), fixed_rate=False)),
        (
            lambda b: b.with_period(timedelta(minutes=5)).with_initial_delay(timedelta(seconds=30)),
            Schedule(every=timedelta(minutes=5), initial_delay=timedelta(seconds=30)),
        ),
        (lambda b: b.with_cron("0 3 * * *", "Europe/Paris"), Schedule(cron="0 3 * * *", timezone="Europe/Paris")),
        (lambda b: b.as_one_shot(), Schedule(after=timedelta(0))),
        (lambda b: b.with_initial_delay(timedelta(minutes=2)).as_one_shot(), Schedule(after=timedelta(minutes=2))),
        (
            lambda b: b.as_one_shot(at=datetime(2027, 1, 1, tzinfo=timezone.utc)),
            Schedule(at=datetime(2027, 1, 1, tzinfo=timezone.utc)),
        ),
    ],
)
def test_schedules(configure, expected):
    assert configure(builder()).build().schedule == expected


def test_every_option_reaches_the_spec():
    spec = (
        builder("localCache")
        .non_persistent()
        .run_on_all_nodes()
        .with_period(timedelta(minutes=5))
        .with_parameters({"size": 10})
        .with_max_retries(5)
        .with_retry_delay(timedelta(seconds=10))
        .with_manual_resume()
        .with_missed_runs("skip", grace=timedelta(minutes=2))
        .with_keep_runs(successful=3, failed=10)
        .build()
    )
    assert (spec.schedule.missed_runs, spec.schedule.missed_run_grace) == ("skip", timedelta(minutes=2))
    assert spec.keep_runs == KeepRuns(successful=3, failed=10)
    assert not spec.persistent and spec.run_on == "all" and spec.on_crash == "manual"
    assert dict(spec.parameters) == {"size": 10}
    assert (spec.retry.max_retries, spec.retry.retry_delay) == (5, timedelta(seconds=10))
    assert str(spec.source) == "<builder>"


@pytest.mark.parametrize(
    ("configure", "message"),
    [
        (lambda b: b.with_period(timedelta(seconds=-1)), "period must be positive"),
        (lambda b: b.with_period(timedelta(0)), "period must be positive"),
        (lambda b: b.with_period(timedelta(hours=1)).as_one_shot(), "choose one of"),
        (lambda b: b.with_period(timedelta(hours=1)).with_cron("* * * * *"), "choose one of"),
        (lambda b: b.with_period(timedelta(hours=1)).with_max_retries(-1), "max retries must be >= 0"),
        (lambda b: b.with_period(timedelta(hours=1)).with_retry_delay(timedelta(seconds=-5)), "retry delay"),
        (lambda b: b.with_period(timedelta(hours=1)).with_initial_delay(timedelta(seconds=-5)), "initial delay"),
        (lambda b: b.with_cron("not a cron"), "invalid cron"),
        (lambda b: b.with_cron("0 * * * *", "Nowhere/City"), "unknown time zone"),
        (lambda b: b.with_cron("0 * * * *").with_initial_delay(timedelta(seconds=1)), "no initial delay"),
        (lambda b: b.with_fixed_delay(), "needs a period"),
        (lambda b: b.as_one_shot(at=datetime(2027, 1, 1)), "aware datetime"),
        (lambda b: b.with_period(timedelta(hours=1)).with_dependencies("data-sync"), "cannot depend on itself"),
        (lambda b: b.with_period(timedelta(hours=1)).with_dependencies("a", "a"), "names 'a' twice"),
        (lambda b: b.with_period(timedelta(hours=1)).with_dependencies("Not A Task"), "is not a task name"),
        (lambda b: b.with_period(timedelta(hours=1)).with_missed_runs("later"), "missedRuns must be one of"),
        (lambda b: b.with_period(timedelta(hours=1)).with_missed_runs("runOnce", timedelta(minutes=5)),
         "missedRunGrace only applies with missedRuns: skip"),
        (lambda b: b.with_cron("0 * * * *").with_missed_runs("skip", timedelta(days=8)), "between 1s and 7d"),
        (lambda b: b.as_one_shot().with_missed_runs("skip", timedelta(minutes=1)), "never missed"),
        (lambda b: b.with_period(timedelta(hours=1)).with_keep_runs(), "successful and/or failed"),
        (lambda b: b.with_period(timedelta(hours=1)).with_keep_runs(failed=-1), "failed must be an integer >= 0"),
    ],
)
def test_invalid_combinations_raise_at_build_time(configure, message):
    with pytest.raises(SpecError, match=message):
        configure(builder()).build()


@pytest.mark.parametrize(("task_type", "name"), [("dataSync", "data-sync"), ("cache-refresh-Segment", "cache-refresh-segment"), ("ETL job", "etl-job")])
def test_default_name_from_type(task_type, name):
    assert TaskBuilder(None, task_type).with_period(timedelta(hours=1)).build().name == name


def test_invalid_name():
    with pytest.raises(SpecError, match="task name must match"):
        TaskBuilder(None, "x", name="Data Sync").with_period(timedelta(hours=1)).build()


def test_a_task_without_a_schedule_runs_once_at_once_as_in_apache_unomi():
    spec = builder().build()
    assert spec.schedule.one_shot and spec.schedule.after == timedelta(0)
    assert builder().with_initial_delay(timedelta(minutes=5)).build().schedule.after == timedelta(minutes=5)


def test_dependencies_given_one_by_one_or_as_one_list():
    assert builder().with_dependencies("a", "b").build().depends_on == ("a", "b")
    assert builder().with_dependencies(["a", "b"]).build().depends_on == ("a", "b")
