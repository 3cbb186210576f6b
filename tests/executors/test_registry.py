import pytest

import executor_jobs
from scheduler.errors import ExecutorError
from scheduler.executors import CallableExecutor, CommandExecutor, HttpExecutor, PythonExecutor, resolve_executor
from scheduler.executors import registry
from scheduler.model import Outcome

from conftest import make_spec


@pytest.mark.parametrize(
    ("run", "kind"),
    [
        ({"command": ["/bin/true"]}, CommandExecutor),
        ({"shell": "true"}, CommandExecutor),
        ({"http": {"url": "http://127.0.0.1:1/"}}, HttpExecutor),
        ({"python": "executor_jobs:sync_job"}, PythonExecutor),
    ],
)
def test_a_run_section_picks_a_builtin_executor(run, kind):
    # A run section wins over an executor registered for the type.
    assert isinstance(resolve_executor(make_spec(run, type="dataSync"), {"dataSync": executor_jobs.sync_job}), kind)


def test_the_engine_may_pass_its_own_builtins():
    mine = CommandExecutor(grace_period=1)
    spec = make_spec({"shell": "true"})
    assert resolve_executor(spec, {}, builtins={"command": mine, "http": HttpExecutor(), "python": PythonExecutor()}) is mine


def test_a_registered_executor_is_used_as_it_is():
    executor = executor_jobs.AsyncExecutor()
    assert resolve_executor(make_spec(type="dataSync"), {"dataSync": executor}) is executor


async def test_a_registered_plain_function_is_wrapped(make_ctx):
    executor_jobs.calls.clear()
    executor = resolve_executor(make_spec(type="cleanCache"), {"cleanCache": executor_jobs.no_argument_job})
    assert isinstance(executor, CallableExecutor)
    result = await executor.execute(make_ctx(type="cleanCache"))
    assert result.outcome is Outcome.SUCCESS and executor_jobs.calls == ["no-arg"]


def test_an_unknown_type_is_an_executor_error():
    with pytest.raises(ExecutorError) as error:
        resolve_executor(make_spec(type="nobodyKnows"), {"other": executor_jobs.sync_job})
    assert error.value.message == (
        "no executor for task type 'nobodyKnows': add a run: section or register an executor for this type"
    )


@pytest.fixture
def installed_executors(tmp_path, monkeypatch):
    """A package installed on sys.path that declares executors in the scheduler.executors group."""
    dist_info = tmp_path / "report_executors-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: report-executors\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[scheduler.executors]\n"
        "syncReport = executor_jobs:SyncExecutor\n"
        "asyncReport = executor_jobs:AsyncExecutor\n"
        "plainReport = executor_jobs:sync_job\n"
        "brokenReport = broken_jobs:job\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._entry_points.cache_clear()
    yield
    registry._entry_points.cache_clear()
    registry._load.cache_clear()


@pytest.mark.parametrize(
    ("task_type", "output"),
    [("syncReport", ""), ("asyncReport", "from AsyncExecutor"), ("plainReport", "")],
)
async def test_entry_points_provide_executors_by_task_type(installed_executors, make_ctx, task_type, output):
    executor = resolve_executor(make_spec(type=task_type), {})
    result = await executor.execute(make_ctx(type=task_type))
    assert (result.outcome, result.output) == (Outcome.SUCCESS, output)


def test_an_entry_point_that_fails_to_load_is_an_executor_error(installed_executors):
    with pytest.raises(ExecutorError) as error:
        resolve_executor(make_spec(type="brokenReport"), {})
    assert error.value.message == (
        "cannot load executor 'broken_jobs:job' for task type 'brokenReport': RuntimeError: broken at import"
    )
