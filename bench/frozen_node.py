"""How long a frozen node's command outlives its lease, through real ``scheduler run`` processes.

    python bench/frozen_node.py                 # the scenario of finding 8 of issue #11, three times
    python bench/frozen_node.py --runs 1 --freeze 10 --lease 3s --duration 12

Two nodes share one SQLite store (``leaseDuration: 3s``, ``pollInterval: 100ms``). A one-shot
command task runs for 12 s and records its own life (start, a tick every 100 ms, its end or the
SIGTERM that stopped it) with its attempt and pid. Once attempt 1 has started, the node running it
gets SIGSTOP for 10 s, then SIGCONT; the peer takes the task over once the lease has expired and
runs attempt 2. The overlap is the time attempt 1 was still alive (its last record) after
attempt 2 started: the side effects of two attempts at once, which the store's fencing cannot stop.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import machine  # noqa: E402  (bench/engine.py: the machine line shared by the benchmarks)

ROOT = Path(__file__).resolve().parents[1]

RECORDER = textwrap.dedent(
    """\
    import os, signal, sys, time

    out, seconds = sys.argv[1], float(sys.argv[2])

    def record(event):
        with open(out, "a") as file:
            file.write(f"{event} {os.environ['SCHEDULER_ATTEMPT']} {os.getpid()} "
                       f"{os.environ['SCHEDULER_NODE_ID']} {time.time():.3f}\\n")

    def stopped(signum, frame):
        record("term")
        sys.exit(143)

    signal.signal(signal.SIGTERM, stopped)
    record("start")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.1)
        record("tick")
    record("end")
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not reached within {timeout:.0f} s")
        time.sleep(0.02)
    return value


def records(path: Path) -> list[tuple[str, int, int, str, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        event, attempt, pid, node, at = line.split()
        rows.append((event, int(attempt), int(pid), node, float(at)))
    return rows


def start_node(work: Path, node_id: str, config: Path, store: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    state = work / node_id
    state.mkdir()
    command = [
        sys.executable, "-m", "scheduler", "run", "--node-id", node_id, "--config", str(config),
        "--store", store, "--state-dir", str(state), "--tasks-dir", str(work / "tasks.d"),
        "--listen", f"127.0.0.1:{port}",
    ]
    with open(state / "node.log", "ab") as log:
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        if process.poll() is not None:
            raise SystemExit(f"{node_id} exited with {process.returncode}; see {state}/node.log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                return response.status == 200
        except (OSError, urllib.error.HTTPError):
            return False

    wait(ready, 60, f"{node_id} ready")
    return process, port


def one_run(lease: str, duration: float, freeze: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="frozen-node-") as tmp:
        work = Path(tmp)
        (work / "tasks.d").mkdir()
        (work / "recorder.py").write_text(RECORDER)
        out = work / "life.log"
        config = work / "scheduler.yaml"
        config.write_text(f"leaseDuration: {lease}\npollInterval: 100ms\n")
        store = f"sqlite:///{work / 'cluster.db'}"
        nodes = {node_id: start_node(work, node_id, config, store) for node_id in ("node-a", "node-b")}
        try:
            (work / "tasks.d" / "long.yaml").write_text(
                "apiVersion: scheduler/v1\nkind: Task\nname: long\nschedule: {after: 0s}\n"
                f"run: {{command: {json.dumps([sys.executable, str(work / 'recorder.py'), str(out), str(duration)])}}}\n"
            )
            first = wait(lambda: next((r for r in records(out) if r[0] == "start"), None), 60, "attempt 1 to start")
            victim = nodes[first[3]][0]
            victim.send_signal(signal.SIGSTOP)
            frozen_at = time.time()
            time.sleep(freeze)  # the scenario: the node is frozen this long, whatever happens meanwhile
            victim.send_signal(signal.SIGCONT)
            wait(lambda: any(r[0] in ("end", "term") and r[1] >= 2 for r in records(out)), 60, "attempt 2 to end")
        finally:
            for process, _ in nodes.values():
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()
        life = records(out)
    attempt_1 = [r for r in life if r[1] == 1]
    start_2 = min(r[4] for r in life if r[1] == 2 and r[0] == "start")
    last_1 = max(r[4] for r in attempt_1)
    return {
        "overlap": max(0.0, last_1 - start_2),
        "attempt 1 stopped after the freeze began": last_1 - frozen_at,
        "attempt 2 started after the freeze began": start_2 - frozen_at,
        "attempt 1 ended by": attempt_1[-1][0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lease", default="3s", help="leaseDuration (default 3s)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds the command runs (default 12)")
    parser.add_argument("--freeze", type=float, default=10.0, help="seconds the node is stopped (default 10)")
    args = parser.parse_args()
    print(machine(), f"load average {os.getloadavg()[0]:.1f}")
    print(f"leaseDuration {args.lease}, a {args.duration:g} s command, its node frozen {args.freeze:g} s")
    for run in range(1, args.runs + 1):
        result = one_run(args.lease, args.duration, args.freeze)
        details = ", ".join(f"{k} {v:.2f} s" if isinstance(v, float) else f"{k} {v}" for k, v in result.items())
        print(f"run {run}: {details}")


if __name__ == "__main__":
    main()
