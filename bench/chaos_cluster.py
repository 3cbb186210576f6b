"""The nodes of the chaos soak: ``scheduler run`` processes on one store, restarted after faults,
their memory sampled; and, once they have all stopped, a node that only reads the store.

The nodes are the acceptance tests' ``Daemon``s (``tests/support/daemon.py``). They import the
``scheduler`` package of ``tree`` (this checkout by default, or an older one to compare with)
and the task bodies of ``bench/jobs``, both through PYTHONPATH.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.daemon import Daemon

JOBS = Path(__file__).resolve().parent / "jobs"
STOP_LIMIT = 60.0  # seconds a node may take to stop on SIGTERM (shutdownGrace, then the kill grace)


@dataclass(frozen=True)
class Settings:
    lease: str = "2s"  # leaseDuration: a freeze longer than this lets a peer take the node's runs over
    poll: str = "150ms"  # pollInterval
    shutdown_grace: str = "2s"  # shorter than the long runs: a clean stop hands some of them back

    def config(self) -> str:
        return f"leaseDuration: {self.lease}\npollInterval: {self.poll}\nshutdownGrace: {self.shutdown_grace}\n"


class Cluster:
    """``size`` nodes named node-1..node-N, each with its own state directory under ``work``."""

    def __init__(self, work: Path, size: int, store: str, settings: Settings, tree: Path) -> None:
        self.work, self.store, self.tree = work, store, tree
        self.tasks_dir = work / "tasks.d"
        self.config = work / "scheduler.yaml"
        self.env = {"PYTHONPATH": os.pathsep.join([str(tree), str(JOBS)])}
        self.settings = settings
        self.nodes = [self._daemon(f"node-{index}") for index in range(1, size + 1)]
        self.memory = MemorySampler()
        self.observer: Daemon | None = None  # the node that reads the store once the others have stopped

    def _daemon(self, node_id: str, *extra_args: str) -> Daemon:
        return Daemon(state_dir=self.work / node_id, tasks_dir=self.tasks_dir, node_id=node_id, store=self.store,
                      config=self.config, extra_args=extra_args, cwd=self.tree, env=self.env)

    def scheduler_package(self) -> str:
        """Where the nodes import ``scheduler`` from, as they will see it."""
        return subprocess.run(
            [sys.executable, "-c", "import scheduler; print(scheduler.__file__)"], cwd=self.tree,
            env={**os.environ, **self.env}, capture_output=True, text=True, check=True,
        ).stdout.strip()

    def start(self, task_files: dict[str, str]) -> None:
        """Write the configuration and the task files (name: text), start every node and wait until all are ready."""
        self.tasks_dir.mkdir(parents=True)
        for name, text in task_files.items():
            (self.tasks_dir / name).write_text(text)
        self.config.write_text(self.settings.config())
        for node in self.nodes:  # all at once: a start is mostly Python importing, on both cores
            node.start(wait_ready=False)
        for node in self.nodes:
            node.wait_ready(timeout=60)  # three nodes starting on two busy cores
            self.memory.watch(node)
        self.memory.start()

    def restart(self, node: Daemon) -> str:
        """Start the node again and wait until it is ready: '' once it is, else what went wrong."""
        try:
            node.start()
        except AssertionError as exc:  # it exited, or was not ready in time
            return f"{node.node_id} did not come back: {str(exc).splitlines()[0]}"
        self.memory.watch(node)
        return ""

    def up(self) -> list[Daemon]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def runner_of(self, task: str) -> Daemon | None:
        """The node whose lease the task holds now, if it runs and that node is up."""
        lease = (self.detail(task) or {}).get("lease")
        return next((node for node in self.up() if lease and node.node_id == lease["owner"]), None)

    def detail(self, task: str) -> dict[str, Any] | None:
        """The task as an up node's API shows it, or None when none answers."""
        for node in self.up():
            try:
                return node.task(task)
            except OSError:
                continue
        return None

    def wait_exit(self, node: Daemon, limit: float = STOP_LIMIT) -> int | None:
        """The node's exit code once it has exited; None if it was still running after ``limit``
        seconds (it is then killed)."""
        try:
            return node.process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            node.kill()
            return None

    def stop(self) -> dict[str, tuple[int | None, float]]:
        """SIGTERM to every node at once; each one's exit code (None: it did not stop) and time to stop.

        Meanwhile the observer starts: a node that only reads (``--no-executor``: it claims and
        recovers nothing), for ``read_store``."""
        began = time.monotonic()
        running = self.up()
        for node in running:
            node.process.terminate()
        self.observer = self._daemon("observer", "--no-executor").start(wait_ready=False)
        stopped = {}
        for node in running:
            code = self.wait_exit(node, max(0.0, began + STOP_LIMIT - time.monotonic()))
            stopped[node.node_id] = (code, time.monotonic() - began)
        self.memory.stop()
        return stopped

    def kill(self) -> None:
        """Leave nothing behind, whatever happened (a frozen node is thawed to die)."""
        for node in [*self.up(), *([self.observer] if self.observer else [])]:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)
            node.kill()
        self.memory.stop()

    def read_store(self) -> tuple[list[dict], dict[str, list[dict]]]:
        """Every task in detail and every run record, once every node has stopped, through the
        observer's API; the observer is stopped after."""
        observer = self.observer
        assert observer is not None, "stop() starts the observer"
        try:
            observer.wait_ready(timeout=60)
            listed = observer.get("/cxs/tasks?limit=1000")["list"]
            tasks = [observer.get(f"/cxs/tasks/{task['itemId']}") for task in listed]
            runs = {task["itemId"]: _all_runs(observer, task["itemId"]) for task in listed}
        finally:
            observer.stop()
        return tasks, runs


def _all_runs(node: Daemon, task: str) -> list[dict]:
    runs: list[dict] = []
    while True:
        page = node.get(f"/cxs/tasks/{task}/runs?limit=1000&offset={len(runs)}")["list"]
        runs += page
        if len(page) < 1000:
            return runs


class MemorySampler:
    """VmRSS of each node process once a second, from /proc, by process (node id and pid)."""

    INTERVAL = 1.0

    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[float, int]]] = {}  # "node-1 pid 42" -> (seconds since its start, kB)
        self._watched: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss sampler", daemon=True)

    def watch(self, node: Daemon) -> None:
        name = f"{node.node_id} pid {node.process.pid}"
        with self._lock:
            self._watched[name] = (node.process.pid, time.monotonic())
            self.samples[name] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            with self._lock:
                for name, (pid, began) in list(self._watched.items()):
                    kb = rss_kb(pid)
                    if kb is None:
                        del self._watched[name]
                    else:
                        self.samples[name].append((time.monotonic() - began, kb))


def rss_kb(pid: int) -> int | None:
    """The resident set of a live process in kB; None once it has exited (a zombie has none)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None
