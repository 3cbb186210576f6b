"""``scheduler completion bash|zsh``: scripts a shell accepts, that know every subcommand, and that complete."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scheduler.cli import build_parser
from tests.support.admin_cli import client_env, ok, scheduler
from tests.support.daemon import scheduler_command

pytestmark = pytest.mark.timeout(120)


def subcommands() -> list[str]:
    """The subcommands as the parser has them: a new one is checked without touching this test."""
    [group] = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(group.choices)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_script_mentions_every_subcommand_and_the_shell_accepts_it(shell, tmp_path):
    script = ok(scheduler("completion", shell))
    missing = [name for name in subcommands() if name not in script]
    assert missing == [] and "completion" in subcommands()
    path = tmp_path / f"scheduler.{shell}"
    path.write_text(script)
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed: the script is generated but not checked by {shell} -n")
    checked = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert (checked.returncode, checked.stderr) == (0, "")


# Completes the words of a command line as bash does on Tab, with the script sourced from the command.
COMPLETE = """
source <("$@" completion bash) || exit 9
complete_words() {
  COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
  COMPREPLY=(); _shtab_scheduler; printf '%s\\n' "${COMPREPLY[@]}"; echo --
}
complete_words scheduler task-l
complete_words scheduler task-list -o ''
complete_words scheduler node-list -o ''
complete_words scheduler task-config disk-report --cl
complete_words scheduler completion ''
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_subcommands_options_and_choices():
    result = subprocess.run(
        ["bash", "-c", COMPLETE, "complete", *scheduler_command()], env=client_env(), capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answers = [block.split() for block in result.stdout.split("--\n")[:-1]]
    assert answers == [
        ["task-list", "task-logs"],
        ["table", "wide", "name", "json", "yaml"],
        ["table", "name", "json", "yaml"],
        ["--clear"],
        ["bash", "zsh"],
    ]


def test_an_unknown_shell_is_a_usage_error():
    result = scheduler("completion", "fish")
    assert result.returncode == 2 and "invalid choice: 'fish'" in result.stderr and result.stdout == ""
