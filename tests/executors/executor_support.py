"""Bounded waits on real conditions for the executor tests."""

import asyncio
import os
import time


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie is dead (this machine's init does not reap orphans)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def eventually(condition, timeout=10.0, interval=0.02):
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s: {condition}"
        await asyncio.sleep(interval)


def read_pid(path) -> int:
    return int(path.read_text().strip())


def pid_written(path) -> bool:
    return path.exists() and path.read_text().endswith("\n")


def spy_on_starts(monkeypatch) -> list:
    """The ``preexec_fn`` of every command started from now on (``subprocess.Popen``), by argv."""
    import subprocess

    real = subprocess.Popen
    seen = []

    def popen(args, *more, **kwargs):
        seen.append((list(args), kwargs.get("preexec_fn")))
        return real(args, *more, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    return seen
