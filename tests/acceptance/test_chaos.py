"""The chaos soak in CI: ``bench/chaos.py`` run as an operator runs it, three ``scheduler run``
nodes under SIGKILL, SIGSTOP and SIGTERM for a minute, then every invariant it checks.

Two fixed seeds on SQLite, and a shorter soak on the MongoDB server named by
``SCHEDULER_TEST_MONGO_URI``. The soak's report is printed, and shown when a case fails; the
nodes' logs, the store and the tasks' own log stay in the test's directory.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.daemon import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHAOS = ROOT / "bench" / "chaos.py"


def soak(tmp_path, *args: str) -> dict:
    """Run the soak to its end; its summary, once it found no violation."""
    summary = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, str(CHAOS), "--workdir", str(tmp_path / "soak"), "--json", str(summary), *args],
        capture_output=True, text=True, timeout=280,
    )
    print(result.stdout, result.stderr, sep="\n")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return json.loads(summary.read_text())


def assert_the_faults_reached_the_work(summary: dict, each_kind: int) -> None:
    """A soak whose faults missed the runs would pass without proving anything."""
    assert all(summary["faults"].get(kind, 0) >= each_kind for kind in ("kill", "freeze", "term")), summary["faults"]
    assert any(resume["resumedFrom"] > 0 for resume in summary["resumes"]), summary["resumes"]
    assert all(runs["started"] > 0 for runs in summary["runs"].values()), summary["runs"]


@pytest.mark.parametrize("seed", [1, 3])
def test_a_minute_of_faults_on_sqlite_breaks_no_invariant(tmp_path, seed):
    summary = soak(tmp_path, "--duration", "60", "--seed", str(seed))
    assert_the_faults_reached_the_work(summary, each_kind=2)


@pytest.mark.mongodb
def test_faults_on_mongodb_break_no_invariant(tmp_path, mongo_url):
    # The stand-in answers slowly (it scans a collection for every query): a longer lease and poll.
    summary = soak(tmp_path, "--duration", "30", "--seed", "4", "--mongo-uri", mongo_url, "--lease", "3", "--poll", "0.25")
    assert_the_faults_reached_the_work(summary, each_kind=1)
