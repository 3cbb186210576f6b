"""The example tasks do what their comments say, on a bare Linux machine, inside TMPDIR only."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from scheduler.loader import load_directory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = load_directory(ROOT / "examples" / "tasks.d", known_types=())


def test_examples_cover_every_kind_of_task():
    assert EXAMPLES.ok
    specs = EXAMPLES.specs
    assert len(specs) >= 5
    assert any(s.schedule.kind == "cron" and s.schedule.timezone != "UTC" for s in specs)
    assert {s.schedule.kind for s in specs} == {"cron", "every", "at", "after"}
    assert {s.run.kind for s in specs} == {"command", "http", "python"}
    assert any(not s.persistent for s in specs) and any(s.run_on == "all" for s in specs)
    [http] = [s for s in specs if s.run.kind == "http"]
    assert http.run.http.url.startswith("http://127.0.0.1:")  # nothing outside this machine


# What each command example leaves under $TMPDIR/scheduler-examples.
OUTPUTS = {
    "disk-report": "reports/disk-*.txt",
    "heartbeat": "heartbeat.log",
    "warm-up": "work/READY",
    "new-year-note": "new-year.txt",
    "cache-sweep": "cache",
    "node-inventory": "inventory/node-a.txt",
}


def test_every_command_example_is_run_below():
    assert sorted(s.name for s in EXAMPLES.specs if s.run.kind == "command") == sorted(OUTPUTS)


@pytest.mark.parametrize("spec", [s for s in EXAMPLES.specs if s.name in OUTPUTS], ids=lambda s: s.name)
def test_command_examples_write_only_under_tmpdir(tmp_path, spec):
    """Run each command as the command executor would, with the SCHEDULER_* environment."""
    tmpdir, cwd = tmp_path / "tmp", tmp_path / "cwd"
    tmpdir.mkdir()
    cwd.mkdir()
    control = tmp_path / "control.jsonl"
    argv = ["/bin/sh", "-c", spec.run.shell] if spec.run.shell is not None else list(spec.run.command)
    env = {
        **os.environ,
        **spec.run.env,
        "TMPDIR": str(tmpdir),
        "SCHEDULER_TASK_ID": spec.name,
        "SCHEDULER_NODE_ID": "node-a",
        "SCHEDULER_CONTROL_FILE": str(control),
    }
    process = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    assert process.returncode == 0, process.stderr
    assert [p.name for p in tmpdir.iterdir()] == ["scheduler-examples"]
    assert len(list((tmpdir / "scheduler-examples").glob(OUTPUTS[spec.name]))) == 1
    assert list(cwd.iterdir()) == []
    if control.exists():  # what a command reports must be JSON lines the engine can read
        assert all(json.loads(line) for line in control.read_text().splitlines())
