"""``python examples/embedded.py`` runs as the README says, with the package importable."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.daemon import ROOT

pytestmark = [pytest.mark.slow]


def test_the_embedding_example_runs_its_tasks_and_exits(tmp_path):
    # As after `pip install -e .`: the package importable, the script run from elsewhere.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "embedded.py")], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"data-sync: (SCHEDULED|RUNNING) after [2-9] run\(s\)", lines[0]), result.stdout
    assert lines[1] == "export: COMPLETED after 1 run(s), last step exporting {'batch': 3, 'of': 3}"
    assert re.fullmatch(r"sync_data ran [2-9] times, at \d\d:\d\d:\d\d(, \d\d:\d\d:\d\d)+", lines[2]), result.stdout
    assert result.stderr == ""


def test_the_readme_shows_the_example_as_it_is():
    """The README's "Embedding" block is the example from its first import on: what runs above runs there."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Embedding\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    example = (ROOT / "examples" / "embedded.py").read_text()
    assert block == example[example.index("import asyncio"):]
