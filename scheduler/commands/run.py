"""``scheduler run``: the node daemon (API, reconciler, engine) until SIGTERM.

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 bad configuration or flags,
3 the store cannot be opened, 4 the API cannot listen (port in use...).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..config import NodeConfig, load_config
from ..errors import ConfigError, StoreError
from ..redact import redact_text, redact_url

log = logging.getLogger(__name__)

EXIT_CONFIG, EXIT_STORE, EXIT_LISTEN = 2, 3, 4


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("run", help="run this node: API, tasks.d reconciler and engine", description=__doc__)
    parser.add_argument("--config", type=Path, help="scheduler.yaml (default: $SCHEDULER_CONFIG)")
    parser.add_argument("--tasks-dir", type=Path, help="directory of task files to watch")
    parser.add_argument("--store", help="sqlite:///abs/path.db or mongodb://... (default: SQLite in the state dir)")
    parser.add_argument("--node-id", help="this node's id (default: the host name)")
    parser.add_argument("--listen", help="API address host:port (default 127.0.0.1:8181)")
    parser.add_argument("--state-dir", type=Path, help="where the SQLite store and the admin token live")
    parser.add_argument("--no-executor", action="store_true", help="serve the API and reconcile, never run tasks")
    parser.set_defaults(handler=run, log_level_default="info")


def node_config(args: argparse.Namespace) -> NodeConfig:
    """The config file and environment, then the flags on top."""
    config = load_config(args.config)
    overrides: dict[str, Any] = {}
    if args.tasks_dir is not None:
        overrides["tasks_dir"] = Path(os.path.abspath(args.tasks_dir))  # symlinks followed at each reload
    if args.state_dir is not None:
        overrides["state_dir"] = args.state_dir.resolve()
    for flag, field in (("store", "store"), ("node_id", "node_id"), ("listen", "listen")):
        if getattr(args, flag):
            overrides[field] = getattr(args, flag)
    if args.no_executor:
        overrides["executor_node"] = False
    config = dataclasses.replace(config, **overrides)
    if config.tasks_dir is not None and not config.tasks_dir.is_dir():
        raise ConfigError(f"tasks directory {config.tasks_dir} does not exist or is not a directory")
    try:
        config.host_port
    except ValueError:
        raise ConfigError(f"--listen must be host:port, got {config.listen!r}") from None
    return config


def run(args: argparse.Namespace) -> int:
    try:
        config = node_config(args)
    except ConfigError as exc:
        print(f"scheduler run: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    from ..node import ListenError, Node  # the daemon's imports (aiohttp...) only when it runs

    # `python: module:function` targets import from the node's environment: installed
    # packages, PYTHONPATH and, as with `python -m`, the directory the node starts in.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())

    try:
        asyncio.run(Node(config).serve())
    except StoreError as exc:
        print(f"scheduler run: store {redact_url(config.store_url)}: {redact_text(exc.message)}", file=sys.stderr)
        return EXIT_STORE
    except ListenError as exc:
        print(f"scheduler run: {exc.message}", file=sys.stderr)
        return EXIT_LISTEN
    except OSError as exc:
        print(f"scheduler run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0
