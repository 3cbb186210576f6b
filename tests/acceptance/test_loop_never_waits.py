"""A real ``scheduler run`` keeps answering while user code blocks: the event loop never waits on it."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# Its import-time code blocks until the test creates "release" (a slow connection, a sleep at import).
SLOW_IMPORT = """\
import os, pathlib, time

here = pathlib.Path(os.environ["JOBS_DIR"])
(here / "importing").touch()
deadline = time.monotonic() + 60
while not (here / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.01)


def job():
    (here / "ran").touch()
"""

TASK = """\
apiVersion: scheduler/v1
kind: Task
name: slow-import
schedule: {after: 0s}
run: {python: "slow_import_jobs:job"}
"""


@pytest.fixture
def node(tmp_path):
    tasks = tmp_path / "tasks.d"
    tasks.mkdir()
    (tmp_path / "slow_import_jobs.py").write_text(SLOW_IMPORT)
    (tasks / "slow-import.yaml").write_text(TASK)
    daemon = Daemon(state_dir=tmp_path / "state", tasks_dir=tasks,
                    env={"PYTHONPATH": str(tmp_path), "JOBS_DIR": str(tmp_path)})
    yield daemon.start()
    (tmp_path / "release").touch()  # never leave the import thread waiting
    daemon.kill()


def answers(url: str, timeout: float) -> float:
    """Seconds ``GET url`` took; raises when it did not answer within ``timeout``."""
    began = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200
    return time.monotonic() - began


def test_the_node_answers_while_a_python_target_blocks_at_import(tmp_path: Path, node: Daemon):
    wait_until(lambda: (tmp_path / "importing").exists(), timeout=30, what="the target's import to begin")

    # The import waits for a file nobody creates yet: a loop that waited on it could answer nothing.
    latencies = [answers(f"{node.url}/readyz", timeout=5) for _ in range(20)]
    assert node.task("slow-import")["status"] == "RUNNING"
    assert not (tmp_path / "ran").exists()
    print(f"/readyz while the import blocks: max {max(latencies) * 1000:.1f} ms over {len(latencies)} requests")

    (tmp_path / "release").touch()
    wait_until(lambda: node.task("slow-import")["status"] == "COMPLETED", timeout=30, what="the run to complete")
    assert (tmp_path / "ran").exists()
