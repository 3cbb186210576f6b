"""Running the admin commands as subprocesses and reading what they print (tests of ``scheduler task-...``)."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

from .daemon import ROOT, Daemon, scheduler_command

ABSOLUTE_DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
TASK_COLUMNS = ["ID", "Type", "Status", "Next Run", "Last Run", "Failures", "Persistent"]


def client_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a client process: only the given client settings and width, none inherited.

    Always an explicit environment: the process's own C environment may hold a COLUMNS that
    ``os.environ`` does not show (GNU readline exports one when it starts)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_") and k not in ("COLUMNS", "LINES")}
    return {**base, **(env or {})}


def scheduler(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """``scheduler ARGS`` with only the given client settings (none inherited from the test's environment)."""
    return subprocess.run(
        scheduler_command(*args), cwd=ROOT, env=client_env(env), input=input, capture_output=True, text=True, timeout=60,
    )


def node_with_tasks(root: Path, files: dict[str, str]) -> Daemon:
    """A started node whose ``tasks.d`` (under ``root``, beside its state) holds ``files``: name -> text."""
    tasks = root / "tasks.d"
    tasks.mkdir()
    for name, text in files.items():
        (tasks / name).write_text(text)
    return Daemon(state_dir=root / "state", tasks_dir=tasks).start()


def admin(node: Daemon, *args: str, **options) -> subprocess.CompletedProcess:
    """An admin command against ``node`` with ``--url`` and ``--token``."""
    return scheduler(*args, "--url", node.url, "--token", node.token, **options)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == ""
    return result.stdout


def table_rows(text: str) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Header cells, rows by their first cell, and the lines after the table."""
    lines = text.rstrip("\n").splitlines()
    assert set(lines[1]) <= {"─", "┼"}, lines[1]
    end = next((i for i, line in enumerate(lines) if i > 1 and "│" not in line), len(lines))
    cells = [[c.strip() for c in line.split("│")] for line in lines[:end]]
    return cells[0], {row[0]: row for row in cells[2:]}, lines[end:]


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def show_fields(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z][A-Za-z ]*):[ ]+(\S.*)$", text, flags=re.M))
