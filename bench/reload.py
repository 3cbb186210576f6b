"""Reload benchmarks against DESIGN.md's targets, through a real ``scheduler run`` process.

    python bench/reload.py                       # all of them (under a minute on an idle 2-core machine)
    python bench/reload.py visibility coldstart  # or some: visibility | coldstart
    python bench/reload.py --files 10000 --changes 100 --big-changes 20

- visibility: rewrite one task file of a 100-file tasks.d (every third save editor-style: a temporary
              file renamed over it) and time until ``GET /cxs/tasks/<id>`` over HTTP shows the new
              description (target p99 <= 300 ms)
- coldstart:  10,000 task files, one task each; process start to ``/readyz`` = 200 with an empty store
              (target < 10 s), then a warm restart on the same store and files (it must write nothing),
              then the visibility of one change inside that 10,000-file directory

Every node runs with the daemon's defaults (executor on, SQLite in its state directory); no task is due
during the benchmark, so the numbers are those of the reload path alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import machine  # noqa: E402  (bench/engine.py: the machine line shared by the benchmarks)

ROOT = Path(__file__).resolve().parents[1]
POLL_INTERVAL = 0.005
CHANGE_TIMEOUT = 10.0
READY_TIMEOUT = 120.0
TIMEZONES = ("Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC")


def task_yaml(index: int, description: str) -> str:
    """A realistic task file: an hourly task or a daily cron in a time zone, running a command.

    Nothing falls due while the benchmark runs: periodic tasks start in an hour, and
    each cron fires twelve hours from now in its zone.
    """
    name = f"sync-{index:05d}"
    if index % 2:
        zone = TIMEZONES[index % len(TIMEZONES)]
        hour = (datetime.now(ZoneInfo(zone)).hour + 12) % 24
        schedule = f'  cron: "{index % 60} {hour} * * *"\n  timezone: {zone}\n'
    else:
        schedule = "  every: 1h\n  initialDelay: 1h\n"
    return (
        "apiVersion: scheduler/v1\n"
        "kind: Task\n"
        f"name: {name}\n"
        "type: dataSync\n"
        f"description: {description}\n"
        "labels: {team: crm, tier: batch}\n"
        "schedule:\n"
        f"{schedule}"
        "  jitter: 30s\n"
        "run:\n"
        f'  command: ["/usr/local/bin/sync", "--target", "CRM", "--shard", "{index}"]\n'
        "  env: {LOG_LEVEL: info}\n"
        "  timeout: 10m\n"
        f"parameters: {{targetSystem: CRM, batchSize: 1000, shard: {index}}}\n"
        "retry: {maxRetries: 3, retryDelay: 60s, backoff: exponential, maxDelay: 1h}\n"
    )


def task_path(tasks_dir: Path, index: int) -> Path:
    return tasks_dir / f"sync-{index:05d}.yaml"


def write_tasks(tasks_dir: Path, count: int) -> None:
    tasks_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        task_path(tasks_dir, index).write_text(task_yaml(index, "Sync CRM records"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Node:
    """One ``scheduler run`` process with its own port, state directory and tasks directory."""

    state_dir: Path
    tasks_dir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    _conn: http.client.HTTPConnection | None = None

    def start(self) -> float:
        """Start the process; return the seconds from the spawn to ``/readyz`` answering 200."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "scheduler", "run", "--node-id", "bench-node",
            "--state-dir", str(self.state_dir), "--tasks-dir", str(self.tasks_dir),
            "--listen", f"127.0.0.1:{self.port}",
        ]
        with open(self.state_dir / "node.log", "ab") as log:
            started = time.perf_counter()
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = started + READY_TIMEOUT
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"scheduler run exited with {self.process.returncode}; see {self.state_dir}/node.log")
            try:
                if self.request("/readyz", auth=False)[0] == 200:
                    return time.perf_counter() - started
            except OSError:
                self._conn = None  # not listening yet, or the connection dropped: a new one next time
            time.sleep(0.01)
        raise SystemExit(f"scheduler run not ready within {READY_TIMEOUT:.0f} s; see {self.state_dir}/node.log")

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def request(self, path: str, *, auth: bool = True) -> tuple[int, dict]:
        """GET ``path`` on one kept-alive connection (as a client polling the API would)."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Authorization": f"Bearer {self.token}"} if auth else {}
        self._conn.request("GET", path, headers=headers)
        response = self._conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else {}

    @property
    def token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def get(self, path: str) -> dict:
        status, body = self.request(path)
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {body}")
        return body


def editor_write(path: Path, text: str) -> None:
    """What editors and Ansible do: write a temporary file beside the target, rename it over."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def measure_changes(node: Node, file_count: int, changes: int) -> list[float]:
    """Seconds from each write to the new description being served by ``GET /cxs/tasks/<id>``."""
    samples = []
    for change in range(changes):
        index = (change * 7919) % file_count  # spread over the directory
        description = f"Sync CRM records, revision {change}"
        path, item_id = task_path(node.tasks_dir, index), f"sync-{index:05d}"
        text = task_yaml(index, description)
        started = time.perf_counter()
        if change % 3 == 2:
            editor_write(path, text)
        else:
            path.write_text(text)
        deadline = started + CHANGE_TIMEOUT
        while node.get(f"/cxs/tasks/{item_id}").get("description") != description:
            if time.perf_counter() > deadline:
                raise SystemExit(f"change {change} of {path} not visible within {CHANGE_TIMEOUT:.0f} s")
            time.sleep(POLL_INTERVAL)
        samples.append(time.perf_counter() - started)
    return samples


def row(label: str, text: str) -> str:
    return f"{label + ':':<40} {text}"


def distribution(samples: list[float]) -> str:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    return (
        f"p50 {statistics.median(ordered) * 1000:6.1f} ms, p95 {pick(0.95):6.1f} ms, "
        f"p99 {pick(0.99):6.1f} ms, max {ordered[-1] * 1000:6.1f} ms ({len(ordered)} changes)"
    )


def visibility(files: int = 100, changes: int = 100) -> str:
    with tempfile.TemporaryDirectory(prefix="reload-bench-") as tmp:
        node = Node(Path(tmp, "state"), Path(tmp, "tasks.d"))
        write_tasks(node.tasks_dir, files)
        node.start()
        try:
            samples = measure_changes(node, files, changes)
        finally:
            node.stop()
    return row(f"change visible via API, {files:,} files", f"{distribution(samples)}  (target p99 <= 300 ms)")


def last_reload(node: Node) -> dict:
    return node.get("/cxs/config")["lastReload"]


def coldstart(files: int = 10_000, big_changes: int = 20) -> str:
    lines = []
    with tempfile.TemporaryDirectory(prefix="reload-bench-") as tmp:
        tasks_dir = Path(tmp, "tasks.d")
        write_tasks(tasks_dir, files)
        node = Node(Path(tmp, "state"), tasks_dir)
        try:
            cold = node.start()
            total = node.get("/cxs/tasks?limit=1")["totalSize"]
            report = last_reload(node)
            if total != files or report["created"] != files:
                raise SystemExit(f"cold start: {total} tasks stored, {report['created']} created; expected {files}")
            stored = f"{cold:6.2f} s to ready, {total:,} tasks stored  (target < 10 s)"
            lines.append(row(f"cold start, {files:,} files", stored))
            node.stop()
            node = Node(node.state_dir, tasks_dir)
            warm = node.start()
            report = last_reload(node)
            written = report["created"] + report["updated"] + report["removed"]
            total = node.get("/cxs/tasks?limit=1")["totalSize"]
            if written or total != files:
                raise SystemExit(f"warm restart wrote {written} change(s), holds {total} tasks; expected 0, {files}")
            counts = f"created {report['created']}, updated {report['updated']}, removed {report['removed']}"
            lines.append(row(f"warm restart, {files:,} files", f"{warm:6.2f} s to ready, nothing written ({counts})"))
            if big_changes:
                samples = measure_changes(node, files, big_changes)
                lines.append(row(f"change visible via API, {files:,} files", distribution(samples)))
        finally:
            node.stop()
    return "\n".join(lines)


BENCHMARKS = {"visibility": visibility, "coldstart": coldstart}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", metavar="BENCHMARK", help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--files", type=int, default=10_000, help="task files for the cold start (default 10,000)")
    parser.add_argument("--changes", type=int, default=100, help="changes timed in the 100-file directory")
    parser.add_argument("--big-changes", type=int, default=20, help="changes timed in the cold-start directory")
    args = parser.parse_args()
    unknown = set(args.which) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    print(machine())
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start")
    for name in args.which or BENCHMARKS:
        if name == "visibility":
            print(visibility(changes=args.changes), flush=True)
        else:
            print(coldstart(files=args.files, big_changes=args.big_changes), flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
