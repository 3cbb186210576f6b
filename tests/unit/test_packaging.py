"""The packaged configuration and systemd unit agree with the code they deploy.

The unit's commands are run through the real CLI with /etc/scheduler rewritten to a
temporary copy of the packaged layout, so what systemd would run is what is tested.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from scheduler import cli
from scheduler.config import NodeConfig, load_config, parse_config
from scheduler.errors import ConfigError
from scheduler.engine import EngineConfig
from scheduler.executors.command import CommandExecutor
from scheduler.spec import parse_duration

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
PACKAGED_CONFIG = PACKAGING / "scheduler.yaml"
UNIT = PACKAGING / "systemd" / "scheduler.service"
VENV_BIN = "/opt/scheduler/venv/bin"
CONFIG_DIR = "/etc/scheduler"
# Closing the API and the store after the runs are handed back and their processes killed.
STOP_MARGIN = timedelta(seconds=10)

VALID_TASK = "apiVersion: scheduler/v1\nkind: Task\nname: {name}\nschedule: {{every: 1h}}\nrun: {{command: [\"true\"]}}\n"


def unit_settings() -> dict[str, list[str]]:
    """``Section.Key`` -> its values in file order (Exec lines may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def commands(key: str) -> list[list[str]]:
    return [shlex.split(value) for value in unit_settings()[f"Service.{key}"]]


def only(key: str) -> str:
    (value,) = unit_settings()[f"Service.{key}"]
    return value


@pytest.fixture
def etc(tmp_path) -> Path:
    """A copy of the installed /etc/scheduler: the packaged config and a valid tasks.d."""
    shutil.copy(PACKAGED_CONFIG, tmp_path / "scheduler.yaml")
    (tmp_path / "tasks.d").mkdir()
    (tmp_path / "tasks.d" / "hourly.yaml").write_text(VALID_TASK.format(name="hourly"))
    return tmp_path


def run_as_systemd(argv: list[str], etc: Path) -> int:
    """Run a unit's scheduler command line with /etc/scheduler pointing at ``etc``."""
    assert argv[0] == f"{VENV_BIN}/scheduler"
    return cli.main([arg.replace(CONFIG_DIR, str(etc)) for arg in argv[1:]])


# -- the packaged scheduler.yaml ----------------------------------------------------------


def test_packaged_config_is_the_installed_layout():
    config = load_config(PACKAGED_CONFIG, env={})
    assert config.tasks_dir == Path("/etc/scheduler/tasks.d")
    assert config.state_dir == Path("/var/lib/scheduler")
    assert config.admin_token_path == Path("/var/lib/scheduler/admin.token")
    assert config.store_url == "sqlite:///var/lib/scheduler/scheduler.db"
    assert config.host_port == ("127.0.0.1", 8181)


def test_commented_settings_are_valid_and_show_the_defaults():
    text = PACKAGED_CONFIG.read_text()
    # "#key: value" and its nested "#  key: value" lines are commented settings; "# text" is prose.
    enabled_text = re.sub(r"(?m)^#(?=[A-Za-z]|\s{2,}[A-Za-z]+:)", "", text)
    assert enabled_text.count("\n") == text.count("\n") and enabled_text != text
    packaged = parse_config(yaml.safe_load(text), PACKAGING)
    enabled = parse_config(yaml.safe_load(enabled_text), PACKAGING)
    # store and nodeId are examples; every other commented value must be the built-in default.
    assert enabled.store.startswith("mongodb://") and enabled.node_id == "scheduler-1"
    assert replace(enabled, store=packaged.store, node_id=packaged.node_id) == packaged


# -- the systemd unit ---------------------------------------------------------------------


def test_unit_runs_the_daemon_on_the_packaged_config():
    (argv,) = commands("ExecStart")
    assert argv[0] == f"{VENV_BIN}/scheduler"
    args = cli.build_parser().parse_args(argv[1:])
    assert f"{args.handler.__module__}.{args.handler.__name__}" == "scheduler.commands.run.run"
    assert args.config == Path(CONFIG_DIR) / "scheduler.yaml"


def test_unit_user_and_state_directory_match_the_config():
    config = load_config(PACKAGED_CONFIG, env={})
    assert (only("User"), only("Group")) == ("scheduler", "scheduler")
    assert Path("/var/lib") / only("StateDirectory") == config.state_dir
    assert only("StateDirectoryMode") == "0750"
    assert Path(only("WorkingDirectory")) == config.state_dir


def test_start_validates_the_config_but_not_the_task_files(etc):
    (check,) = commands("ExecStartPre")
    assert run_as_systemd(check, etc) == 0
    (etc / "tasks.d" / "broken.yaml").write_text("apiVersion: scheduler/v1\nkind: Task\nname: broken\n")
    assert run_as_systemd(check, etc) == 0  # a bad task file does not keep the node down
    (etc / "scheduler.yaml").write_text("leaseDuration: soon\n")
    assert run_as_systemd(check, etc) == 1


def test_reload_validates_tasks_d_then_sends_sighup(etc, capsys):
    *checks, signal = commands("ExecReload")
    assert signal == ["/bin/kill", "-HUP", "$MAINPID"]
    (check,) = checks
    config = load_config(PACKAGED_CONFIG, env={})
    assert Path(check[-1]) == config.tasks_dir
    assert run_as_systemd(check, etc) == 0
    (etc / "tasks.d" / "copy.yaml").write_text(VALID_TASK.format(name="hourly"))
    capsys.readouterr()
    # Two files declaring one name: only the whole-directory check sees it; the reload fails.
    assert run_as_systemd(check, etc) == 1
    assert "copy.yaml" in capsys.readouterr().out


def test_stop_gives_runs_their_grace_then_kills_the_rest():
    engine_grace = EngineConfig().shutdown_grace
    assert NodeConfig().shutdown_grace == engine_grace
    command_grace = timedelta(seconds=CommandExecutor().grace_period)
    timeout = parse_duration(only("TimeoutStopSec"), "/TimeoutStopSec")
    assert timeout >= engine_grace + command_grace + STOP_MARGIN
    # SIGTERM to the daemon alone: tasks must not get it before the engine's grace.
    assert (only("KillMode"), only("KillSignal")) == ("mixed", "SIGTERM")
    assert only("Restart") == "on-failure"


def test_node_timeout_is_at_least_the_lease(tmp_path):
    assert parse_config({"leaseDuration": "20s", "nodeTimeout": "2m"}, tmp_path).node_timeout == timedelta(minutes=2)
    with pytest.raises(ConfigError, match="nodeTimeout must be at least leaseDuration"):
        parse_config({"leaseDuration": "90s", "nodeTimeout": "60s"}, tmp_path)
