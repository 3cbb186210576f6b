"""Node configuration: ``scheduler.yaml``, then environment overrides, then command-line flags.

Precedence, lowest first: built-in defaults, the config file (``--config`` or
``SCHEDULER_CONFIG``), ``SCHEDULER_STORE`` / ``SCHEDULER_NODE_ID`` /
``SCHEDULER_STATE_DIR``, flags of ``scheduler run``. The file is validated against ``config.schema.json``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import yaml

from . import schema
from .errors import ConfigError, SpecError
from .model import Retention
from .spec import parse_duration

DEFAULT_LISTEN = "127.0.0.1:8181"
ADMIN_TOKEN_FILE = "admin.token"


def default_state_dir() -> Path:
    """systemd's ``$STATE_DIRECTORY``, else /var/lib/scheduler for root, else the XDG state directory."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/scheduler")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "scheduler"


@dataclass(frozen=True)
class NodeConfig:
    node_id: str = field(default_factory=socket.gethostname)
    executor_node: bool = True
    tasks_dir: Path | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    store: str = ""  # empty: SQLite in state_dir
    lease_duration: timedelta = timedelta(seconds=30)
    poll_interval: timedelta = timedelta(seconds=1)
    max_concurrent_runs: int = 64
    shutdown_grace: timedelta = timedelta(seconds=10)
    node_timeout: timedelta = timedelta(seconds=60)  # a node whose heartbeat is older stops counting
    listen: str = DEFAULT_LISTEN
    tokens: tuple[Mapping[str, Any], ...] = ()
    cors_origins: tuple[str, ...] = ()
    metrics_public: bool = True
    retention: Retention = Retention()
    keep_history: int = 20

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite://{(self.state_dir / 'scheduler.db').resolve()}"

    @property
    def admin_token_path(self) -> Path:
        return self.state_dir / ADMIN_TOKEN_FILE

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


def _duration(doc: Mapping[str, Any], key: str, pointer: str) -> timedelta | None:
    if key not in doc:
        return None
    try:
        return parse_duration(doc[key], pointer)
    except SpecError as exc:
        raise ConfigError(f"{pointer}: {exc.message}") from None


def parse_config(doc: Mapping[str, Any], base_dir: Path, source: str = "config") -> NodeConfig:
    """Build a NodeConfig from a config document; relative paths are relative to ``base_dir``."""
    errors = sorted(schema.validator("config").iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        lines = [f"{source}: /{'/'.join(str(p) for p in e.path)}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    options: dict[str, Any] = {}
    simple = {"nodeId": "node_id", "executorNode": "executor_node", "store": "store", "maxConcurrentRuns": "max_concurrent_runs"}
    for key, name in simple.items():
        if key in doc:
            options[name] = doc[key]
    for key, name in (("tasksDir", "tasks_dir"), ("stateDir", "state_dir")):
        if key in doc:
            # Absolute but not resolved: a tasks directory reached through a symlink follows the link
            # when it is switched to another release (the reconciler resolves it at every reload).
            options[name] = Path(os.path.abspath(base_dir / doc[key]))
    durations = (
        ("leaseDuration", "lease_duration"), ("pollInterval", "poll_interval"), ("shutdownGrace", "shutdown_grace"),
        ("nodeTimeout", "node_timeout"),
    )
    for key, name in durations:
        value = _duration(doc, key, f"/{key}")
        if value is not None:
            options[name] = value
    api = doc.get("api", {})
    if "listen" in api:
        options["listen"] = api["listen"]
    options["tokens"] = tuple(_resolve_token(t, base_dir) for t in api.get("auth", {}).get("tokens", ()))
    options["cors_origins"] = tuple(api.get("cors", {}).get("allowOrigins", ()))
    if "metrics" in api:
        options["metrics_public"] = not api["metrics"].get("auth", False)
    purge = doc.get("purge", {})
    ttls = {k: _duration(purge, k, f"/purge/{k}") for k in ("completed", "failed", "cancelled", "runs")}
    options["retention"] = Retention(**{k: v for k, v in ttls.items() if v is not None})
    if "keep" in doc.get("history", {}):
        options["keep_history"] = doc["history"]["keep"]
    config = NodeConfig(**options)
    if config.lease_duration < timedelta(seconds=1):
        raise ConfigError(f"{source}: /leaseDuration must be at least 1s")
    if config.node_timeout < config.lease_duration:
        # A heartbeat comes every leaseDuration / 3: a shorter timeout would let a live node stop counting.
        raise ConfigError(f"{source}: /nodeTimeout must be at least leaseDuration (three heartbeats)")
    return config


def _resolve_token(token: Mapping[str, Any], base_dir: Path) -> Mapping[str, Any]:
    if "tokenFile" in token:
        return {**token, "tokenFile": str((base_dir / token["tokenFile"]).resolve())}
    return token


def load_config(path: Path | None, env: Mapping[str, str] = os.environ) -> NodeConfig:
    """The configuration of this node: file (if any) plus environment overrides."""
    path = path or (Path(env["SCHEDULER_CONFIG"]) if env.get("SCHEDULER_CONFIG") else None)
    config = NodeConfig()
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        config = parse_config(doc, path.parent, str(path))
    if env.get("SCHEDULER_STORE"):
        config = replace(config, store=env["SCHEDULER_STORE"])
    if env.get("SCHEDULER_NODE_ID"):
        config = replace(config, node_id=env["SCHEDULER_NODE_ID"])
    if env.get("SCHEDULER_STATE_DIR"):
        config = replace(config, state_dir=Path(env["SCHEDULER_STATE_DIR"]).resolve())
    return config
