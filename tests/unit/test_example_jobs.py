import threading
from types import SimpleNamespace

import pytest

from examples.jobs import count_primes


class Context(SimpleNamespace):
    """The part of the executor context a Python job sees, recording what the job reports."""

    def __init__(self, parameters, checkpoint_data=None, cancel_after_checkpoints=None):
        super().__init__(
            parameters=parameters,
            checkpoint_data=checkpoint_data or {},
            cancelled=threading.Event(),
            checkpoints=[],
            steps=[],
        )
        self.cancel_after = cancel_after_checkpoints

    def checkpoint(self, data):
        self.checkpoints.append(dict(data))
        if self.cancel_after is not None and len(self.checkpoints) >= self.cancel_after:
            self.cancelled.set()

    def update_step(self, step, details):
        self.steps.append((step, dict(details)))


def parameters(tmp_path):
    return {"limit": 100_000, "chunk": 10_000, "outDir": str(tmp_path)}


def test_counts_primes_and_writes_the_result(tmp_path):
    context = Context(parameters(tmp_path))
    assert count_primes(context) == 9592  # primes below 100,000
    assert (tmp_path / "primes.txt").read_text() == "9592 primes up to 100000\n"
    assert len(context.checkpoints) == 10 and context.steps[-1] == ("done", {"found": 9592, "limit": 100_000})


@pytest.mark.parametrize("crash_after", [1, 4, 9])
def test_a_resumed_run_finishes_the_same_count(tmp_path, crash_after):
    first = Context(parameters(tmp_path), cancel_after_checkpoints=crash_after)
    count_primes(first)
    assert len(first.checkpoints) == crash_after and not (tmp_path / "primes.txt").exists()
    resumed = Context(parameters(tmp_path), checkpoint_data=first.checkpoints[-1])
    assert count_primes(resumed) == 9592
    assert len(resumed.checkpoints) == 10 - crash_after  # no chunk is counted twice
