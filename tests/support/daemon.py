"""Run real ``scheduler`` processes for acceptance tests and talk to them over HTTP."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .wait import wait_until

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range, and never handed out before in this process.

    Not a port the kernel picks (bind to port 0): those come from the ephemeral range, which outgoing
    connections use too. A node restarted on its port (the chaos soak) would then find it taken by one
    of the many connections a MongoDB driver opens, and fail to listen for as long as it lasts.
    """
    below = _first_ephemeral_port()
    while True:
        port = random.randrange(max(1024, below - 10_000), below)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use
        _handed_out.add(port)
        return port


_handed_out: set[int] = set()


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def scheduler_command(*args: str) -> list[str]:
    """The installed console script when there is one (as operators run it), else ``python -m scheduler``."""
    script = Path(sys.executable).with_name("scheduler")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "scheduler", *args]


def cli(*args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run one ``scheduler`` command to completion."""
    return subprocess.run(
        scheduler_command(*args), cwd=ROOT, env={**os.environ, **(env or {})}, input=input,
        capture_output=True, text=True, timeout=timeout,
    )


@dataclass
class Daemon:
    """A ``scheduler run`` process with its own state directory and port."""

    state_dir: Path
    tasks_dir: Path | None = None
    node_id: str = "node-1"
    store: str | None = None
    config: Path | None = None
    extra_args: tuple[str, ...] = ()
    log_level: str | None = None  # scheduler --log-level; None: the command's default (info for run)
    command_prefix: tuple[str, ...] = ()  # a program that runs the node, e.g. in its own mount namespace
    cwd: Path = ROOT  # with PYTHONPATH in env, another checkout's scheduler can run the node
    env: dict[str, str] = field(default_factory=dict)
    state_dir_from_env: bool = False  # SCHEDULER_STATE_DIR, as the README's quick start sets it, not --state-dir
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def start(self, wait_ready: bool = True) -> Daemon:
        args = ["--log-level", self.log_level] if self.log_level else []
        args += ["run", "--node-id", self.node_id, "--listen", f"127.0.0.1:{self.port}"]
        if self.state_dir_from_env:
            self.env = {**self.env, "SCHEDULER_STATE_DIR": str(self.state_dir)}
        else:
            args += ["--state-dir", str(self.state_dir)]
        if self.tasks_dir is not None:
            args += ["--tasks-dir", str(self.tasks_dir)]
        if self.store:
            args += ["--store", self.store]
        if self.config:
            args += ["--config", str(self.config)]
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = self.state_dir.parent / f"{self.state_dir.name}-{self.node_id}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.command_prefix, *scheduler_command(*args, *self.extra_args)], cwd=self.cwd,
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(self._ready, timeout=timeout, what=f"{self.node_id} ready (log: {self.log_path})")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.node_id} exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.request("GET", "/readyz", auth=False)[0] == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def request(self, method: str, path: str, *, auth: bool = True, token: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, method=method)
        if auth:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body.decode()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (status, body)
        return body

    def task(self, item_id: str) -> dict | None:
        status, body = self.request("GET", f"/cxs/tasks/{item_id}")
        return body if status == 200 else None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
