"""Task files as operators write them, for tests that put files in a tasks.d."""

from __future__ import annotations

import os
import textwrap


def task_yaml(name: str, *, every: str = "1h", shell: str = "true", extra: str = "", **fields: str) -> str:
    """A periodic shell task; ``fields`` become top-level keys, ``extra`` is appended as written."""
    lines = "".join(f"{key}: {value}\n" for key, value in fields.items())
    return textwrap.dedent(
        f"""\
        apiVersion: scheduler/v1
        kind: Task
        name: {name}
        schedule:
          every: {every}
        run:
          shell: "{shell}"
        """
    ) + lines + extra


def counting_reads(monkeypatch) -> list[str]:
    """The names of the task files the loader reads from now on, in order."""
    from scheduler import loader

    read = []
    real = loader.read_regular_file

    def read_regular_file(path, limit):
        read.append(os.path.basename(path))
        return real(path, limit)

    monkeypatch.setattr(loader, "read_regular_file", read_regular_file)
    return read
