"""A pipeline through the engine: export -> transform -> report, on an injected clock."""

from __future__ import annotations

from datetime import timedelta

from scheduler.model import Status

from .conftest import register

HOUR = timedelta(hours=1)


def pipeline_engine(make_engine, store, runs: list[str], failing: set[str] = frozenset()):
    def job(ctx) -> None:
        runs.append(ctx.task_id)
        if ctx.task_id in failing:
            raise RuntimeError(f"{ctx.task_id} broke")

    return make_engine(store, "n", job=job)


async def declare_pipeline(store, clock) -> None:
    # Declared dependents first: each waits for what it needs, whatever the order of declaration.
    await register(store, clock, {"name": "report", "type": "job", "dependsOn": ["transform"],
                                  "schedule": {"every": "1h"}})
    await register(store, clock, {"name": "transform", "type": "job", "dependsOn": ["export"],
                                  "schedule": {"every": "1h"}, "retry": {"maxRetries": 0}})
    await register(store, clock, {"name": "export", "type": "job", "schedule": {"cron": "30 * * * *"}})
    clock.set((await store.get_task("export")).next_scheduled_execution)  # 08:30, the export's first slot


async def test_a_pipeline_runs_in_order_once_per_success_of_its_head(store, clock, make_engine):
    await declare_pipeline(store, clock)
    runs: list[str] = []
    engine = pipeline_engine(make_engine, store, runs)

    for _ in range(3):
        await engine.run_until_idle()
        clock.advance(HOUR)
    await engine.run_until_idle()

    assert runs == ["export", "transform", "report"] * 4
    for name in ("export", "transform", "report"):
        assert (await store.get_task(name)).success_count == 4


async def test_a_failed_dependency_keeps_its_dependents_waiting_visibly_until_it_succeeds(store, clock, make_engine):
    await declare_pipeline(store, clock)
    runs: list[str] = []
    await pipeline_engine(make_engine, store, runs, failing={"transform"}).run_until_idle()

    assert runs == ["export", "transform"]
    report = await store.get_task("report")
    assert (report.status, report.waiting_on) == (Status.WAITING, ("transform",))

    clock.advance(HOUR)  # export succeeds again, transform fails again: report still waits
    await pipeline_engine(make_engine, store, runs, failing={"transform"}).run_until_idle()
    assert runs[2:] == ["export", "transform"] and (await store.get_task("report")).status is Status.WAITING

    clock.advance(HOUR)
    await pipeline_engine(make_engine, store, runs).run_until_idle()
    assert runs[4:] == ["export", "transform", "report"]


async def test_a_chain_runs_once_after_each_success_of_its_parent_and_knows_which(store, clock, make_engine):
    await register(store, clock, {"name": "load", "type": "job", "schedule": {"afterSuccessOf": "export"}})
    await register(store, clock, {"name": "export", "type": "job", "schedule": {"every": "1h"},
                                  "parameters": {"day": "2031-01-06"}, "retry": {"maxRetries": 0}})
    triggers, failing = [], set()

    def job(ctx) -> None:
        if ctx.task_id == "load":
            triggers.append(dict(ctx.trigger))
        elif ctx.task_id in failing:
            raise RuntimeError("export broke")

    engine = make_engine(store, "n", job=job)
    await engine.run_until_idle()
    await engine.run_until_idle()  # nothing new: one success, one run of the chain
    export_run = (await store.list_runs("export")).items[0]
    assert triggers == [{"taskId": "export", "runId": export_run.run_id, "finishedAt": iso(export_run.finished_at),
                         "parameters": {"day": "2031-01-06"}}]

    clock.advance(HOUR)
    failing.add("export")
    await engine.run_until_idle()  # a failed export: the chain waits
    assert len(triggers) == 1 and (await store.get_task("load")).waiting_on == ("export",)

    clock.advance(HOUR)
    failing.clear()
    await engine.run_until_idle()
    assert len(triggers) == 2 and triggers[1]["runId"] == (await store.list_runs("export")).items[0].run_id


def iso(moment) -> str:
    from scheduler.spec import utc_iso

    return utc_iso(moment)
