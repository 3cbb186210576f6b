from datetime import datetime, timezone

import pytest

from scheduler.executors import RunContext
from scheduler.spec import TaskSpec

SLOT = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)


def make_spec(run=None, *, name="job", type=None, parameters=None):
    doc = {"name": name, "schedule": {"every": "1h"}, "parameters": parameters or {}}
    if run is not None:
        doc["run"] = run
    if type is not None:
        doc["type"] = type
    return TaskSpec.from_dict(doc)


@pytest.fixture
def make_ctx():
    """A factory of run contexts whose progress reports are collected in ``ctx.reports``.

    ``on_report(ctx, progress)`` lets a test react to a report (e.g. cancel the run
    once the process says it is ready) without sleeping.
    """

    def factory(run=None, *, spec=None, checkpoint=None, on_report=None, lease_deadline=None, **spec_options):
        import asyncio

        reports = []

        async def sink(progress):
            reports.append(progress)
            if on_report is not None:
                on_report(ctx, progress)

        ctx = RunContext(
            task_id="job",
            run_id="job:1772368200000:2",
            node_id="node-a",
            fence=7,
            scheduled_for=SLOT,
            attempt=2,
            spec=spec or make_spec(run, **spec_options),
            checkpoint_data=checkpoint,
            progress_sink=sink,
            loop=asyncio.get_running_loop(),
            lease_deadline=lease_deadline,
        )
        ctx.reports = reports
        return ctx

    return factory
