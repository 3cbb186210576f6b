"""How long a frozen node's command outlives its lease, through real ``scheduler run`` processes.

    python bench/frozen_node.py                 # the scenario of finding 8 of issue #11, three times
    python bench/frozen_node.py --runs 1 --freeze 10 --lease 3s --duration 12

Two nodes share one SQLite store (``leaseDuration: 3s``, ``pollInterval: 100ms``). A one-shot
command task runs for 12 s and records its own life (start, a tick every 100 ms, its end or the
SIGTERM that stopped it) with its attempt and pid (``bench/jobs/lifelog.py``). Once attempt 1
has started, the node running it gets SIGSTOP for 10 s, then SIGCONT; the peer takes the task
over once the lease has expired and runs attempt 2. The overlap is the time attempt 1 was still alive (its last record) after
attempt 2 started: the side effects of two attempts at once, which the store's fencing cannot stop.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the nodes are its Daemons

from engine import machine  # noqa: E402  (bench/engine.py: the machine line shared by the benchmarks)
from jobs import lifelog  # noqa: E402  (the command that records its own life)
from tests.support.daemon import Daemon  # noqa: E402
from tests.support.wait import wait_until  # noqa: E402


def one_run(lease: str, duration: float, freeze: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="frozen-node-") as tmp:
        work = Path(tmp)
        tasks = work / "tasks.d"
        tasks.mkdir()
        out = work / "life.log"
        config = work / "scheduler.yaml"
        config.write_text(f"leaseDuration: {lease}\npollInterval: 100ms\n")
        store = f"sqlite:///{work / 'cluster.db'}"
        nodes = {node_id: Daemon(state_dir=work / node_id, tasks_dir=tasks, node_id=node_id, store=store, config=config)
                 for node_id in ("node-a", "node-b")}
        try:
            for node in nodes.values():
                node.start(wait_ready=False)
            for node in nodes.values():
                node.wait_ready(timeout=60)
            (tasks / "long.yaml").write_text(
                "apiVersion: scheduler/v1\nkind: Task\nname: long\nschedule: {after: 0s}\n"
                f"run: {{command: {json.dumps([sys.executable, lifelog.__file__])}}}\n"
                f"parameters: {json.dumps({'log': str(out), 'seconds': duration})}\n"
            )
            first = wait_until(lambda: next((r for r in lifelog.read(out) if r.event == "start"), None), 60,
                               "attempt 1 to start")
            victim = nodes[first.node].process
            victim.send_signal(signal.SIGSTOP)
            frozen_at = time.time()
            time.sleep(freeze)  # the scenario: the node is frozen this long, whatever happens meanwhile
            victim.send_signal(signal.SIGCONT)
            wait_until(lambda: any(r.event in ("end", "term") and r.attempt >= 2 for r in lifelog.read(out)), 60,
                       "attempt 2 to end")
        finally:
            for node in nodes.values():
                if node.process is not None:
                    node.process.send_signal(signal.SIGCONT)
                node.kill()
        life = lifelog.read(out)
    attempt_1 = [r for r in life if r.attempt == 1]
    start_2 = min(r.at for r in life if r.attempt == 2 and r.event == "start")
    last_1 = max(r.at for r in attempt_1)
    return {
        "overlap": max(0.0, last_1 - start_2),
        "attempt 1 stopped after the freeze began": last_1 - frozen_at,
        "attempt 2 started after the freeze began": start_2 - frozen_at,
        "attempt 1 ended by": attempt_1[-1].event,
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
