"""Task files as operators write them, for tests that put files in a tasks.d."""

from __future__ import annotations

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
